/*
 * Security checks end to end, the real binary on loopback: the TLS
 * defaults of a forward listener and of a TLS relay listener (versions,
 * cipher suites, server preference, compression, renegotiation), the
 * privilege drop when the tests run as root, and no private key material
 * in the log or in the output of --check, whatever fails.
 *
 * Clients are OpenSSL (told to offer what a careless or old client would)
 * and, for suites OpenSSL 3 cannot even offer any more (EXPORT, RC4,
 * 3DES), a ClientHello written byte by byte.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static struct backend be;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
}

#define WEB_SERIES(name) name "{listener=\"web\",mode=\"forward\"}"
#define DEV_SERIES(name) name "{listener=\"devices-tls\",mode=\"relay\"}"

/*
 * A forward listener [web] (TLS to an echo backend) and a TLS relay
 * listener [devices-tls], both with the TLS defaults, and the admin page.
 */
static void
start_tls_listeners(void)
{
	char conf[2048];

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n"
	    "[devices-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\n",
	    CERT("server.pem"), CERT("server.key"), be.port,
	    CERT("server.pem"), CERT("server.key"));
	ferry_start(&fp, conf);
}

/* Waits (10 s at most) for a series to read `want`. */
static void
expect_metric(const char *series, double want)
{
	metric_expect(&fp, series, want, 10, 10);
}

/* ---- what a client offers ---- */

struct offer {
	const char *what;
	int min, max;			/* protocol versions; 0: OpenSSL's */
	const char *ciphers;		/* TLS 1.2 list; NULL: OpenSSL's */
	int seclevel;			/* 0 lets OpenSSL offer old things */
};

struct outcome {
	bool ok;
	char version[16];
	char cipher[64];
	bool compressed;
};

/*
 * One TLS client on `port` offering `o`; for a relay port the handshake
 * is all there is, for a forward port a message comes back through the
 * echo backend too.
 */
static struct outcome
try_offer(int port, const struct offer *o, bool echo)
{
	struct outcome r = { 0 };
	struct peer p;
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_tls(&p, fd, "localhost", NULL, NULL);
	SSL_set_security_level(p.ssl, o->seclevel);
	if (o->min)
		cr_assert_eq(SSL_set_min_proto_version(p.ssl, o->min), 1);
	if (o->max)
		cr_assert_eq(SSL_set_max_proto_version(p.ssl, o->max), 1);
	if (o->ciphers)
		cr_assert_eq(SSL_set_cipher_list(p.ssl, o->ciphers), 1,
		    "%s: OpenSSL here cannot offer %s", o->what, o->ciphers);
	r.ok = SSL_connect(p.ssl) == 1;
	ERR_clear_error();
	if (r.ok) {
		snprintf(r.version, sizeof(r.version), "%s",
		    SSL_get_version(p.ssl));
		snprintf(r.cipher, sizeof(r.cipher), "%s",
		    SSL_get_cipher_name(p.ssl));
		r.compressed = SSL_get_current_compression(p.ssl) != NULL;
		if (echo) {
			char buf[8];
			cr_assert_eq(peer_write(&p, "secure", 6), 6);
			cr_assert_eq(peer_read_exact(&p, buf, 6), 6, "%s: no "
			    "echo", o->what);
			cr_assert_eq(memcmp(buf, "secure", 6), 0);
		}
	}
	peer_close(&p);
	return r;
}

/* Offers a careless or old client might make: none may be accepted. */
static const struct offer refused[] = {
	{ "TLS 1.0", TLS1_VERSION, TLS1_VERSION, NULL, 0 },
	{ "TLS 1.1", TLS1_1_VERSION, TLS1_1_VERSION, NULL, 0 },
	{ "SSL 3.0 to TLS 1.1", 0, TLS1_1_VERSION, "ALL:@SECLEVEL=0", 0 },
	{ "CBC with SHA-1", 0, TLS1_2_VERSION,
	    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA", 1 },
	{ "CBC with SHA-2", 0, TLS1_2_VERSION,
	    "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384", 1 },
	{ "RSA key exchange", 0, TLS1_2_VERSION,
	    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA", 1 },
	{ "static DH and anonymous", 0, TLS1_2_VERSION,
	    "ADH-AES128-GCM-SHA256:AECDH-AES128-SHA:@SECLEVEL=0", 0 },
	{ "NULL encryption", 0, TLS1_2_VERSION,
	    "ECDHE-ECDSA-NULL-SHA:NULL-SHA256:@SECLEVEL=0", 0 },
};

/* ---- a ClientHello by hand, for suites OpenSSL no longer has ---- */

static uint8_t *
put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

/*
 * A ClientHello for `version` (0x0301..0x0303) offering `suites`, with
 * the extensions an ECDHE-ECDSA suite needs (groups, point formats,
 * signature algorithms, SNI), so that a refusal is about the suites or
 * the version and nothing else.  Returns its length.
 */
static size_t
client_hello(uint8_t *out, unsigned version, const uint16_t *suites,
    size_t n)
{
	static const uint8_t ext[] = {
		0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d,
		0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
		0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04,
		0x04, 0x01,
		0x00, 0x00, 0x00, 0x0e, 0x00, 0x0c, 0x00, 0x00, 0x09,
		'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't',
	};
	uint8_t *p = out + 9;
	size_t body, len;

	p = put16(p, version);
	for (int i = 0; i < 32; i++)
		*p++ = (uint8_t)(i * 7 + 1);
	*p++ = 0;				/* no session id */
	p = put16(p, (unsigned)(2 * n));
	for (size_t i = 0; i < n; i++)
		p = put16(p, suites[i]);
	*p++ = 1;				/* compression: null only */
	*p++ = 0;
	p = put16(p, sizeof(ext));
	memcpy(p, ext, sizeof(ext));
	p += sizeof(ext);
	len = (size_t)(p - out);
	body = len - 9;
	out[0] = 0x16;				/* handshake record */
	put16(out + 1, 0x0301);
	put16(out + 3, (unsigned)(len - 5));
	out[5] = 0x01;				/* ClientHello */
	out[6] = (uint8_t)(body >> 16);
	out[7] = (uint8_t)(body >> 8);
	out[8] = (uint8_t)body;
	return len;
}

/*
 * Sends a hand-made ClientHello and returns the server's answer: the
 * record type (0x16 handshake: a ServerHello; 0x15: an alert, whose
 * description goes to *alert), or -1 if it closed without a word.
 */
static int
raw_hello(int port, unsigned version, const uint16_t *suites, size_t n,
    int *alert)
{
	uint8_t msg[512], hdr[7];
	size_t len = client_hello(msg, version, suites, n);
	int fd = connect_loopback(false, port);
	ssize_t got;

	cr_assert_geq(fd, 0);
	cr_assert_eq(send(fd, msg, len, MSG_NOSIGNAL), (ssize_t)len);
	got = recv(fd, hdr, sizeof(hdr), MSG_WAITALL);
	close(fd);
	*alert = -1;
	if (got < 5)
		return -1;
	if (hdr[0] == 0x15 && got == 7)
		*alert = hdr[6];
	return hdr[0];
}

/* RFC 5246 / 8446 alert descriptions. */
#define ALERT_HANDSHAKE_FAILURE	40
#define ALERT_PROTOCOL_VERSION	70

static const uint16_t suites_export[] = {
	0x0003, 0x0006, 0x0008, 0x000b, 0x000e, 0x0011, 0x0014, 0x0017,
	0x0019,				/* *_EXPORT_* */
};
static const uint16_t suites_null[] = {
	0x0001, 0x0002, 0x003b, 0xc006, 0xc010,	/* *_WITH_NULL_* */
};
static const uint16_t suites_rc4[] = {
	0x0004, 0x0005, 0xc007, 0xc011,		/* *_RC4_128_* */
};
static const uint16_t suites_3des[] = {
	0x000a, 0xc008, 0xc012,			/* *_3DES_EDE_CBC_SHA */
};
static const uint16_t suites_cbc[] = {
	0xc009, 0xc00a, 0xc023, 0xc024,		/* ECDHE_ECDSA AES CBC */
};
static const uint16_t suites_good[] = {
	0xc02b,				/* ECDHE_ECDSA_AES_128_GCM_SHA256 */
};

static void
check_listener(const char *name, int port, bool echo, double *failures)
{
	struct offer tls12 = { "TLS 1.2, AES-GCM", 0, TLS1_2_VERSION,
	    "ECDHE-ECDSA-AES128-GCM-SHA256", 1 };
	struct offer tls13 = { "TLS 1.3", TLS1_3_VERSION, 0, NULL, 1 };
	struct outcome r;
	int alert, type;

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		r = try_offer(port, &refused[i], echo);
		cr_assert_not(r.ok, "[%s] accepted %s: %s %s", name,
		    refused[i].what, r.version, r.cipher);
		(*failures)++;
	}

	/* The hand-made hello first proves it can be served... */
	type = raw_hello(port, 0x0303, suites_good, 1, &alert);
	cr_assert_eq(type, 0x16, "[%s] a good hand-made ClientHello got %d "
	    "(alert %d)", name, type, alert);
	(*failures)++;			/* and then we walk away */
	/* ...then offers only what no one should accept. */
	struct {
		const char *what;
		unsigned version;
		const uint16_t *s;
		size_t n;
		int alert;
	} raw[] = {
		{ "EXPORT", 0x0303, suites_export, 9, ALERT_HANDSHAKE_FAILURE },
		{ "NULL", 0x0303, suites_null, 5, ALERT_HANDSHAKE_FAILURE },
		{ "RC4", 0x0303, suites_rc4, 4, ALERT_HANDSHAKE_FAILURE },
		{ "3DES", 0x0303, suites_3des, 3, ALERT_HANDSHAKE_FAILURE },
		{ "TLS 1.0 hello", 0x0301, suites_cbc, 4,
		    ALERT_PROTOCOL_VERSION },
		{ "TLS 1.1 hello", 0x0302, suites_cbc, 4,
		    ALERT_PROTOCOL_VERSION },
	};
	for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
		type = raw_hello(port, raw[i].version, raw[i].s, raw[i].n,
		    &alert);
		cr_assert_eq(type, 0x15, "[%s] %s: answered with record type "
		    "%d, not an alert", name, raw[i].what, type);
		cr_assert_eq(alert, raw[i].alert, "[%s] %s: alert %d, not %d",
		    name, raw[i].what, alert, raw[i].alert);
		(*failures)++;
	}

	/* What a current client offers is served, uncompressed. */
	r = try_offer(port, &tls12, echo);
	cr_assert(r.ok, "[%s] TLS 1.2 with AES-GCM refused", name);
	cr_assert_str_eq(r.version, "TLSv1.2");
	cr_assert_not(r.compressed);
	r = try_offer(port, &tls13, echo);
	cr_assert(r.ok, "[%s] TLS 1.3 refused", name);
	cr_assert_str_eq(r.version, "TLSv1.3");
	cr_assert_not(r.compressed);
}

Test(security, tls_defaults_refuse_old_versions_and_weak_ciphers,
    .timeout = 60, .fini = cleanup)
{
	double web_failures = 0, dev_failures = 0;

	start_tls_listeners();
	check_listener("web", ferry_port(&fp, "web"), true, &web_failures);
	check_listener("devices-tls", ferry_port(&fp, "devices-tls"), false,
	    &dev_failures);
	/* Each refusal was a failed handshake, counted as one. */
	expect_metric(WEB_SERIES("ferry_tls_handshake_failures_total"),
	    web_failures);
	expect_metric(DEV_SERIES("ferry_tls_handshake_failures_total"),
	    dev_failures);
	expect_metric(WEB_SERIES("ferry_tls_handshakes_total"), 2);
	expect_metric(WEB_SERIES("ferry_connections_active"), 0);
	expect_metric(DEV_SERIES("ferry_connections_active"), 0);
}

/*
 * Server preference: a TLS 1.2 client listing a weak suite first and a
 * strong one second gets the strong one; listing ChaCha20 before AES-GCM
 * it gets AES-GCM, the server's first choice.
 */
Test(security, tls12_server_cipher_preference, .timeout = 60,
    .fini = cleanup)
{
	const struct offer weak_first = { "weak first", 0, TLS1_2_VERSION,
	    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384", 1 };
	const struct offer chacha_first = { "ChaCha20 first", 0,
	    TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305:"
	    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256", 1 };
	const char *names[2] = { "web", "devices-tls" };
	struct outcome r;

	start_tls_listeners();
	for (int i = 0; i < 2; i++) {
		int port = ferry_port(&fp, names[i]);
		r = try_offer(port, &weak_first, i == 0);
		cr_assert(r.ok, "[%s] %s: refused", names[i], weak_first.what);
		cr_assert_str_eq(r.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384",
		    "[%s] got %s", names[i], r.cipher);
		r = try_offer(port, &chacha_first, i == 0);
		cr_assert(r.ok, "[%s] %s: refused", names[i],
		    chacha_first.what);
		cr_assert_str_eq(r.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256",
		    "[%s] the client's order won: %s", names[i], r.cipher);
	}
}

/*
 * A TLS 1.2 client that asks to renegotiate is refused (the server
 * answers no_renegotiation, which ends the client's attempt); the server
 * serves the next client as before.
 */
static void
renegotiate_refused(const char *name, int port, bool echo)
{
	struct peer p;
	char buf[8];
	int rc;

	peer_tls(&p, connect_loopback(false, port), "localhost", NULL, NULL);
	SSL_set_max_proto_version(p.ssl, TLS1_2_VERSION);
	cr_assert(peer_tls_handshake(&p), "[%s] handshake", name);
	if (echo) {
		cr_assert_eq(peer_write(&p, "before", 6), 6);
		cr_assert_eq(peer_read_exact(&p, buf, 6), 6);
	} else {
		/* The relay answers a producer's role byte. */
		cr_assert_eq(peer_write(&p, "\x0a", 1), 1);
		cr_assert_eq(peer_read_exact(&p, buf, 1), 1);
		cr_assert_eq(buf[0], 0x00);
	}
	cr_assert_eq(SSL_renegotiate(p.ssl), 1, "client cannot ask");
	ERR_clear_error();
	rc = SSL_do_handshake(p.ssl);
	unsigned long e = ERR_peek_last_error();
	cr_assert_neq(rc, 1, "[%s] the server renegotiated", name);
	cr_assert_eq(ERR_GET_REASON(e), SSL_R_NO_RENEGOTIATION,
	    "[%s] not refused with no_renegotiation: %s", name,
	    ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?");
	ERR_clear_error();
	peer_close(&p);
}

Test(security, tls12_renegotiation_refused, .timeout = 60, .fini = cleanup)
{
	const struct offer tls12 = { "TLS 1.2", 0, TLS1_2_VERSION, NULL, 1 };

	start_tls_listeners();
	renegotiate_refused("web", ferry_port(&fp, "web"), true);
	renegotiate_refused("devices-tls", ferry_port(&fp, "devices-tls"),
	    false);
	cr_assert(try_offer(ferry_port(&fp, "web"), &tls12, true).ok);
	cr_assert(try_offer(ferry_port(&fp, "devices-tls"), &tls12,
	    false).ok);
	expect_metric(WEB_SERIES("ferry_connections_active"), 0);
	expect_metric(DEV_SERIES("ferry_connections_active"), 0);
}

/* ---- privileges ---- */

/* A "Name:\tvalues" line of /proc/PID/status, values only. */
static bool
status_line(pid_t pid, const char *name, char *out, size_t len)
{
	char path[64], line[512];
	size_t n = strlen(name);
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, name, n) != 0 || line[n] != ':')
			continue;
		const char *v = line + n + 1;
		v += strspn(v, " \t");
		snprintf(out, len, "%.*s", (int)strcspn(v, "\n"), v);
		found = true;
	}
	fclose(f);
	return found;
}

static void
expect_unprivileged(pid_t pid, uid_t uid, gid_t gid)
{
	char v[256], want[128];

	snprintf(want, sizeof(want), "%ld\t%ld\t%ld\t%ld", (long)uid,
	    (long)uid, (long)uid, (long)uid);
	cr_assert(status_line(pid, "Uid", v, sizeof(v)));
	cr_assert_str_eq(v, want, "pid %ld: real, effective, saved, fs uid "
	    "%s", (long)pid, v);
	snprintf(want, sizeof(want), "%ld\t%ld\t%ld\t%ld", (long)gid,
	    (long)gid, (long)gid, (long)gid);
	cr_assert(status_line(pid, "Gid", v, sizeof(v)));
	cr_assert_str_eq(v, want, "pid %ld: gids %s", (long)pid, v);
	cr_assert(status_line(pid, "Groups", v, sizeof(v)));
	cr_assert_str_eq(v, "", "pid %ld: supplementary groups %s", (long)pid,
	    v);
	/* No capability left to regain root with. */
	cr_assert(status_line(pid, "CapPrm", v, sizeof(v)));
	cr_assert_eq(strtoull(v, NULL, 16), 0, "pid %ld: CapPrm %s",
	    (long)pid, v);
	cr_assert(status_line(pid, "CapEff", v, sizeof(v)));
	cr_assert_eq(strtoull(v, NULL, 16), 0, "pid %ld: CapEff %s",
	    (long)pid, v);
}

Test(security, drops_privileges_to_nobody, .timeout = 60, .fini = cleanup)
{
	struct passwd *pw;
	struct group *gr;
	struct peer p;
	pid_t w[4];
	char conf[1024], buf[8];

	if (geteuid() != 0)
		cr_skip_test("not running as root: nothing to drop");
	pw = getpwnam("nobody");
	gr = getgrnam("nogroup");
	if (pw == NULL || gr == NULL)
		cr_skip_test("no user nobody or group nogroup here");
	uid_t uid = pw->pw_uid;
	gid_t gid = gr->gr_gid;

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nworkers = 2\nuser = nobody\ngroup = nogroup\n"
	    "admin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n",
	    CERT("server.pem"), CERT("server.key"), be.port);
	ferry_start_args(&fp, conf, 2, NULL);
	cr_assert_eq(ferry_log_count(&fp, "running as user nobody (uid "), 1);

	/* The supervisor and both workers. */
	expect_unprivileged(fp.pid, uid, gid);
	cr_assert_eq(ferry_children(&fp, w, 4), 2);
	expect_unprivileged(w[0], uid, gid);
	expect_unprivileged(w[1], uid, gid);

	/* It still serves TLS (the key was read before the drop)... */
	for (int i = 0; i < 4; i++) {
		peer_tls(&p, connect_loopback(false, ferry_port(&fp, "web")),
		    "localhost", NULL, NULL);
		cr_assert(peer_tls_handshake(&p));
		cr_assert_eq(peer_write(&p, "nobody", 6), 6);
		cr_assert_eq(peer_read_exact(&p, buf, 6), 6);
		cr_assert_eq(memcmp(buf, "nobody", 6), 0);
		peer_close(&p);
	}
	/* ...and its metrics. */
	expect_metric(WEB_SERIES("ferry_tls_handshakes_total"), 4);
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "status %d", status);
}

/* ---- no secrets in the log ---- */

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

static void
spill(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
}

/*
 * Fails if `text` holds private key material: the PEM label, or any of
 * the base64 lines of the keys in certs/ (or their first 16 characters).
 */
static void
expect_no_key_material(const char *text, const char *where)
{
	const char *keys[] = { CERT("server.key"), CERT("other.key"),
	    CERT("client.key"), CERT("ca.key") };

	cr_assert_null(strstr(text, "PRIVATE KEY"), "%s shows a PEM private "
	    "key label", where);
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		char *pem = slurp(keys[k]);
		for (char *line = strtok(pem, "\n"); line != NULL;
		    line = strtok(NULL, "\n")) {
			char head[17];
			if (line[0] == '-' || strlen(line) < 16)
				continue;
			snprintf(head, sizeof(head), "%s", line);
			cr_assert_null(strstr(text, head), "%s shows a line of "
			    "%s", where, keys[k]);
		}
		free(pem);
	}
}

/* The first `nlines` lines of a file. */
static char *
head_lines(const char *path, int nlines)
{
	char *text = slurp(path), *p = text;

	for (int i = 0; i < nlines && p != NULL; i++)
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	if (p != NULL)
		*p = '\0';
	return text;
}

/* Certificate, key and config copies the test may break, in their own
 * directory (removed by the fixture). */
static char keydir[64];

static void
cleanup_keydir(void)
{
	const char *files[] = { "cert.pem", "key.pem", "check.conf" };
	char path[128];

	cleanup();
	if (keydir[0] == '\0')
		return;
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", keydir, files[i]);
		unlink(path);
	}
	rmdir(keydir);
	keydir[0] = '\0';
}

static void
copy_to(const char *from, const char *to)
{
	char *text = slurp(from);

	spill(to, text);
	free(text);
}

Test(security, no_private_key_material_logged, .timeout = 60,
    .fini = cleanup_keydir)
{
	char conf[2048], cert[128], key[128], cpath[128], out[16384];
	const struct offer tls11 = { "TLS 1.1", TLS1_1_VERSION, TLS1_1_VERSION,
	    NULL, 0 };
	const struct offer tls12 = { "TLS 1.2", 0, TLS1_2_VERSION, NULL, 1 };
	const struct offer tls13 = { "TLS 1.3", TLS1_3_VERSION, 0, NULL, 1 };
	const char *names[2] = { "web", "devices-tls" };
	char *text, *log;

	snprintf(keydir, sizeof(keydir), "/tmp/ferry-keys-XXXXXX");
	cr_assert_not_null(mkdtemp(keydir));
	snprintf(cert, sizeof(cert), "%s/cert.pem", keydir);
	snprintf(key, sizeof(key), "%s/key.pem", keydir);
	snprintf(cpath, sizeof(cpath), "%s/check.conf", keydir);
	copy_to(CERT("server.pem"), cert);
	copy_to(CERT("server.key"), key);
	chmod(key, 0600);
	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nlog_level = debug\nadmin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n"
	    "[devices-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\n", cert, key, be.port, cert, key);
	ferry_start(&fp, conf);

	/* Handshakes that work, and ones that fail, on both listeners. */
	for (int i = 0; i < 2; i++) {
		int port = ferry_port(&fp, names[i]);
		char c;
		cr_assert(try_offer(port, &tls12, i == 0).ok);
		cr_assert(try_offer(port, &tls13, i == 0).ok);
		cr_assert_not(try_offer(port, &tls11, i == 0).ok);
		int fd = connect_loopback(false, port);
		cr_assert_eq(send(fd, "GET / HTTP/1.0\r\n\r\n", 18, 0), 18);
		cr_assert_leq(recv(fd, &c, 1, 0), 0);
		close(fd);
	}

	/* Reloads that must fail: a key cut after its first line... */
	text = head_lines(CERT("server.key"), 2);
	spill(key, text);
	free(text);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current certificates", 1,
	    10));
	/* ...a whole key of another certificate... */
	copy_to(CERT("other.key"), key);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current certificates", 2,
	    10));
	/* ...and a key where the certificate should be. */
	copy_to(CERT("server.key"), cert);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current certificates", 3,
	    10));
	cr_assert(try_offer(ferry_port(&fp, "web"), &tls13, true).ok,
	    "the current certificate was not kept");
	ferry_stop(&fp);
	log = ferry_log_read(&fp);
	cr_assert_not_null(strstr(log, " DEBUG "), "no debug lines: the "
	    "test would prove little");
	expect_no_key_material(log, "the log");
	free(log);

	/* --check on a key of garbage (the base64 scrambled) and on a key in
	 * place of a certificate: the reason, never the contents. */
	const char *argv[] = { "--check", "-c", cpath, NULL };
	spill(cpath, conf);
	copy_to(CERT("server.pem"), cert);
	text = slurp(CERT("server.key"));
	for (char *c = strchr(text, '\n') + 1; *c != '\0' && *c != '-'; c++)
		if (*c != '\n')
			*c = *c == 'A' ? 'B' : 'A';
	spill(key, text);
	free(text);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "] key: "), "%s", out);
	expect_no_key_material(out, "--check (garbage key)");
	copy_to(CERT("server.key"), key);
	copy_to(CERT("server.key"), cert);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "] cert: "), "%s", out);
	expect_no_key_material(out, "--check (key as certificate)");
}
