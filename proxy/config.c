/* config: see config.h. */
#define _GNU_SOURCE
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_impl.h"
#include "log.h"
#include "netutil.h"

const struct config_key config_keys[] = {
	{ "workers", CONFIG_SCOPE_PROCESS },
	{ "max_restarts", CONFIG_SCOPE_PROCESS },
	{ "admin", CONFIG_SCOPE_PROCESS },
	{ "log_level", CONFIG_SCOPE_PROCESS },
	{ "log", CONFIG_SCOPE_PROCESS },
	{ "log_format", CONFIG_SCOPE_PROCESS },
	{ "user", CONFIG_SCOPE_PROCESS },
	{ "group", CONFIG_SCOPE_PROCESS },
	{ "drain_timeout", CONFIG_SCOPE_PROCESS },
	{ "admin_timeout", CONFIG_SCOPE_PROCESS },
	{ "admin_max_connections", CONFIG_SCOPE_PROCESS },
	{ "pid_file", CONFIG_SCOPE_PROCESS },
	{ "cert_watch", CONFIG_SCOPE_PROCESS },
	{ "ocsp_dir", CONFIG_SCOPE_PROCESS },
	{ "ocsp_timeout", CONFIG_SCOPE_PROCESS },
	{ "admin_token", CONFIG_SCOPE_PROCESS },
	{ "mode", CONFIG_SCOPE_LISTENER },
	{ "bind", CONFIG_SCOPE_LISTENER },
	{ "cert", CONFIG_SCOPE_LISTENER },
	{ "key", CONFIG_SCOPE_LISTENER },
	{ "client_ca", CONFIG_SCOPE_LISTENER },
	{ "verify_client", CONFIG_SCOPE_LISTENER },
	{ "tls_min_version", CONFIG_SCOPE_LISTENER },
	{ "ciphers", CONFIG_SCOPE_LISTENER },
	{ "ciphersuites", CONFIG_SCOPE_LISTENER },
	{ "alpn", CONFIG_SCOPE_LISTENER },
	{ "alpn_fallback", CONFIG_SCOPE_LISTENER },
	{ "accept_proxy", CONFIG_SCOPE_LISTENER },
	{ "unix_mode", CONFIG_SCOPE_LISTENER },
	{ "unix_owner", CONFIG_SCOPE_LISTENER },
	{ "client_crl", CONFIG_SCOPE_LISTENER },
	{ "ticket_keys", CONFIG_SCOPE_LISTENER },
	{ "ticket_rotate", CONFIG_SCOPE_LISTENER },
	{ "ocsp", CONFIG_SCOPE_LISTENER },
	{ "handshake_timeout", CONFIG_SCOPE_LISTENER },
	{ "idle_timeout", CONFIG_SCOPE_LISTENER },
	{ "max_connections", CONFIG_SCOPE_LISTENER },
	{ "max_connections_per_source", CONFIG_SCOPE_LISTENER },
	{ "access_log", CONFIG_SCOPE_LISTENER },
	{ "slow_consumer", CONFIG_SCOPE_RELAY },
	{ "queue_bytes", CONFIG_SCOPE_RELAY },
	{ "max_consumers", CONFIG_SCOPE_RELAY },
	{ "grace", CONFIG_SCOPE_RELAY },
	{ "takeover", CONFIG_SCOPE_RELAY },
	{ "last_value", CONFIG_SCOPE_RELAY },
	{ "max_uuid_bytes", CONFIG_SCOPE_RELAY },
	{ "max_keys_bytes", CONFIG_SCOPE_RELAY },
	{ "max_keys", CONFIG_SCOPE_RELAY },
	{ "acl", CONFIG_SCOPE_RELAY },
	{ "origins", CONFIG_SCOPE_RELAY },
	{ "max_message_bytes", CONFIG_SCOPE_RELAY },
	{ "backend", CONFIG_SCOPE_FORWARD },
	{ "connect_timeout", CONFIG_SCOPE_FORWARD },
	{ "fin_timeout", CONFIG_SCOPE_FORWARD },
	{ "backend_tls", CONFIG_SCOPE_FORWARD },
	{ "backend_ca", CONFIG_SCOPE_FORWARD },
	{ "backend_sni", CONFIG_SCOPE_FORWARD },
	{ "backend_cert", CONFIG_SCOPE_FORWARD },
	{ "backend_key", CONFIG_SCOPE_FORWARD },
	{ "proxy_protocol", CONFIG_SCOPE_FORWARD },
	{ "high_water", CONFIG_SCOPE_FORWARD },
	{ "backend_set", CONFIG_SCOPE_FORWARD },
	{ "route", CONFIG_SCOPE_FORWARD },
	{ "route_nomatch", CONFIG_SCOPE_FORWARD },
	{ "balance", CONFIG_SCOPE_FORWARD },
	{ "max_fails", CONFIG_SCOPE_FORWARD },
	{ "fail_timeout", CONFIG_SCOPE_FORWARD },
	{ "check_interval", CONFIG_SCOPE_FORWARD },
	{ "check", CONFIG_SCOPE_FORWARD },
	{ "proxy_tlvs", CONFIG_SCOPE_FORWARD },
	{ "nats", CONFIG_SCOPE_CLUSTER },
	{ "node", CONFIG_SCOPE_CLUSTER },
	{ "subject_prefix", CONFIG_SCOPE_CLUSTER },
	{ "nats_ca", CONFIG_SCOPE_CLUSTER },
	{ "nats_cert", CONFIG_SCOPE_CLUSTER },
	{ "nats_key", CONFIG_SCOPE_CLUSTER },
	{ "nats_user", CONFIG_SCOPE_CLUSTER },
	{ "nats_password", CONFIG_SCOPE_CLUSTER },
	{ "nats_token", CONFIG_SCOPE_CLUSTER },
	{ "nats_creds", CONFIG_SCOPE_CLUSTER },
	{ NULL, 0 },
};

/*
 * Every key but cert, key, ocsp, backend_set and route appears once per
 * section, cert, key and ocsp at most CONFIG_MAX_CERTS times, backend_set
 * CONFIG_MAX_SETS - 1 and route CONFIG_MAX_ROUTES: the line table never
 * runs out, so a key given twice is always found.
 */
_Static_assert(sizeof(config_keys) / sizeof(config_keys[0]) - 1 +
    3 * CONFIG_MAX_CERTS + CONFIG_MAX_SETS + CONFIG_MAX_ROUTES <=
    CONFIG_MAX_KEYLINES,
    "CONFIG_MAX_KEYLINES too small for every key of a section");

const struct config_key *
config_find_key(const char *name)
{
	for (const struct config_key *k = config_keys; k->name != NULL; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

static void
record_line(struct config_keyline *lines, size_t *n, const char *key,
    int line)
{
	/* Past the table, errors fall back to the section's line. */
	if (*n >= CONFIG_MAX_KEYLINES)
		return;
	snprintf(lines[*n].key, sizeof(lines[0].key), "%s", key);
	lines[*n].line = line;
	(*n)++;
}

int
config_find_line(const struct config_keyline *lines, size_t n, const char *key,
    size_t index)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(lines[i].key, key) == 0 && index-- == 0)
			return lines[i].line;
	return -1;
}

/* "FILE:LINE: [section] key: why", or without a key "FILE:LINE: why". */
int
config_fail(struct parse *p, const char *key, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	if (p->failed)
		return 0;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (key != NULL)
		snprintf(p->err, p->errlen, "%s:%d: [%s] %s: %s", p->label,
		    p->line, p->section, key, why);
	else
		snprintf(p->err, p->errlen, "%s:%d: %s", p->label, p->line,
		    why);
	p->failed = true;
	return 0;
}

/* ---- defaults ---- */

void
config_init(struct config *c)
{
	memset(c, 0, sizeof(*c));
	c->workers = 1;
	c->max_restarts = 100;
	c->log_level = LOG_INFO;
	c->drain_timeout = 30;
	c->admin_timeout = 10;
	c->admin_max_connections = 16;
	c->ocsp_timeout = 10;
}

void
config_listener_init(struct config_listener *l, const char *name)
{
	memset(l, 0, sizeof(*l));
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->verify = CONFIG_VERIFY_NONE;
	l->tls_min_version = 0x0303;
	l->handshake_timeout = 10;
	l->idle_timeout = 0;
	l->slow_consumer = CONFIG_SLOW_DROP;
	l->queue_bytes = 256 * 1024;
	l->max_consumers = 64;
	l->grace = 10;
	l->takeover = CONFIG_TAKEOVER_REPLACE;
	l->max_uuid = 255;
	l->max_keys_bytes = 65536;
	l->max_keys = 16384;
	l->max_message_bytes = 1024 * 1024;
	l->connect_timeout = 5;
	l->fin_timeout = 30;
	l->high_water = 256 * 1024;
	snprintf(l->set_name[0], sizeof(l->set_name[0]), "default");
	l->nsets = 1;
	l->fail_timeout = 10;
	l->ticket_rotate = 3600;
}

bool
config_addr_is_unix(const struct config_addr *a)
{
	return strncmp(a->host, "unix:", 5) == 0;
}

/* ---- sections ---- */

/* In the order of enum log_dest and enum log_format. */
static const char *const log_dests[] = { "stderr", "syslog", NULL };
static const char *const log_formats[] = { "text", "json", NULL };

static int
ferry_key(struct parse *p, const char *k, const char *v)
{
	struct config *c = p->c;

	if (!strcmp(k, "workers"))
		return config_parse_int(p, k, v, 0, 1024, &c->workers);
	if (!strcmp(k, "max_restarts"))
		return config_parse_int(p, k, v, 0, 1000000, &c->max_restarts);
	if (!strcmp(k, "admin")) {
		c->admin_set = true;
		return config_parse_addr(p, k, v, &c->admin);
	}
	if (!strcmp(k, "log_level")) {
		int l = log_level_parse(v);
		if (l < 0)
			return config_fail(p, k,
			    "'%s' is not one of error, warn, "
			    "info, debug", v);
		c->log_level = l;
		return 1;
	}
	if (!strcmp(k, "log"))
		return config_parse_choice(p, k, v, log_dests, &c->log_dest);
	if (!strcmp(k, "log_format"))
		return config_parse_choice(p, k, v, log_formats,
		    &c->log_format);
	if (!strcmp(k, "user"))
		return config_copy_str(p, k, v, c->user, sizeof(c->user));
	if (!strcmp(k, "group"))
		return config_copy_str(p, k, v, c->group, sizeof(c->group));
	if (!strcmp(k, "drain_timeout"))
		return config_parse_seconds(p, k, v, &c->drain_timeout);
	if (!strcmp(k, "admin_timeout"))
		return config_parse_deadline(p, k, v,
		    "an admin request from its "
		    "connection to its answer", &c->admin_timeout);
	if (!strcmp(k, "cert_watch"))
		return config_parse_bool(p, k, v, &c->cert_watch);
	if (!strcmp(k, "pid_file")) {
		if (*v != '/')
			return config_fail(p, k, "'%s' is not an absolute path",
			    v);
		return config_copy_str(p, k, v, c->pid_file,
		    sizeof(c->pid_file));
	}
	if (!strcmp(k, "admin_token")) {
		if (strlen(v) < 16)
			return config_fail(p, k, "shorter than 16 characters");
		return config_copy_str(p, k, v, c->admin_token,
		    sizeof(c->admin_token));
	}
	if (!strcmp(k, "admin_max_connections"))
		return config_parse_count(p, k, v, 1, 100000,
		    &c->admin_max_connections);
	if (!strcmp(k, "ocsp_dir")) {
		if (*v == '\0')
			return config_fail(p, k, "empty directory name");
		return config_copy_str(p, k, v, c->ocsp_dir,
		    sizeof(c->ocsp_dir));
	}
	if (!strcmp(k, "ocsp_timeout"))
		return config_parse_deadline(p, k, v, "an OCSP fetch",
		    &c->ocsp_timeout);
	return config_fail(p, k, "unknown key");
}

static int
cluster_key(struct parse *p, const char *k, const char *v)
{
	struct config_cluster *cl = &p->c->cluster;

	if (!strcmp(k, "nats"))
		return config_parse_nats_list(p, k, v, cl);
	if (!strcmp(k, "node"))
		return config_parse_node(p, k, v, cl->node, sizeof(cl->node));
	if (!strcmp(k, "subject_prefix"))
		return config_parse_prefix(p, k, v, cl->subject_prefix,
		    sizeof(cl->subject_prefix));
	if (*v == '\0')
		return config_fail(p, k, "empty value");
	if (!strcmp(k, "nats_ca"))
		return config_copy_str(p, k, v, cl->nats_ca,
		    sizeof(cl->nats_ca));
	if (!strcmp(k, "nats_cert"))
		return config_copy_str(p, k, v, cl->nats_cert,
		    sizeof(cl->nats_cert));
	if (!strcmp(k, "nats_key"))
		return config_copy_str(p, k, v, cl->nats_key,
		    sizeof(cl->nats_key));
	if (!strcmp(k, "nats_creds"))
		return config_copy_str(p, k, v, cl->nats_creds,
		    sizeof(cl->nats_creds));
	if (!strcmp(k, "nats_user"))
		return config_copy_str(p, k, v, cl->nats_user,
		    sizeof(cl->nats_user));
	if (!strcmp(k, "nats_password"))
		return config_copy_str(p, k, v, cl->nats_password,
		    sizeof(cl->nats_password));
	if (!strcmp(k, "nats_token"))
		return config_copy_str(p, k, v, cl->nats_token,
		    sizeof(cl->nats_token));
	return config_fail(p, k, "unknown key");
}

static const char *const modes[] = { "relay", "forward", NULL };
static const char *const verifies[] = { "none", "optional", "required", NULL };
static const char *const slows[] = { "drop", "disconnect", "block", NULL };
static const char *const takeovers[] = { "replace", "refuse", NULL };
static const char *const proxies[] = { "off", "v1", "v2", NULL };
static const char *const nomatches[] = { "default", "refuse", NULL };
static const char *const balances[] = { "roundrobin", "leastconn", NULL };
static const char *const checks[] = { "tcp", "tls", NULL };

static int
listener_key(struct parse *p, const char *k, const char *v)
{
	struct config_listener *l = p->cur;
	int i;

	if (!strcmp(k, "mode")) {
		if (!config_parse_choice(p, k, v, modes, &i))
			return 0;
		l->mode = (enum config_mode)i;
		l->mode_set = true;
		return 1;
	}
	if (!strcmp(k, "bind"))
		return config_parse_addr_list(p, k, v, l->bind, &l->nbind,
		    CONFIG_MAX_BINDS);
	if (!strcmp(k, "cert")) {
		if (l->ncert >= CONFIG_MAX_CERTS)
			return config_fail(p, k, "more than %d certificates",
			    CONFIG_MAX_CERTS);
		return config_copy_str(p, k, v, l->cert[l->ncert++],
		    CONFIG_PATH_LEN);
	}
	if (!strcmp(k, "key")) {
		if (l->nkey >= CONFIG_MAX_CERTS)
			return config_fail(p, k, "more than %d keys",
			    CONFIG_MAX_CERTS);
		return config_copy_str(p, k, v, l->key[l->nkey++],
		    CONFIG_PATH_LEN);
	}
	if (!strcmp(k, "client_ca"))
		return config_copy_str(p, k, v, l->client_ca,
		    sizeof(l->client_ca));
	if (!strcmp(k, "verify_client")) {
		if (!config_parse_choice(p, k, v, verifies, &i))
			return 0;
		l->verify = (enum config_verify)i;
		return 1;
	}
	if (!strcmp(k, "tls_min_version")) {
		if (!strcmp(v, "1.2"))
			l->tls_min_version = 0x0303;
		else if (!strcmp(v, "1.3"))
			l->tls_min_version = 0x0304;
		else
			return config_fail(p, k, "'%s' is not 1.2 or 1.3", v);
		return 1;
	}
	if (!strcmp(k, "ciphers"))
		return config_copy_str(p, k, v, l->ciphers, sizeof(l->ciphers));
	if (!strcmp(k, "ciphersuites"))
		return config_copy_str(p, k, v, l->ciphersuites,
		    sizeof(l->ciphersuites));
	if (!strcmp(k, "alpn"))
		return config_copy_str(p, k, v, l->alpn, sizeof(l->alpn));
	if (!strcmp(k, "alpn_fallback"))
		return config_parse_bool(p, k, v, &l->alpn_fallback);
	if (!strcmp(k, "accept_proxy"))
		return config_parse_bool(p, k, v, &l->accept_proxy);
	if (!strcmp(k, "unix_mode"))
		return config_parse_mode(p, k, v, &l->unix_mode);
	if (!strcmp(k, "unix_owner")) {
		if (*v == '\0')
			return config_fail(p, k, "empty owner");
		return config_copy_str(p, k, v, l->unix_owner,
		    sizeof(l->unix_owner));
	}
	if (!strcmp(k, "client_crl"))
		return config_copy_str(p, k, v, l->client_crl,
		    sizeof(l->client_crl));
	if (!strcmp(k, "ticket_keys")) {
		if (*v == '\0')
			return config_fail(p, k, "empty file name");
		return config_copy_str(p, k, v, l->ticket_keys,
		    sizeof(l->ticket_keys));
	}
	if (!strcmp(k, "ticket_rotate"))
		return config_parse_seconds(p, k, v, &l->ticket_rotate);
	if (!strcmp(k, "ocsp")) {
		if (l->nocsp >= CONFIG_MAX_CERTS)
			return config_fail(p, k, "more than %d values",
			    CONFIG_MAX_CERTS);
		if (*v == '\0')
			return config_fail(p, k,
			    "empty: give off, auto or a file");
		return config_copy_str(p, k, v, l->ocsp[l->nocsp++],
		    CONFIG_PATH_LEN);
	}
	if (!strcmp(k, "handshake_timeout"))
		return config_parse_deadline(p, k, v,
		    "the TLS handshake and the "
		    "relay registration (the defence against slow and silent "
		    "clients)", &l->handshake_timeout);
	if (!strcmp(k, "idle_timeout"))
		return config_parse_seconds(p, k, v, &l->idle_timeout);
	if (!strcmp(k, "max_connections"))
		return config_parse_count(p, k, v, 0, 10000000,
		    &l->max_connections);
	if (!strcmp(k, "max_connections_per_source"))
		return config_parse_count(p, k, v, 0, 10000000,
		    &l->max_per_source);
	if (!strcmp(k, "access_log")) {
		if (*v == '\0')
			return config_fail(p, k, "empty file name");
		return config_copy_str(p, k, v, l->access_log,
		    sizeof(l->access_log));
	}
	/* relay */
	if (!strcmp(k, "slow_consumer")) {
		if (!config_parse_choice(p, k, v, slows, &i))
			return 0;
		l->slow_consumer = (enum config_slow)i;
		return 1;
	}
	if (!strcmp(k, "queue_bytes"))
		return config_parse_size(p, k, v, 4, 1 << 30, &l->queue_bytes);
	if (!strcmp(k, "max_consumers"))
		return config_parse_count(p, k, v, 1, 100000,
		    &l->max_consumers);
	if (!strcmp(k, "grace"))
		return config_parse_seconds(p, k, v, &l->grace);
	if (!strcmp(k, "takeover")) {
		if (!config_parse_choice(p, k, v, takeovers, &i))
			return 0;
		l->takeover = (enum config_takeover)i;
		return 1;
	}
	if (!strcmp(k, "last_value"))
		return config_parse_bool(p, k, v, &l->last_value);
	if (!strcmp(k, "max_uuid_bytes"))
		return config_parse_size(p, k, v, 1, 255, &l->max_uuid);
	if (!strcmp(k, "max_keys_bytes"))
		return config_parse_size(p, k, v, 1, 65536, &l->max_keys_bytes);
	if (!strcmp(k, "max_keys"))
		return config_parse_count(p, k, v, 1, 16384, &l->max_keys);
	if (!strcmp(k, "origins"))
		return config_copy_str(p, k, v, l->origins, sizeof(l->origins));
	if (!strcmp(k, "max_message_bytes"))
		return config_parse_size(p, k, v, 4, 1 << 30,
		    &l->max_message_bytes);
	if (!strcmp(k, "acl")) {
		if (*v == '\0')
			return config_fail(p, k, "empty file name");
		return config_copy_str(p, k, v, l->acl, sizeof(l->acl));
	}
	/* forward */
	if (!strcmp(k, "backend"))
		return config_parse_backend_list(p, k, v, l, 0);
	if (!strcmp(k, "backend_set"))
		return config_parse_backend_set(p, k, v, l);
	if (!strcmp(k, "route"))
		return config_parse_route(p, k, v, l);
	if (!strcmp(k, "route_nomatch")) {
		if (!config_parse_choice(p, k, v, nomatches, &i))
			return 0;
		l->route_refuse = i == 1;
		return 1;
	}
	if (!strcmp(k, "balance")) {
		if (!config_parse_choice(p, k, v, balances, &i))
			return 0;
		l->balance = (enum config_balance)i;
		return 1;
	}
	if (!strcmp(k, "max_fails"))
		return config_parse_count(p, k, v, 0, 1000, &l->max_fails);
	if (!strcmp(k, "fail_timeout"))
		return config_parse_deadline(p, k, v,
		    "how long failures are counted "
		    "and a failed backend stays down", &l->fail_timeout);
	if (!strcmp(k, "check_interval"))
		return config_parse_seconds(p, k, v, &l->check_interval);
	if (!strcmp(k, "check")) {
		if (!config_parse_choice(p, k, v, checks, &i))
			return 0;
		l->check = (enum config_check)i;
		return 1;
	}
	if (!strcmp(k, "proxy_tlvs"))
		return config_parse_bool(p, k, v, &l->proxy_tlvs);
	if (!strcmp(k, "connect_timeout"))
		return config_parse_deadline(p, k, v,
		    "a backend's connect and TLS "
		    "handshake", &l->connect_timeout);
	if (!strcmp(k, "fin_timeout"))
		return config_parse_seconds(p, k, v, &l->fin_timeout);
	if (!strcmp(k, "backend_tls"))
		return config_parse_bool(p, k, v, &l->backend_tls);
	if (!strcmp(k, "backend_ca"))
		return config_copy_str(p, k, v, l->backend_ca,
		    sizeof(l->backend_ca));
	if (!strcmp(k, "backend_sni"))
		return config_copy_str(p, k, v, l->backend_sni,
		    sizeof(l->backend_sni));
	if (!strcmp(k, "backend_cert"))
		return config_copy_str(p, k, v, l->backend_cert,
		    sizeof(l->backend_cert));
	if (!strcmp(k, "backend_key"))
		return config_copy_str(p, k, v, l->backend_key,
		    sizeof(l->backend_key));
	if (!strcmp(k, "proxy_protocol")) {
		if (!config_parse_choice(p, k, v, proxies, &i))
			return 0;
		l->proxy_protocol = (enum config_proxy)i;
		return 1;
	}
	if (!strcmp(k, "high_water"))
		return config_parse_size(p, k, v, 1024, 1 << 30,
		    &l->high_water);
	return config_fail(p, k, "unknown key");
}

/*
 * A [section] header, read by the line readers below rather than left to
 * inih: inih copies a name into 50 bytes and hands its handler the first
 * 49 characters, so two long names that differ late would read as one
 * section.  Here the name is taken whole (up to CONFIG_NAME_LEN - 1
 * characters, longer is refused), and the section opens at its header,
 * once: a name given twice is an error, even for a section without keys.
 */
static bool
open_section(struct parse *p, const char *line)
{
	static const char name_chars[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
	const char *name = line + 1, *close = strchr(name, ']'), *rest;
	struct config *c = p->c;
	size_t len;

	if (close == NULL)
		return config_fail(p, NULL, "syntax error: '[' without ']'");
	for (rest = close + 1; isspace((unsigned char)*rest); rest++)
		;
	if (*rest != '\0' && *rest != ';' && *rest != '#')
		return config_fail(p, NULL, "syntax error: text after ']'");
	len = (size_t)(close - name);
	if (len == 0)
		return config_fail(p, NULL, "empty section name");
	if (len >= CONFIG_NAME_LEN)
		return config_fail(p, NULL, "section name longer than %d "
		    "characters: [%.*s...]", CONFIG_NAME_LEN - 1,
		    CONFIG_NAME_LEN - 1, name);
	memcpy(p->section, name, len);
	p->section[len] = '\0';
	/* Names go into logs and metric labels as they are. */
	if (strspn(p->section, name_chars) != len)
		return config_fail(p, "section name",
		    "use letters, digits, '-', '_' "
		    "and '.'");
	p->cur = NULL;
	p->in_cluster = false;
	if (!strcmp(p->section, "cluster")) {
		if (c->cluster.set)
			return config_fail(p, "section",
			    "given twice (first on line "
			    "%d)", c->cluster.line);
		c->cluster.set = true;
		c->cluster.line = p->line;
		snprintf(c->cluster.subject_prefix,
		    sizeof(c->cluster.subject_prefix), "ferry");
		p->in_cluster = true;
		return true;
	}
	if (!strcmp(p->section, "ferry")) {
		if (p->ferry_line > 0)
			return config_fail(p, "section",
			    "given twice (first on line "
			    "%d)", p->ferry_line);
		p->ferry_line = p->line;
		return true;
	}
	for (size_t i = 0; i < c->nlisteners; i++)
		if (!strcmp(c->listeners[i].name, p->section))
			return config_fail(p, "section",
			    "given twice (first on line "
			    "%d): a listener is one section",
			    c->listeners[i].line);
	if (c->nlisteners >= CONFIG_MAX_LISTENERS)
		return config_fail(p, "section", "more than %d listeners",
		    CONFIG_MAX_LISTENERS);
	p->cur = &c->listeners[c->nlisteners++];
	config_listener_init(p->cur, p->section);
	p->cur->line = p->line;
	return true;
}

/*
 * A key is given once per section: a second one used to win silently.
 * cert and key repeat by design (one pair per SNI certificate).
 */
static int
first_time(struct parse *p, const struct config_keyline *lines, size_t n,
    const char *key)
{
	int first;

	if (!strcmp(key, "cert") || !strcmp(key, "key") ||
	    !strcmp(key, "backend_set") || !strcmp(key, "route") ||
	    !strcmp(key, "ocsp"))
		return 1;
	first = config_find_line(lines, n, key, 0);
	if (first < 0)
		return 1;
	return config_fail(p, key, "given twice (first on line %d)%s", first,
	    !strcmp(key, "bind") || !strcmp(key, "backend") ?
	    "; list several addresses in one line, separated by commas" : "");
}

static int
on_value(void *user, const char *section, const char *name,
    const char *value)
{
	struct parse *p = user;
	const struct config_key *k;
	struct config_keyline *lines;
	size_t *nlines;

	if (p->failed)
		return 1;	/* keep the first error */
	if (p->section[0] == '\0')
		return config_fail(p, name, "key outside any [section]");
	/* inih's copy of the name is ours, or its first 49 characters. */
	if (strncmp(section, p->section, strlen(section)) != 0)
		return config_fail(p, name, "section name read as [%s]",
		    section);
	k = config_find_key(name);
	if (p->in_cluster) {
		if (k == NULL || k->scope != CONFIG_SCOPE_CLUSTER)
			return config_fail(p, name, k == NULL ? "unknown key" :
			    k->scope == CONFIG_SCOPE_PROCESS ?
			    "belongs in [ferry]" : "belongs in a listener");
		lines = p->c->cluster.lines;
		nlines = &p->c->cluster.nlines;
	} else if (p->cur == NULL) {
		if (k == NULL || k->scope != CONFIG_SCOPE_PROCESS)
			return config_fail(p, name, k != NULL &&
			    k->scope == CONFIG_SCOPE_CLUSTER ?
			    "belongs in [cluster]" : "unknown key");
		lines = p->c->lines;
		nlines = &p->c->nlines;
	} else {
		if (k == NULL || k->scope == CONFIG_SCOPE_PROCESS ||
		    k->scope == CONFIG_SCOPE_CLUSTER)
			return config_fail(p, name, k == NULL ? "unknown key" :
			    k->scope == CONFIG_SCOPE_PROCESS ?
			    "belongs in [ferry]" : "belongs in [cluster]");
		lines = p->cur->lines;
		nlines = &p->cur->nlines;
	}
	if (!first_time(p, lines, *nlines, name))
		return 0;
	record_line(lines, nlines, name, p->line);
	if (p->in_cluster)
		return cluster_key(p, name, value);
	return p->cur == NULL ? ferry_key(p, name, value) :
	    listener_key(p, name, value);
}

/*
 * The line readers inih calls: they count lines (inih's handler does not
 * get them), refuse a line inih would cut or misread, and handle section
 * headers (open_section).  Returning NULL ends the parse.
 */
/* `line`: len bytes and a NUL, unless len is over the limit. */
static bool
note_line(struct parse *p, const char *line, size_t len, int num)
{
	p->line++;
	if (len > (size_t)num - 1)
		return config_fail(p, NULL, "line longer than %d bytes",
		    num - 2);
	if (memchr(line, '\0', len) != NULL)
		return config_fail(p, NULL, "NUL byte in the line");
	if (p->line == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
		line += 3;	/* a UTF-8 byte order mark (inih skips it) */
	line += strspn(line, " \t");
	if (*line == '[')
		return open_section(p, line);
	return true;
}

static char *
read_file_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	ssize_t n = getline(&p->buf, &p->bufcap, p->fp);

	if (n <= 0 || !note_line(p, p->buf, (size_t)n, num))
		return NULL;
	memcpy(str, p->buf, (size_t)n + 1);
	return str;
}

static char *
read_string_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	const char *nl;
	size_t n;

	if (*p->text == '\0')
		return NULL;
	nl = strchr(p->text, '\n');
	n = nl ? (size_t)(nl - p->text) + 1 : strlen(p->text);
	if (n <= (size_t)num - 1) {
		memcpy(str, p->text, n);
		str[n] = '\0';
	}
	p->text += n;
	return note_line(p, str, n, num) ? str : NULL;
}

/*
 * inih's settings, process-wide: lines up to CONFIG_MAX_LINE (long cipher
 * lists and paths; its default is 200 bytes), and no continuation lines,
 * so that an indented line is a line of its own, never part of the value
 * above it (a key given on two lines would read as given twice).
 */
static void
ini_setup(void)
{
	ini_use_stack = false;
	ini_max_line = CONFIG_MAX_LINE;
	ini_initial_alloc = CONFIG_MAX_LINE;
	ini_allow_multiline = false;
}

int
config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	struct parse p = { .c = c, .label = path, .err = err,
	    .errlen = errlen };
	int rc;

	snprintf(c->path, sizeof(c->path), "%s", path);
	snprintf(c->label, sizeof(c->label), "%s", path);
	ini_setup();
	p.fp = fopen(path, "r");
	if (p.fp == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	rc = ini_parse_stream(read_file_line, &p, on_value, &p);
	if (ferror(p.fp) && !p.failed) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		p.failed = true;
	}
	fclose(p.fp);
	free(p.buf);
	return config_finish(&p, rc);
}

int
config_load_string(struct config *c, const char *text, const char *label,
    char *err, size_t errlen)
{
	struct parse p = { .c = c, .label = label, .err = err,
	    .errlen = errlen, .text = text };

	snprintf(c->label, sizeof(c->label), "%s", label);
	ini_setup();
	return config_finish(&p, ini_parse_stream(read_string_line, &p,
	    on_value,
	    &p));
}

int
config_default(struct config *c, const char *certdir, char *err,
    size_t errlen)
{
	char text[2048];

	snprintf(text, sizeof(text),
	    "[devices]\n"
	    "mode = relay\n"
	    "bind = :8888\n"
	    "\n"
	    "[devices-tls]\n"
	    "mode = relay\n"
	    "bind = :8443\n"
	    "cert = %s/server.pem\n"
	    "key = %s/server.key\n", certdir, certdir);
	return config_load_string(c, text, "(embedded default)", err, errlen);
}