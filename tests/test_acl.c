/*
 * Client certificates and access lists on relay listeners.
 *
 * The list itself (acl.h) is tested as a pure module: parsing, errors with
 * their line, every identity kind and pattern form.  End to end, the real
 * binary runs a TLS relay listener that asks for client certificates,
 * and clients present certificates made here, in a temporary directory,
 * signed by the development CA (certs/ca.key) with the names each test
 * needs.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "acl.h"
#include "ferryproc.h"
#include "helpers.h"
#include "relay_proto.h"
#include "relayclient.h"

/* ---- the list alone ---- */

static struct acl *
parse(const char *text)
{
	char err[512];
	struct acl *a = acl_parse(text, strlen(text), "t.acl", err,
	    sizeof(err));

	cr_assert_not_null(a, "%s", err);
	return a;
}

/* The error for `text`, which must not parse. */
static const char *
parse_error(const char *text)
{
	static char err[512];
	struct acl *a = acl_parse(text, strlen(text), "t.acl", err,
	    sizeof(err));

	cr_assert_null(a, "parsed: %s", text);
	return err;
}

/* Identities as stream_peer_ids would give them. */
static void
ids_add(struct peer_ids *ids, enum peer_id_kind kind, const char *v)
{
	ids->id[ids->n].kind = kind;
	ids->id[ids->n].value = v;
	ids->id[ids->n].len = strlen(v);
	ids->n++;
}

static int
check(const struct acl *a, enum acl_role role,
    const struct peer_ids *ids, const char *uuid)
{
	return acl_check(a, role, ids, uuid, strlen(uuid), NULL);
}

Test(acl, rules_identities_and_patterns, .timeout = 10)
{
	struct acl *a = parse(
	    "# who may do what\n"
	    "\n"
	    "produce  cn:phone-alice      alice-*\n"
	    "consume  email:studio@example.com  alice-face   # the studio\n"
	    "\tconsume\tdns:Recorder.LAN\t*\r\n"
	    "consume  uri:spiffe://ferry/viewer  \"room 1\"\n"
	    "produce  \"cn:Alice \\\"A\\\" Smith\"  \"#hash\"\n"
	    "consume  *  public-*\n"
	    "   # indented comment\n");
	struct peer_ids alice = { 0 }, studio = { 0 }, rec = { 0 },
	    view = { 0 }, smith = { 0 }, other = { 0 };
	const struct peer_id *m;

	cr_assert_eq(acl_rules(a), 6);
	ids_add(&alice, PEER_ID_CN, "phone-alice");
	ids_add(&alice, PEER_ID_DNS, "phone-alice.lan");
	ids_add(&studio, PEER_ID_CN, "studio");
	ids_add(&studio, PEER_ID_EMAIL, "studio@example.com");
	ids_add(&rec, PEER_ID_DNS, "recorder.lan");
	ids_add(&view, PEER_ID_URI, "spiffe://ferry/viewer");
	ids_add(&smith, PEER_ID_CN, "Alice \"A\" Smith");
	ids_add(&other, PEER_ID_CN, "alice-face");

	/* Prefix patterns, and roles kept apart. */
	cr_assert_eq(check(a, ACL_PRODUCE, &alice, "alice-face"), 3);
	cr_assert_eq(check(a, ACL_PRODUCE, &alice, "alice-"), 3);
	cr_assert_eq(check(a, ACL_PRODUCE, &alice, "alice"), 0);
	cr_assert_eq(check(a, ACL_PRODUCE, &alice, "bob-face"), 0);
	cr_assert_eq(check(a, ACL_CONSUME, &alice, "alice-face"), 0);
	/* Exact patterns; the comment after the fields is not a field. */
	cr_assert_eq(check(a, ACL_CONSUME, &studio, "alice-face"), 4);
	cr_assert_eq(check(a, ACL_CONSUME, &studio, "alice-face2"), 0);
	cr_assert_eq(check(a, ACL_PRODUCE, &studio, "alice-face"), 0);
	/* DNS ignores case, and `*` is every uuid. */
	acl_check(a, ACL_CONSUME, &rec, "anything", 8, &m);
	cr_assert_eq(acl_check(a, ACL_CONSUME, &rec, "anything", 8, &m), 5);
	cr_assert_eq(m, &rec.id[0]);
	/* A quoted pattern with a blank; a URI compared exactly. */
	cr_assert_eq(check(a, ACL_CONSUME, &view, "room 1"), 6);
	cr_assert_eq(check(a, ACL_CONSUME, &view, "room"), 0);
	/* Escapes inside quotes; a quoted field may start with '#'. */
	cr_assert_eq(check(a, ACL_PRODUCE, &smith, "#hash"), 7);
	/* CN is compared exactly: other case, no match. */
	ids_add(&other, PEER_ID_CN, "PHONE-ALICE");
	cr_assert_eq(check(a, ACL_PRODUCE, &other, "alice-face"), 0);
	/* The same name in another kind does not count. */
	struct peer_ids dns_alice = { 0 };
	ids_add(&dns_alice, PEER_ID_DNS, "phone-alice");
	cr_assert_eq(check(a, ACL_PRODUCE, &dns_alice, "alice-face"), 0);
	/* `*` is any verified certificate, names or not ... */
	struct peer_ids none = { 0 };
	cr_assert_eq(acl_check(a, ACL_CONSUME, &none, "public-1", 8, &m), 8);
	cr_assert_null(m);
	cr_assert_eq(check(a, ACL_CONSUME, &alice, "public-x"), 8);
	/* ... and no certificate matches nothing at all. */
	cr_assert_eq(acl_check(a, ACL_CONSUME, NULL, "public-1", 8, NULL), 0);
	cr_assert_eq(acl_check(a, ACL_CONSUME, NULL, "x", 1, NULL), 0);
	acl_free(a);
}

Test(acl, empty_list_denies_everything, .timeout = 10)
{
	struct acl *a = parse("# nobody\n\n");
	struct peer_ids ids = { 0 };

	ids_add(&ids, PEER_ID_CN, "anyone");
	cr_assert_eq(acl_rules(a), 0);
	cr_assert_eq(check(a, ACL_PRODUCE, &ids, "u"), 0);
	cr_assert_eq(check(a, ACL_CONSUME, &ids, "u"), 0);
	acl_free(a);
	a = parse("");
	cr_assert_eq(acl_rules(a), 0);
	acl_free(a);
}

Test(acl, errors_name_the_line, .timeout = 10)
{
	static const struct {
		const char *text, *err;
	} cases[] = {
		{ "produce cn:a x\nproduse cn:a x\n",
		    "t.acl:2: role 'produse': use produce or consume" },
		{ "\n\nconsume\n", "t.acl:3: missing the identity and the "
		    "uuid pattern" },
		{ "consume cn:a\n", "t.acl:1: missing the uuid pattern" },
		{ "consume cn:a # x\n", "t.acl:1: missing the uuid pattern" },
		{ "consume cn:a x y\n", "t.acl:1: more than three fields "
		    "(quote a field with blanks; '#' starts a comment)" },
		{ "consume subject:a x\n", "t.acl:1: identity 'subject:a': use "
		    "cn:NAME, dns:NAME, email:ADDR, uri:URI or *" },
		{ "consume cn: x\n", "t.acl:1: identity 'cn:' has no value "
		    "after the ':'" },
		{ "consume cn:a a*b\n",
		    "t.acl:1: uuid pattern: '*' only at the end" },
		{ "consume cn:a **\n",
		    "t.acl:1: uuid pattern: '*' only at the end" },
		{ "consume cn:a \"\"\n", "t.acl:1: empty uuid pattern" },
		{ "consume cn:a \"x\n", "t.acl:1: unterminated quote" },
		{ "consume cn:a \"x\"y\n",
		    "t.acl:1: a blank must follow a closing quote" },
		{ "consume cn:a x\"y\n",
		    "t.acl:1: a '\"' inside a field: quote the whole field" },
		{ "consume cn:a \"x\\n\"\n",
		    "t.acl:1: only \\\" and \\\\ are escapes" },
		{ "consume \"cn:a\x01\" x\n",
		    "t.acl:1: identity has a control character" },
		{ "consume cn:a \"x\x1b\"\n",
		    "t.acl:1: uuid pattern has a control character" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_str_eq(parse_error(cases[i].text), cases[i].err,
		    "case %zu", i);
	/* A pattern longer than any uuid could be. */
	char text[400] = "consume cn:a ";
	memset(text + strlen(text), 'u', 256);
	cr_assert_str_eq(parse_error(text), "t.acl:1: uuid pattern longer "
	    "than 255 bytes matches no uuid");
	/* Not text at all. */
	char err[128];
	cr_assert_null(acl_parse("consume cn:a x\0", 15, "t.acl", err,
	    sizeof(err)));
	cr_assert_str_eq(err, "t.acl: a NUL byte: not a text file");
}

Test(acl, load_from_file, .timeout = 10)
{
	char dir[] = "/tmp/ferry-acl-XXXXXX", path[64], err[256];
	struct acl *a;
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/x.acl", dir);
	cr_assert_null(acl_load(path, err, sizeof(err)));
	cr_assert(strstr(err, "No such file") != NULL, "%s", err);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("produce cn:a a-*\nconsume cn:b a-*", f);	/* no last \n */
	fclose(f);
	a = acl_load(path, err, sizeof(err));
	cr_assert_not_null(a, "%s", err);
	cr_assert_eq(acl_rules(a), 2);
	cr_assert_str_eq(acl_path(a), path);
	acl_free(a);
	unlink(path);
	rmdir(dir);
}

/* ---- certificates for the tests ---- */

static char tmpdir[64];
static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	tmpdir_remove(tmpdir);
}

static void
tmp_path(const char *file, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", tmpdir, file);
}

static void
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);

	cr_assert_not_null(e, "extension %s", value);
	cr_assert_eq(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* The development CA, for signing. */
static void
load_ca(X509 **ca, EVP_PKEY **key)
{
	FILE *f = fopen(CERT("ca.pem"), "r");

	cr_assert_not_null(f);
	*ca = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	f = fopen(CERT("ca.key"), "r");
	cr_assert_not_null(f);
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert(*ca != NULL && *key != NULL);
}

/*
 * TMPDIR/NAME.pem and NAME.key: a client certificate for `cn` (NULL:
 * none) with the subjectAltNames `san` (OpenSSL's syntax, or NULL), and,
 * if raw_dns is given, one more DNS name of raw_len bytes as they are
 * (for names with a NUL byte), signed by the development CA.
 */
static void
make_cert(const char *name, const char *cn, const char *san,
    const char *raw_dns, int raw_len)
{
	static long serial = 1000;
	X509 *ca, *x = X509_new();
	EVP_PKEY *ca_key, *key = EVP_EC_gen("P-256");
	X509V3_CTX ctx;
	char path[128];
	FILE *f;

	cr_assert(x != NULL && key != NULL);
	load_ca(&ca, &ca_key);
	cr_assert_eq(X509_set_version(x, X509_VERSION_3), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++ ^ (long)getpid());
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	cr_assert_eq(X509_set_pubkey(x, key), 1);
	if (cn != NULL)
		cr_assert_eq(X509_NAME_add_entry_by_txt(X509_get_subject_name(x),
		    "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0),
		    1);
	cr_assert_eq(X509_set_issuer_name(x, X509_get_subject_name(ca)), 1);
	X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
	add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
	add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
	add_ext(x, &ctx, NID_ext_key_usage, "clientAuth");
	if (san != NULL)
		add_ext(x, &ctx, NID_subject_alt_name, san);
	if (raw_dns != NULL) {
		GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		cr_assert(gens && g && s);
		cr_assert_eq(ASN1_STRING_set(s, raw_dns, raw_len), 1);
		GENERAL_NAME_set0_value(g, GEN_DNS, s);
		sk_GENERAL_NAME_push(gens, g);
		cr_assert_eq(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
		    X509V3_ADD_DEFAULT), 1);
		GENERAL_NAMES_free(gens);
	}
	cr_assert_gt(X509_sign(x, ca_key, EVP_sha256()), 0);
	snprintf(path, sizeof(path), "%s/%s.pem", tmpdir, name);
	f = fopen(path, "w");
	cr_assert(f != NULL && PEM_write_X509(f, x) == 1);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", tmpdir, name);
	f = fopen(path, "w");
	cr_assert(f != NULL && PEM_write_PrivateKey(f, key, NULL, NULL, 0,
	    NULL, NULL) == 1);
	fclose(f);
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
}

static void
write_text(const char *file, const char *text)
{
	char path[128];

	/* Renamed into place: a reload never reads half a file. */
	tmp_path(file, path, sizeof(path));
	write_file_atomic(path, text, strlen(text));
}

static void
make_tmpdir(void)
{
	tmpdir_make(tmpdir, sizeof(tmpdir), "ferry-acl");
}

/*
 * Ferry with one TLS relay listener [devices] asking for client
 * certificates (`verify`), with `acl` (a file in tmpdir) unless NULL.
 */
static int
start_mtls(const char *verify, const char *acl)
{
	char conf[2048], aclline[192] = "";

	if (acl != NULL)
		snprintf(aclline, sizeof(aclline), "acl = %s/%s\n", tmpdir,
		    acl);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[devices]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nclient_ca = %s\nverify_client = %s\n%s",
	    CERT("server.pem"), CERT("server.key"), CERT("ca.pem"), verify,
	    aclline);
	ferry_start(&fp, conf);
	return ferry_port(&fp, "devices");
}

static void
expect_log(const char *needle, int n)
{
	ferry_log_expect(&fp, needle, n);
}

/* A client with the certificate TMPDIR/NAME (or certs/NAME for "dev:"). */
static void
connect_as(struct rclient *c, int port, const char *name)
{
	char cert[128], key[128];

	if (name == NULL) {
		cr_assert_eq(rc_connect_cert(c, port, NULL, NULL, 0), 0);
		return;
	}
	if (strncmp(name, "dev:", 4) == 0) {
		snprintf(cert, sizeof(cert), "%s/certs/%s.pem", FERRY_SRCDIR,
		    name + 4);
		snprintf(key, sizeof(key), "%s/certs/%s.key", FERRY_SRCDIR,
		    name + 4);
	} else {
		snprintf(cert, sizeof(cert), "%s/%s.pem", tmpdir, name);
		snprintf(key, sizeof(key), "%s/%s.key", tmpdir, name);
	}
	cr_assert_eq(rc_connect_cert(c, port, cert, key, 0), 0, "%s", name);
}

/* Registers as `name`; returns RC_OK / RC_REFUSED (at the uuid). */
static int
produce_as(struct rclient *c, int port, const char *name, const char *uuid)
{
	int r;

	connect_as(c, port, name);
	r = rc_register(c, uuid, strlen(uuid), "a,b", 3);
	cr_assert(r == RC_OK || (r == RC_REFUSED && c->refused_at == 2),
	    "%s producing %s: %d at %d", name, uuid, r, c->refused_at);
	return r;
}

static int
consume_as(struct rclient *c, int port, const char *name, const char *uuid)
{
	int r;

	connect_as(c, port, name);
	r = rc_subscribe(c, uuid);
	cr_assert(r == RC_OK || (r == RC_REFUSED && c->refused_at == 2),
	    "%s consuming %s: %d at %d", name, uuid, r, c->refused_at);
	return r;
}

static void
expect_frames(struct rclient *c, uint32_t first, size_t n)
{
	uint32_t seqs[64];
	bool torn;

	cr_assert_leq(n, 64);
	cr_assert_eq(rc_read_frames(c, n, seqs, &torn), n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(seqs[i], first + i);
}

static long long
metric(const char *series)
{
	return rc_metric(ferry_port(&fp, "admin"), series);
}

/* ---- client certificates end to end ---- */

/*
 * verify_client = required on a relay listener: no certificate, or one
 * from another CA, is refused at the handshake and never reaches the
 * protocol; a good one produces and consumes.
 */
Test(acl, relay_requires_client_certificates, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p, c, x;
	int port = start_mtls("required", NULL);
	uint8_t b;

	/* TLS 1.3: the client is done before the server has checked its
	 * certificate, so the refusal is the first read failing. */
	if (rc_connect_cert(&x, port, NULL, NULL, 0) == 0) {
		(void)rc_send_byte(&x, RELAY_PRODUCER);
		cr_assert_lt(rc_read(&x, &b, 1, RC_TIMEOUT), 1, "served "
		    "without a certificate");
		rc_close(&x);
	}
	if (rc_connect_cert(&x, port, CERT("rogue-client.pem"),
	    CERT("rogue-client.key"), 0) == 0) {
		(void)rc_send_byte(&x, RELAY_PRODUCER);
		cr_assert_lt(rc_read(&x, &b, 1, RC_TIMEOUT), 1, "served a "
		    "certificate of another CA");
		rc_close(&x);
	}
	expect_log("tls handshake failed", 2);
	cr_assert_geq(ferry_log_count(&fp, "certificate: unable to get local "
	    "issuer certificate"), 1);
	cr_assert_eq(ferry_log_count(&fp, "relay devices: producer"), 0);
	cr_assert_eq(metric("ferry_tls_handshake_failures_total{listener="
	    "\"devices\",mode=\"relay\"}"), 2);

	cr_assert_eq(rc_connect_cert(&p, port, CERT("client.pem"),
	    CERT("client.key"), 0), 0);
	cr_assert_eq(rc_register(&p, "mtls-1", 6, "a,b", 3), RC_OK);
	cr_assert_eq(rc_connect_cert(&c, port, CERT("client.pem"),
	    CERT("client.key"), 0), 0);
	cr_assert_eq(rc_subscribe(&c, "mtls-1"), RC_OK);
	expect_log("joined uuid 'mtls-1'", 1);
	cr_assert(rc_send_frames(&p, 0, 10));
	expect_frames(&c, 0, 10);
	rc_close(&c);
	rc_close(&p);
}

/* The certificates of the access list tests. */
static void
make_people(void)
{
	make_tmpdir();
	make_cert("alice", "phone-alice", "DNS:phone-alice.lan", NULL, 0);
	make_cert("studio", "studio", "email:studio@example.com", NULL, 0);
	make_cert("viewer", "viewer", "URI:spiffe://ferry/viewer", NULL, 0);
	make_cert("nameless", NULL, NULL, NULL, 0);
	/* "phone-alice" then a NUL: must not pass for phone-alice. */
	make_cert("forger", "forger", NULL, "phone-alice.lan\0.evil", 21);
}

#define ACL_TEXT \
	"# devices.acl\n" \
	"produce  dns:phone-alice.lan          alice-*\n" \
	"consume  email:studio@example.com     alice-*\n" \
	"consume  uri:spiffe://ferry/viewer    alice-face\n" \
	"consume  *                            public-*\n"

Test(acl, access_list_end_to_end, .timeout = 60, .fini = cleanup)
{
	struct rclient alice, alice2, studio, viewer, x;
	char needle[256];
	int port;

	make_people();
	write_text("devices.acl", ACL_TEXT);
	port = start_mtls("optional", "devices.acl");
	expect_log("[devices] access list ", 1);
	expect_log("devices.acl: 4 rules", 1);

	/* Allowed pairs. */
	cr_assert_eq(produce_as(&alice, port, "alice", "alice-face"), RC_OK);
	expect_log("registered uuid 'alice-face' with 2 keys (consumers: 0); "
	    "access list line 2 for dns:phone-alice.lan", 1);
	cr_assert_eq(consume_as(&studio, port, "studio", "alice-face"), RC_OK);
	expect_log("joined uuid 'alice-face' (2 keys); access list line 3 "
	    "for email:studio@example.com", 1);
	cr_assert_eq(consume_as(&viewer, port, "viewer", "alice-face"), RC_OK);
	expect_log("joined uuid 'alice-face' (2 keys); access list line 4 "
	    "for uri:spiffe://ferry/viewer", 1);
	cr_assert(rc_send_frames(&alice, 0, 20));
	expect_frames(&studio, 0, 20);
	expect_frames(&viewer, 0, 20);
	cr_assert_eq(produce_as(&alice2, port, "alice", "alice-other"), RC_OK);

	/* Outside the list: 0x01 at the uuid, though the uuid is live. */
	cr_assert_eq(produce_as(&x, port, "alice", "bob-face"), RC_REFUSED);
	rc_close(&x);
	snprintf(needle, sizeof(needle), "relay devices: access list %s/"
	    "devices.acl: producer 127.0.0.1:", tmpdir);
	expect_log(needle, 1);
	expect_log(" (cn:phone-alice, dns:phone-alice.lan) may not produce "
	    "uuid 'bob-face'", 1);
	/* May produce alice-*, not consume it. */
	cr_assert_eq(consume_as(&x, port, "alice", "alice-face"), RC_REFUSED);
	rc_close(&x);
	expect_log("(cn:phone-alice, dns:phone-alice.lan) may not consume "
	    "uuid 'alice-face'", 1);
	/* May consume alice-*, not produce it (nor take it over). */
	cr_assert_eq(produce_as(&x, port, "studio", "alice-face"), RC_REFUSED);
	rc_close(&x);
	expect_log("(cn:studio, email:studio@example.com) may not produce "
	    "uuid 'alice-face'", 1);
	/* An exact pattern is exact. */
	cr_assert_eq(consume_as(&x, port, "viewer", "alice-other"),
	    RC_REFUSED);
	rc_close(&x);
	/* A certificate of the CA that no rule names. */
	cr_assert_eq(consume_as(&x, port, "dev:client", "alice-face"),
	    RC_REFUSED);
	rc_close(&x);
	expect_log("(cn:ferry-client, dns:ferry-client) may not consume", 1);
	/* A DNS name with a NUL byte is no name at all. */
	cr_assert_eq(produce_as(&x, port, "forger", "alice-face"), RC_REFUSED);
	rc_close(&x);
	expect_log("(cn:forger) may not produce uuid 'alice-face'", 1);
	/* `*` is for consumers of public-* alone. */
	cr_assert_eq(produce_as(&x, port, "alice", "public-1"), RC_REFUSED);
	rc_close(&x);
	/* A certificate without names matches `*` rules only. */
	cr_assert_eq(produce_as(&x, port, "nameless", "alice-x"), RC_REFUSED);
	rc_close(&x);
	expect_log("(a certificate without names) may not produce uuid "
	    "'alice-x'", 1);
	/* No certificate: verify_client = optional lets it connect, and it
	 * matches no rule. */
	cr_assert_eq(consume_as(&x, port, NULL, "alice-face"), RC_REFUSED);
	rc_close(&x);
	expect_log("(no verified certificate) may not consume uuid "
	    "'alice-face'", 1);
	cr_assert_eq(metric("ferry_relay_acl_denied_total{listener="
	    "\"devices\"}"), 9);
	cr_assert_eq(metric("ferry_relay_refused_total{listener="
	    "\"devices\"}"), 9);

	/* Nothing of that disturbed the allowed streams. */
	cr_assert(rc_send_frames(&alice, 20, 5));
	expect_frames(&studio, 20, 5);
	expect_frames(&viewer, 20, 5);
	rc_close(&viewer);
	rc_close(&studio);
	rc_close(&alice2);
	rc_close(&alice);
	/* A clean exit (under the sanitizers: nothing leaked). */
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit "
	    "status %d", status);
}

/* `*` lets any verified certificate in, names or not. */
Test(acl, any_certificate, .timeout = 60, .fini = cleanup)
{
	struct rclient p, c;
	int port;

	make_people();
	write_text("devices.acl", "produce dns:phone-alice.lan public-*\n"
	    "consume * public-*\n");
	port = start_mtls("required", "devices.acl");
	cr_assert_eq(produce_as(&p, port, "alice", "public-1"), RC_OK);
	cr_assert_eq(consume_as(&c, port, "nameless", "public-1"), RC_OK);
	expect_log("joined uuid 'public-1' (2 keys); access list line 2 for "
	    "any certificate", 1);
	cr_assert(rc_send_frames(&p, 0, 3));
	expect_frames(&c, 0, 3);
	rc_close(&c);
	rc_close(&p);
}

/*
 * SIGHUP reloads the list with the certificates: new rules for the next
 * uuid steps, devices already in keep going; a bad file keeps the rules
 * in force and says where it is wrong.
 */
Test(acl, sighup_reloads_the_list, .timeout = 60, .fini = cleanup)
{
	struct rclient p, c, x;
	char needle[256];
	int port;

	make_people();
	write_text("devices.acl", "produce cn:phone-alice a-*\n"
	    "consume cn:studio a-*\n");
	port = start_mtls("required", "devices.acl");
	cr_assert_eq(produce_as(&p, port, "alice", "a-1"), RC_OK);
	cr_assert_eq(consume_as(&c, port, "studio", "a-1"), RC_OK);
	expect_log("joined uuid 'a-1'", 1);
	cr_assert_eq(produce_as(&x, port, "alice", "b-1"), RC_REFUSED);
	rc_close(&x);

	/* New rules: b-* instead of a-*. */
	write_text("devices.acl", "produce cn:phone-alice b-*\n"
	    "consume cn:studio b-*\n"
	    "consume cn:viewer b-*\n");
	ferry_signal(&fp, SIGHUP);
	expect_log("reload: [devices] access list ", 1);
	expect_log("devices.acl: 3 rules", 1);
	expect_log("certificates reloaded", 1);
	cr_assert_eq(produce_as(&x, port, "alice", "b-1"), RC_OK);
	rc_close(&x);
	cr_assert_eq(produce_as(&x, port, "alice", "a-2"), RC_REFUSED);
	rc_close(&x);
	/* The pair that registered under the old rules carries on. */
	cr_assert(rc_send_frames(&p, 0, 5));
	expect_frames(&c, 0, 5);

	/* A broken file: logged with file and line, the rules kept. */
	write_text("devices.acl", "produce cn:phone-alice b-*\n"
	    "consume cn:studio b-* extra\n");
	ferry_signal(&fp, SIGHUP);
	expect_log("keeping the current certificates and access lists", 1);
	snprintf(needle, sizeof(needle), "[devices] acl: %s/devices.acl:2: "
	    "more than three fields", tmpdir);
	expect_log(needle, 1);
	cr_assert_eq(produce_as(&x, port, "alice", "b-2"), RC_OK);
	rc_close(&x);
	cr_assert_eq(consume_as(&x, port, "viewer", "a-1"), RC_REFUSED);
	rc_close(&x);
	rc_close(&c);
	rc_close(&p);
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit "
	    "status %d", status);
}

/* ---- --check ---- */

static int
check_conf(const char *conf, char *out, size_t outlen)
{
	char path[128];

	tmp_path("ferry.conf", path, sizeof(path));
	write_text("ferry.conf", conf);
	const char *argv[] = { "--check", "-c", path, NULL };
	return ferry_run(argv, out, outlen);
}

Test(acl, check_refuses_bad_lists, .timeout = 60, .fini = cleanup)
{
	char conf[2048], out[2048], want[512], tls[512];

	make_tmpdir();
	snprintf(tls, sizeof(tls), "cert = %s\nkey = %s\nclient_ca = %s\n",
	    CERT("server.pem"), CERT("server.key"), CERT("ca.pem"));
	write_text("good.acl", "produce cn:a a-*\n");
	write_text("bad.acl", "# line 1\nproduce cn:a a-*\nconsume cn:b "
	    "a*b\n");

	/* Good: OK. */
	snprintf(conf, sizeof(conf), "[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n%sverify_client = required\n"
	    "acl = %s/good.acl\n", tls, tmpdir);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 0, "%s", out);

	/* A bad line: the config's line and key, then the list's. */
	snprintf(conf, sizeof(conf), "[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n%sverify_client = required\n"
	    "acl = %s/bad.acl\n", tls, tmpdir);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	snprintf(want, sizeof(want), "ferry.conf:8: [devices] acl: %s/bad.acl:3:"
	    " uuid pattern: '*' only at the end", tmpdir);
	cr_assert(strstr(out, want) != NULL, "%s", out);

	/* A file that is not there. */
	snprintf(conf, sizeof(conf), "[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n%sverify_client = optional\n"
	    "acl = %s/none.acl\n", tls, tmpdir);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	snprintf(want, sizeof(want), "ferry.conf:8: [devices] acl: %s/none.acl:"
	    " No such file or directory", tmpdir);
	cr_assert(strstr(out, want) != NULL, "%s", out);

	/* No client certificates to match. */
	snprintf(conf, sizeof(conf), "[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n%sacl = %s/good.acl\n", tls, tmpdir);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "ferry.conf:7: [devices] acl: needs "
	    "verify_client = required (or optional) and client_ca") != NULL,
	    "%s", out);

	/* A relay listener beside it without a list would bypass it. */
	snprintf(conf, sizeof(conf), "[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n%sverify_client = required\n"
	    "acl = %s/good.acl\n[lan]\nmode = relay\nbind = 127.0.0.1:0\n",
	    tls, tmpdir);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "ferry.conf:9: [lan] acl: missing: relay "
	    "listeners share their uuids, and [devices] has an access list")
	    != NULL, "%s", out);

	/* Forward listeners have no uuids, and no acl key. */
	snprintf(conf, sizeof(conf), "[web]\nmode = forward\n"
	    "bind = 127.0.0.1:0\nbackend = 127.0.0.1:1\nacl = %s/good.acl\n",
	    tmpdir);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "ferry.conf:5: [web] acl: only for relay "
	    "listeners") != NULL, "%s", out);
}
