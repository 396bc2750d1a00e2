/* The config file: every key parsed, every bad value refused with its
 * file, line, section and key. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "config.h"
#include "log.h"

static struct config cfg;
static char err[512];

static int
load(const char *text)
{
	config_init(&cfg);
	err[0] = '\0';
	return config_load_string(&cfg, text, "test.conf", err, sizeof(err));
}

Test(config, full_file, .timeout = 10)
{
	int rc = load(
	    "; comment\n"
	    "[ferry]\n"
	    "workers = 2\n"
	    "admin = 127.0.0.1:9100\n"
	    "log_level = debug\n"
	    "drain_timeout = 1500ms\n"
	    "\n"
	    "[devices]\n"
	    "mode = relay\n"
	    "bind = :8888, [::1]:8889\n"
	    "slow_consumer = block\n"
	    "grace = 2.5\n"
	    "takeover = refuse\n"
	    "last_value = on\n"
	    "queue_bytes = 64k\n"
	    "\n"
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:9443\n"
	    "cert = a.pem\n"
	    "key = a.key\n"
	    "cert = b.pem\n"
	    "key = b.key\n"
	    "backend = 127.0.0.1:8080, 127.0.0.1:8081\n"
	    "backend_tls = on\n"
	    "backend_ca = ca.pem\n"
	    "proxy_protocol = v2\n");

	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(cfg.workers, 2);
	cr_assert_eq(cfg.admin.port, 9100);
	cr_assert_str_eq(cfg.admin.host, "127.0.0.1");
	cr_assert_eq(cfg.log_level, 3);
	cr_assert_float_eq(cfg.drain_timeout, 1.5, 1e-9);
	cr_assert_eq(cfg.nlisteners, 2);
	struct config_listener *d = &cfg.listeners[0], *w = &cfg.listeners[1];
	cr_assert_str_eq(d->name, "devices");
	cr_assert_eq(d->mode, CONFIG_RELAY);
	cr_assert_eq(d->nbind, 2);
	cr_assert_str_eq(d->bind[0].host, "");
	cr_assert_eq(d->bind[0].port, 8888);
	cr_assert_str_eq(d->bind[1].host, "::1");
	cr_assert_eq(d->slow_consumer, CONFIG_SLOW_BLOCK);
	cr_assert_float_eq(d->grace, 2.5, 1e-9);
	cr_assert_eq(d->takeover, CONFIG_TAKEOVER_REFUSE);
	cr_assert(d->last_value);
	cr_assert_eq(d->queue_bytes, 65536);
	cr_assert_eq(w->mode, CONFIG_FORWARD);
	cr_assert_eq(w->ncert, 2);
	cr_assert_str_eq(w->cert[1], "b.pem");
	cr_assert_eq(w->nbackend, 2);
	cr_assert_eq(w->backend[1].addr.port, 8081);
	cr_assert(w->backend_tls);
	cr_assert_eq(w->proxy_protocol, CONFIG_PROXY_V2);
}

static void
expect_error(const char *text, const char *needle)
{
	cr_assert_eq(load(text), -1, "accepted: %s", text);
	cr_assert(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err,
	    needle);
}

Test(config, errors_name_line_and_key, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = :1\nbogus = 1\n",
	    "test.conf:4: [a] bogus: unknown key");
	expect_error("[a]\nmode = relay\nbind = :99999\n",
	    "test.conf:3: [a] bind:");
	expect_error("[a]\nmode = sideways\nbind = :1\n",
	    "test.conf:2: [a] mode: 'sideways' is not one of relay, forward");
	expect_error("[a]\nmode = relay\nbind = :1\ngrace = soon\n",
	    "[a] grace: 'soon' is not a number of seconds");
	expect_error("[a]\nmode = forward\nbind = :1\n",
	    "[a] backend: missing");
	expect_error("[a]\nmode = relay\nbind = :1\ncert = x.pem\n",
	    "1 certificates but 0 keys");
	expect_error("[a]\nmode = relay\nbind = :1\ncert = x\nkey = y\n"
	    "verify_client = required\n", "client_ca");
	expect_error("[ferry]\nworkers = -1\n[a]\nmode = relay\nbind = :1\n",
	    "test.conf:2: [ferry] workers");
	expect_error("[ferry]\nworkers = 1\n", "no listener");
	expect_error("[a]\nmode = relay\nthis line is wrong\nbind = :1\n",
	    "test.conf:3: syntax error");
	expect_error("[a]\nmode = relay\nbind = :1\nmax_uuid_bytes = 256\n",
	    "max_uuid_bytes: 256 is outside 1..255");
}

Test(config, default_and_missing_file, .timeout = 10)
{
	config_init(&cfg);
	cr_assert_eq(config_default(&cfg, "certs", err, sizeof(err)), 0, "%s",
	    err);
	cr_assert_eq(cfg.nlisteners, 2);
	cr_assert_eq(cfg.listeners[0].bind[0].port, 8888);
	cr_assert_eq(cfg.listeners[1].bind[0].port, 8443);
	cr_assert_eq(cfg.listeners[1].ncert, 1);
	config_init(&cfg);
	cr_assert_eq(config_load(&cfg, "/nonexistent/ferry.conf", err,
	    sizeof(err)), -1);
	cr_assert(strstr(err, "No such file") != NULL, "%s", err);
}

Test(config, long_lines, .timeout = 10)
{
	char text[4096];
	char ciphers[1500];

	memset(ciphers, 'A', sizeof(ciphers) - 1);
	ciphers[sizeof(ciphers) - 1] = '\0';
	snprintf(text, sizeof(text), "[a]\nmode = relay\nbind = :1\n"
	    "cert = a.pem\nkey = a.key\nciphers = %.500s\n", ciphers);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_eq(strlen(cfg.listeners[0].ciphers), 500);
}

Test(config, scopes_and_names, .timeout = 10)
{
	expect_error("[a]\nmode = forward\nbind = :1\nbackend = h:1\n"
	    "slow_consumer = drop\n",
	    "test.conf:5: [a] slow_consumer: only for relay listeners");
	expect_error("[a]\nbind = :1\nproxy_protocol = v1\nmode = relay\n",
	    "test.conf:3: [a] proxy_protocol: only for forward listeners");
	expect_error("[a]\nmode = relay\nbind = :1\nworkers = 2\n",
	    "test.conf:4: [a] workers: belongs in [ferry]");
	expect_error("[ferry]\nbind = :1\n[a]\nmode = relay\nbind = :1\n",
	    "test.conf:2: [ferry] bind: unknown key");
	expect_error("[a b]\nmode = relay\nbind = :1\n", "section name");
	expect_error("[a\"b]\nmode = relay\nbind = :1\n", "section name");
	expect_error("[a]\nmode = forward\nbind = :1\nbackend = :8080\n",
	    "test.conf:4: [a] backend: ':8080' needs a host");
	expect_error("[a]\nmode = forward\nbind = :1\nbackend = h:1\n"
	    "backend_sni = x\n", "backend_tls");
	cr_assert_eq(load("[web-1.a_b]\nmode = forward\nbind = :1\n"
	    "backend = localhost:80\n"), 0, "%s", err);
}

/* Errors found later (a certificate, a bind) name the key's own line. */
Test(config, lines_of_keys_for_later_errors, .timeout = 10)
{
	char msg[256];

	cr_assert_eq(load("[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[web]\n"
	    "mode = forward\n"
	    "cert = a.pem\n"
	    "key = a.key\n"
	    "bind = :1\n"
	    "cert = b.pem\n"
	    "key = b.key\n"
	    "backend = h:1, h:2\n"), 0, "%s", err);
	struct config_listener *l = &cfg.listeners[0];
	config_error(&cfg, l, "cert", 1, "bad", msg, sizeof(msg));
	cr_assert_str_eq(msg, "test.conf:8: [web] cert: bad");
	config_error(&cfg, l, "key", 0, "worse", msg, sizeof(msg));
	cr_assert_str_eq(msg, "test.conf:6: [web] key: worse");
	config_error(&cfg, l, "ciphers", 0, "unset", msg, sizeof(msg));
	cr_assert_str_eq(msg, "test.conf:3: [web] ciphers: unset");
	config_error(&cfg, NULL, "admin", 0, "in use", msg, sizeof(msg));
	cr_assert_str_eq(msg, "test.conf:2: [ferry] admin: in use");
}

/* The keys of a config file as written, commented out or not. */
static size_t
file_keys(const char *path, char keys[][40], size_t max)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	size_t n = 0;

	cr_assert_not_null(f, "%s", path);
	while (fgets(line, sizeof(line), f) != NULL && n < max) {
		char *p = line, key[40];
		if (*p == ';')
			p++;
		while (*p == ' ')
			p++;
		if (sscanf(p, "%39[a-z_] =", key) != 1 ||
		    strchr(p, '=') == NULL)
			continue;
		bool seen = false;
		for (size_t i = 0; i < n; i++)
			seen = seen || strcmp(keys[i], key) == 0;
		if (!seen)
			snprintf(keys[n++], 40, "%s", key);
	}
	fclose(f);
	return n;
}

static bool
in_table(const char *key)
{
	for (const struct config_key *k = config_keys; k->name; k++)
		if (strcmp(k->name, key) == 0)
			return true;
	return false;
}

/* A key defined in ferry.conf(5): its name, and the section it is in. */
struct man_key {
	char name[40];
	int scope;		/* enum config_scope, or -1 outside them */
	int line;
};

/* The section of ferry.conf(5) each scope's keys are documented in. */
static const char *const man_sections[] = {
	[CONFIG_SCOPE_PROCESS] = "PROCESS KEYS",
	[CONFIG_SCOPE_LISTENER] = "LISTENER KEYS",
	[CONFIG_SCOPE_RELAY] = "RELAY KEYS",
	[CONFIG_SCOPE_FORWARD] = "FORWARD KEYS",
	[CONFIG_SCOPE_CLUSTER] = "CLUSTER KEYS",
};
#define NSCOPES (sizeof(man_sections) / sizeof(man_sections[0]))

/*
 * The keys ferry.conf(5) defines: lines "*name* = ..." of its scdoc
 * source, outside literal blocks, each with the "# SECTION" it is in.
 */
static size_t
man_keys(const char *path, struct man_key *keys, size_t max)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int scope = -1, num = 0;
	bool literal = false;
	size_t n = 0;

	cr_assert_not_null(f, "%s", path);
	while (fgets(line, sizeof(line), f) != NULL) {
		char name[40];
		num++;
		line[strcspn(line, "\n")] = '\0';
		if (strcmp(line + strspn(line, "\t"), "```") == 0)
			literal = !literal;
		if (literal)
			continue;
		if (strncmp(line, "# ", 2) == 0) {
			scope = -1;
			for (int i = 0; i < (int)NSCOPES; i++)
				if (strcmp(line + 2, man_sections[i]) == 0)
					scope = i;
			continue;
		}
		if (sscanf(line, "*%39[a-z_]* =", name) != 1 ||
		    strncmp(line + 1 + strlen(name), "* =", 3) != 0)
			continue;
		cr_assert_lt(n, max, "%s: more key definitions than expected",
		    path);
		snprintf(keys[n].name, sizeof(keys[n].name), "%s", name);
		keys[n].scope = scope;
		keys[n].line = num;
		n++;
	}
	fclose(f);
	cr_assert(!literal, "%s: a literal block is not closed", path);
	return n;
}

static const struct config_key *
table_key(const char *name)
{
	for (const struct config_key *k = config_keys; k->name; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

Test(config, example_and_man_page_document_every_key, .timeout = 10)
{
	static const char man[] = FERRY_SRCDIR "/man/ferry.conf.5.scd";
	char keys[128][40];
	size_t n = file_keys(FERRY_SRCDIR "/ferry.conf.example", keys, 128);
	struct man_key mk[128];
	size_t nm = man_keys(man, mk, 128);

	/* None invented... */
	for (size_t i = 0; i < n; i++)
		cr_assert(in_table(keys[i]), "ferry.conf.example documents "
		    "'%s', which ferry does not know", keys[i]);
	/* ...none missing. */
	for (const struct config_key *k = config_keys; k->name; k++) {
		bool found = false;
		for (size_t i = 0; i < n; i++)
			found = found || strcmp(keys[i], k->name) == 0;
		cr_assert(found, "ferry.conf.example lacks '%s'", k->name);
	}
	/*
	 * ferry.conf(5): every key it defines is one ferry knows, defined
	 * once, in the section of its scope...
	 */
	for (size_t i = 0; i < nm; i++) {
		const struct config_key *k = table_key(mk[i].name);
		cr_assert_not_null(k, "ferry.conf.5.scd:%d documents '%s', "
		    "which ferry does not know", mk[i].line, mk[i].name);
		cr_assert_eq(mk[i].scope, (int)k->scope, "ferry.conf.5.scd:%d: "
		    "'%s' belongs in # %s", mk[i].line, mk[i].name,
		    man_sections[k->scope]);
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(mk[j].name, mk[i].name, "ferry.conf.5"
			    ".scd:%d: '%s' is defined twice (first on line %d)",
			    mk[i].line, mk[i].name, mk[j].line);
	}
	/* ...and every key ferry knows is there. */
	for (const struct config_key *k = config_keys; k->name; k++) {
		bool found = false;
		for (size_t i = 0; i < nm; i++)
			found = found || strcmp(mk[i].name, k->name) == 0;
		cr_assert(found, "ferry.conf(5) lacks '%s' (under # %s)",
		    k->name, man_sections[k->scope]);
	}
	/* And the file as shipped is valid. */
	config_init(&cfg);
	cr_assert_eq(config_load(&cfg, FERRY_SRCDIR "/ferry.conf.example", err,
	    sizeof(err)), 0, "%s", err);
}

/*
 * inih hands its handler 49 characters of a section name: two names that
 * differ after that were one listener.  Names are whole up to 63
 * characters, and longer ones are refused at their header.
 */
Test(config, long_section_names_stay_whole, .timeout = 10)
{
	char a[64], b[64], text[512];

	memset(a, 'n', 63);
	a[63] = '\0';
	memcpy(b, a, sizeof(b));
	a[62] = 'x';
	b[62] = 'y';
	snprintf(text, sizeof(text), "[%s]\nmode = relay\nbind = :1\n"
	    "[%s]\nmode = relay\nbind = :2\n", a, b);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_eq(cfg.nlisteners, 2);
	cr_assert_str_eq(cfg.listeners[0].name, a);
	cr_assert_str_eq(cfg.listeners[1].name, b);
	cr_assert_eq(cfg.listeners[0].nbind, 1);
	cr_assert_eq(cfg.listeners[1].bind[0].port, 2);
	snprintf(text, sizeof(text), "[a]\nmode = relay\nbind = :1\n"
	    "[%sz]\nmode = relay\nbind = :2\n", a);
	expect_error(text, "test.conf:4: section name longer than 63 "
	    "characters");
}

Test(config, section_written_twice, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = :1\n[b]\nmode = relay\n"
	    "bind = :2\n[a]\ngrace = 1\n",
	    "test.conf:7: [a] section: given twice (first on line 1)");
	expect_error("[ferry]\nworkers = 1\n[a]\nmode = relay\nbind = :1\n"
	    "[ferry]\nlog_level = warn\n",
	    "test.conf:6: [ferry] section: given twice (first on line 1)");
	/* Even with nothing in it the first time. */
	expect_error("[a]\n[a]\nmode = relay\nbind = :1\n",
	    "test.conf:2: [a] section: given twice");
}

Test(config, key_written_twice, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = :1\ngrace = 1\ngrace = 2\n",
	    "test.conf:5: [a] grace: given twice (first on line 4)");
	expect_error("[ferry]\nworkers = 1\nworkers = 2\n[a]\nmode = relay\n"
	    "bind = :1\n",
	    "test.conf:3: [ferry] workers: given twice (first on line 2)");
	expect_error("[a]\nmode = relay\nbind = :1\nbind = :2\n",
	    "test.conf:4: [a] bind: given twice (first on line 3); list");
	/* An indented line is a line of its own, not a continuation. */
	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\n  grace = 3\n"), 0,
	    "%s", err);
	cr_assert_float_eq(cfg.listeners[0].grace, 3, 1e-9);
	/* cert/key pairs repeat, one per SNI certificate. */
	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\ncert = a\nkey = a\n"
	    "cert = b\nkey = b\n"), 0, "%s", err);
}

/*
 * 0 would switch the registration and handshake deadline off (the
 * defence against slow and silent clients): refused, as is a connect
 * timeout of 0 (which forward refused only at start, against `backend`).
 */
Test(config, deadlines_of_zero_are_refused, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = :1\nhandshake_timeout = 0\n",
	    "test.conf:4: [a] handshake_timeout: must be more than 0");
	expect_error("[a]\nmode = forward\nbind = :1\nbackend = h:1\n"
	    "connect_timeout = 0\n",
	    "test.conf:5: [a] connect_timeout: must be more than 0");
	expect_error("[ferry]\nadmin_timeout = 0ms\n[a]\nmode = relay\n"
	    "bind = :1\n", "test.conf:2: [ferry] admin_timeout: must be more");
	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\n"
	    "handshake_timeout = 250ms\nidle_timeout = 0\n"), 0, "%s", err);
	cr_assert_float_eq(cfg.listeners[0].handshake_timeout, 0.25, 1e-9);
}

/* Numbers are decimal: no hex, exponent or infinity; counts no suffix. */
Test(config, numbers_are_decimal, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = :1\nhandshake_timeout = 0x10\n",
	    "handshake_timeout: '0x10' is not a number of seconds");
	expect_error("[a]\nmode = relay\nbind = :1\ngrace = 1e3\n",
	    "grace: '1e3' is not a number of seconds");
	expect_error("[a]\nmode = relay\nbind = :1\ngrace = inf\n",
	    "grace: 'inf' is not a number of seconds");
	expect_error("[a]\nmode = relay\nbind = :1\nqueue_bytes = 0x10\n",
	    "queue_bytes: '0x10' is not a size");
	expect_error("[a]\nmode = relay\nbind = :1\nmax_consumers = 0x10\n",
	    "max_consumers: '0x10' is not a whole number");
	expect_error("[a]\nmode = relay\nbind = :1\nmax_keys = 1k\n",
	    "max_keys: '1k' is not a whole number");
	expect_error("[a]\nmode = relay\nbind = :1\n"
	    "max_keys_bytes = 99999999999999999999\n",
	    "max_keys_bytes: 99999999999999999999 is outside 1..65536");
	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\nqueue_bytes = 8k\n"
	    "grace = .5\nmax_consumers = 10\n"), 0, "%s", err);
	cr_assert_eq(cfg.listeners[0].queue_bytes, 8192);
	cr_assert_float_eq(cfg.listeners[0].grace, 0.5, 1e-9);
}

/* getaddrinfo() would look 256.1.1.1 up as a name (and 10.1 is 10.0.0.1). */
Test(config, impossible_ipv4_addresses, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = 256.1.1.1:80\n",
	    "test.conf:3: [a] bind: '256.1.1.1' is not an IPv4 address");
	expect_error("[a]\nmode = relay\nbind = 10.1:80\n",
	    "bind: '10.1' is not an IPv4 address");
	expect_error("[ferry]\nadmin = 1.2.3.4.5:9\n[a]\nmode = relay\n"
	    "bind = :1\n", "test.conf:2: [ferry] admin: '1.2.3.4.5'");
	cr_assert_eq(load("[a]\nmode = relay\nbind = 127.0.0.1:1, "
	    "localhost:2, [::1]:3\n"), 0, "%s", err);
}

Test(config, tls_keys_need_tls, .timeout = 10)
{
	expect_error("[a]\nmode = relay\nbind = :1\nciphers = NULL\n",
	    "test.conf:4: [a] ciphers: needs TLS (cert and key)");
	expect_error("[a]\nmode = relay\nbind = :1\ntls_min_version = 1.3\n",
	    "test.conf:4: [a] tls_min_version: needs TLS");
	expect_error("[ferry]\ngroup = nogroup\n[a]\nmode = relay\n"
	    "bind = :1\n", "test.conf:2: [ferry] group: needs user");
}

Test(config, admin_keys, .timeout = 10)
{
	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\n"), 0, "%s", err);
	cr_assert_float_eq(cfg.admin_timeout, 10, 1e-9);
	cr_assert_eq(cfg.admin_max_connections, 16);
	cr_assert_eq(load("[ferry]\nadmin = 127.0.0.1:0\nadmin_timeout = 2.5\n"
	    "admin_max_connections = 3\n[a]\nmode = relay\nbind = :1\n"), 0,
	    "%s", err);
	cr_assert_float_eq(cfg.admin_timeout, 2.5, 1e-9);
	cr_assert_eq(cfg.admin_max_connections, 3);
	expect_error("[ferry]\nadmin_max_connections = 0\n[a]\nmode = relay\n"
	    "bind = :1\n", "admin_max_connections: 0 is outside 1..100000");
}

/* Lines inih would cut (and read the rest of as a line of its own). */
Test(config, overlong_line_is_refused, .timeout = 10)
{
	static char text[8192];
	int n = snprintf(text, sizeof(text), "[a]\nmode = relay\nbind = :1\n"
	    "ciphers = ");

	memset(text + n, 'A', 5000);
	memcpy(text + n + 5000, "\nbind = :2\n", 12);
	expect_error(text, "test.conf:4: line longer than");
}

Test(config, cluster_section, .timeout = 10)
{
	const struct config_cluster *cl = &cfg.cluster;

	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\n"), 0, "%s", err);
	cr_assert(!cl->set);
	cr_assert_eq(load(
	    "[cluster]\n"
	    "nats = nats://10.0.0.1:4222, tls://n2.example:4223,"
	    " [::1]:4224 , n4:1\n"
	    "node = edge-1.example:7\n"
	    "subject_prefix = prod.ferry_eu\n"
	    "nats_ca = ca.pem\n"
	    "nats_cert = c.pem\n"
	    "nats_key = c.key\n"
	    "nats_creds = ferry.creds\n"
	    "[a]\nmode = relay\nbind = :1\n"), 0, "%s", err);
	cr_assert(cl->set);
	cr_assert_eq(cl->nnats, 4);
	cr_assert_str_eq(cl->nats[0], "nats://10.0.0.1:4222");
	cr_assert_str_eq(cl->nats[1], "tls://n2.example:4223");
	cr_assert_str_eq(cl->nats[2], "nats://[::1]:4224");
	cr_assert_str_eq(cl->nats[3], "nats://n4:1");
	cr_assert_str_eq(cl->node, "edge-1.example:7");
	cr_assert_str_eq(cl->subject_prefix, "prod.ferry_eu");
	cr_assert_str_eq(cl->nats_creds, "ferry.creds");
	/* The defaults. */
	cr_assert_eq(load("[cluster]\nnats = h:4222\n[a]\nmode = relay\n"
	    "bind = :1\n"), 0, "%s", err);
	cr_assert_str_eq(cl->subject_prefix, "ferry");
	cr_assert_str_eq(cl->node, "");
	cr_assert_str_eq(cl->nats_user, "");
}

Test(config, cluster_refusals, .timeout = 10)
{
	static const char tail[] = "[a]\nmode = relay\nbind = :1\n";
	char text[512];
	static const struct { const char *body, *needle; } bad[] = {
		{ "node = x\n", "test.conf:1: [cluster] nats: missing" },
		{ "nats = http://h:80\n", "[cluster] nats: 'http://h:80': "
		    "the scheme is nats:// or tls://" },
		{ "nats = h\n", "test.conf:2: [cluster] nats:" },
		{ "nats = :4222\n", "needs a host and a port" },
		{ "nats = ,\n", "no server given" },
		{ "nats = h:1\nnode = a b\n", "test.conf:3: [cluster] node: "
		    "use printable ASCII" },
		{ "nats = h:1\nsubject_prefix = a..b\n", "subject_prefix: "
		    "'a..b' is not NATS subject tokens" },
		{ "nats = h:1\nsubject_prefix = a.*\n", "subject_prefix" },
		{ "nats = h:1\nsubject_prefix = .a\n", "subject_prefix" },
		{ "nats = h:1\nnats_cert = c.pem\n", "test.conf:3: [cluster] "
		    "nats_key: missing" },
		{ "nats = h:1\nnats_key = c.key\n", "[cluster] nats_cert: "
		    "missing" },
		{ "nats = h:1\nnats_user = u\n", "nats_password: missing" },
		{ "nats = h:1\nnats_token = t\nnats_creds = c\n",
		    "test.conf:4: [cluster] nats_creds: give one way" },
		{ "nats = h:1\nnats_user = u\nnats_password = p\n"
		    "nats_token = t\n", "[cluster] nats_token: give one way" },
		{ "nats = h:1\nnats_ca =\n", "nats_ca: empty value" },
		{ "nats = h:1\nworkers = 2\n", "test.conf:3: [cluster] "
		    "workers: belongs in [ferry]" },
		{ "nats = h:1\ngrace = 2\n", "grace: belongs in a listener" },
		{ "nats = h:1\nnats = h:2\n", "nats: given twice" },
		{ "nats = h:1\n[cluster]\n", "[cluster] section: given twice" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[cluster]\n%s%s", bad[i].body,
		    tail);
		expect_error(text, bad[i].needle);
	}
	expect_error("[ferry]\nnats = h:1\n[a]\nmode = relay\nbind = :1\n",
	    "test.conf:2: [ferry] nats: belongs in [cluster]");
	expect_error("[a]\nmode = relay\nbind = :1\nnode = x\n",
	    "test.conf:4: [a] node: belongs in [cluster]");
}

Test(config, log_keys, .timeout = 10)
{
	cr_assert_eq(load("[a]\nmode = relay\nbind = :1\n"), 0, "%s", err);
	cr_assert_eq(cfg.log_dest, LOG_TO_STDERR);
	cr_assert_eq(cfg.log_format, LOG_FORMAT_TEXT);
	cr_assert_eq(load("[ferry]\nlog = syslog\nlog_format = json\n[a]\n"
	    "mode = relay\nbind = :1\n"), 0, "%s", err);
	cr_assert_eq(cfg.log_dest, LOG_TO_SYSLOG);
	cr_assert_eq(cfg.log_format, LOG_FORMAT_JSON);
	cr_assert_eq(load("[ferry]\nlog = stderr\nlog_format = text\n[a]\n"
	    "mode = relay\nbind = :1\n"), 0, "%s", err);
	cr_assert_eq(cfg.log_dest, LOG_TO_STDERR);
	cr_assert_eq(cfg.log_format, LOG_FORMAT_TEXT);
	expect_error("[ferry]\nlog = /var/log/ferry.log\n[a]\nmode = relay\n"
	    "bind = :1\n", "test.conf:2: [ferry] log: '/var/log/ferry.log' is "
	    "not one of stderr, syslog");
	expect_error("[ferry]\n\nlog_format = xml\n[a]\nmode = relay\n"
	    "bind = :1\n", "test.conf:3: [ferry] log_format: 'xml' is not one "
	    "of text, json");
	expect_error("[a]\nmode = relay\nbind = :1\nlog = syslog\n",
	    "test.conf:4: [a] log:");
}
