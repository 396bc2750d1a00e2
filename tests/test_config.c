/* The config file: every key parsed, every bad value refused with its
 * file, line, section and key. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "config.h"

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
	cr_assert_eq(w->backend[1].port, 8081);
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
	    "ciphers = %.500s\n", ciphers);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_eq(strlen(cfg.listeners[0].ciphers), 500);
}
