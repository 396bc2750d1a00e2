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

#include "log.h"
#include "netutil.h"

/*
 * Longest line, '\n' included: inih needs one byte more for the '\0'.  A
 * longer line is refused (inih would cut it and read the rest as a line of
 * its own).
 */
#define CONFIG_MAX_LINE 4096

struct parse {
	struct config *c;
	const char *label;		/* file name for messages */
	int line;			/* current line (counted by the reader) */
	int ferry_line;			/* of the [ferry] header, or 0 */
	bool in_cluster;		/* the section being read is [cluster] */
	/*
	 * The section being read, as the reader saw its header (whole: see
	 * open_section), and its listener (NULL for [ferry]).
	 */
	char section[CONFIG_NAME_LEN];
	struct config_listener *cur;
	char *err;
	size_t errlen;
	bool failed;
	/* input: a string, or a file read with getline() into buf */
	const char *text;
	FILE *fp;
	char *buf;
	size_t bufcap;
};

static int fail(struct parse *p, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

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

static const struct config_key *
find_key(const char *name)
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

static int
find_line(const struct config_keyline *lines, size_t n, const char *key,
    size_t index)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(lines[i].key, key) == 0 && index-- == 0)
			return lines[i].line;
	return -1;
}

void
config_error(const struct config *c, const struct config_listener *l,
    const char *key, size_t index, const char *why, char *err,
    size_t errlen)
{
	int line = l != NULL ? find_line(l->lines, l->nlines, key, index) :
	    find_line(c->lines, c->nlines, key, index);

	if (line < 0)
		line = l != NULL ? l->line : 1;
	snprintf(err, errlen, "%s:%d: [%s] %s: %s", c->label, line,
	    l != NULL ? l->name : "ferry", key, why);
}

void
config_cluster_error(const struct config *c, const char *key,
    const char *why, char *err, size_t errlen)
{
	int line = find_line(c->cluster.lines, c->cluster.nlines, key, 0);

	if (line < 0)
		line = c->cluster.line > 0 ? c->cluster.line : 1;
	snprintf(err, errlen, "%s:%d: [cluster] %s: %s", c->label, line, key,
	    why);
}

/* "FILE:LINE: [section] key: why", or without a key "FILE:LINE: why". */
static int
fail(struct parse *p, const char *key, const char *fmt, ...)
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

/* ---- value parsers ---- */

static int
parse_bool(struct parse *p, const char *key, const char *v, bool *out)
{
	if (!strcasecmp(v, "on") || !strcasecmp(v, "yes") ||
	    !strcasecmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return 1;
	}
	if (!strcasecmp(v, "off") || !strcasecmp(v, "no") ||
	    !strcasecmp(v, "false") || !strcmp(v, "0")) {
		*out = false;
		return 1;
	}
	return fail(p, key, "'%s' is not on/off", v);
}

/*
 * Numbers are decimal, written as people write them: strtod and strtoull
 * would also take "0x10", "1e3", "inf" or a leading '+' or blank, none of
 * which a configuration means.  Returns the length of the digits (with
 * `fraction`, an optional '.' and more digits) at the start of v, 0 if
 * there are none.
 */
static size_t
decimal_len(const char *v, bool fraction)
{
	size_t n = strspn(v, "0123456789"), digits = n;

	if (fraction && v[n] == '.') {
		size_t f = strspn(v + n + 1, "0123456789");
		digits += f;
		n += 1 + f;
	}
	return digits > 0 ? n : 0;
}

static int
parse_seconds(struct parse *p, const char *key, const char *v, double *out)
{
	size_t n = decimal_len(v, true);
	double d = strtod(v, NULL);

	if (n == 0 || (v[n] != '\0' && strcmp(v + n, "s") != 0 &&
	    strcmp(v + n, "ms") != 0))
		return fail(p, key, "'%s' is not a number of seconds (decimal, "
		    "as 10, 2.5 or 250ms)", v);
	if (strcmp(v + n, "ms") == 0)
		d /= 1000;
	if (!isfinite(d) || d > 86400 * 365)
		return fail(p, key, "%s is more than a year", v);
	*out = d;
	return 1;
}

/* A time that bounds something: 0 would turn the bound off. */
static int
parse_deadline(struct parse *p, const char *key, const char *v,
    const char *what, double *out)
{
	double d;

	if (!parse_seconds(p, key, v, &d))
		return 0;
	if (d <= 0)
		return fail(p, key, "must be more than 0: it bounds %s", what);
	*out = d;
	return 1;
}

static int
parse_size(struct parse *p, const char *key, const char *v, size_t min,
    size_t max, size_t *out)
{
	size_t len = decimal_len(v, false);
	const char *end = v + len;
	unsigned long long n;
	unsigned long long mult = 1;

	if (len == 0)
		return fail(p, key, "'%s' is not a size (decimal, with an "
		    "optional k or m: 65536, 64k)", v);
	n = len > 12 ? ~0ULL : strtoull(v, NULL, 10);
	if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") ||
	    !strcasecmp(end, "kib"))
		mult = 1024;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") ||
	    !strcasecmp(end, "mib"))
		mult = 1024 * 1024;
	else if (*end != '\0')
		return fail(p, key, "'%s' is not a size (decimal, with an "
		    "optional k or m: 65536, 64k)", v);
	if (n > max / mult || n * mult < min || n * mult > max)
		return fail(p, key, "%s is outside %zu..%zu", v, min, max);
	*out = (size_t)(n * mult);
	return 1;
}

/* A count (workers, connections, consumers): decimal digits, no suffix. */
static int
parse_count(struct parse *p, const char *key, const char *v, size_t min,
    size_t max, size_t *out)
{
	size_t len = decimal_len(v, false);
	unsigned long long n;

	if (len == 0 || v[len] != '\0')
		return fail(p, key, "'%s' is not a whole number (decimal "
		    "digits only)", v);
	n = len > 12 ? ~0ULL : strtoull(v, NULL, 10);
	if (n < min || n > max)
		return fail(p, key, "%s is outside %zu..%zu", v, min, max);
	*out = (size_t)n;
	return 1;
}

static int
parse_int(struct parse *p, const char *key, const char *v, int min, int max,
    int *out)
{
	size_t n;

	if (!parse_count(p, key, v, (size_t)min, (size_t)max, &n))
		return 0;
	*out = (int)n;
	return 1;
}

static int
parse_addr(struct parse *p, const char *key, const char *v,
    struct config_addr *a)
{
	char why[256];

	if (strncmp(v, "unix:", 5) == 0) {
		/* sun_path holds 107 bytes and the NUL. */
		if (v[5] != '/')
			return fail(p, key, "'%s': a unix socket's path must "
			    "be absolute", v);
		if (strlen(v + 5) > 107)
			return fail(p, key, "'%s': a unix socket's path is at "
			    "most 107 bytes", v);
		snprintf(a->host, sizeof(a->host), "%s", v);
		a->port = 0;
		return 1;
	}

	if (netutil_parse_hostport(v, a->host, sizeof(a->host), &a->port,
	    why, sizeof(why)) < 0)
		return fail(p, key, "%s", why);
	/*
	 * getaddrinfo() would look "256.1.1.1" up as a host name, and take
	 * "10.1" for 10.0.0.1: digits and dots must be a dotted quad.
	 */
	if (a->host[0] != '\0' &&
	    strspn(a->host, "0123456789.") == strlen(a->host)) {
		struct in_addr in;
		if (inet_pton(AF_INET, a->host, &in) != 1)
			return fail(p, key, "'%s' is not an IPv4 address",
			    a->host);
	}
	return 1;
}

/* "a, b, c" -> each trimmed item through parse_addr. */
static int
parse_addr_list(struct parse *p, const char *key, const char *v,
    struct config_addr *list, size_t *n, size_t max)
{
	char buf[1024];
	char *save = NULL;

	if (strlen(v) >= sizeof(buf))
		return fail(p, key, "value too long");
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		char *e = tok + strlen(tok);
		while (e > tok && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (*tok == '\0')
			return fail(p, key, "empty address in list");
		if (*n >= max)
			return fail(p, key, "more than %zu addresses", max);
		if (!parse_addr(p, key, tok, &list[*n]))
			return 0;
		(*n)++;
	}
	if (*n == 0)
		return fail(p, key, "no address given");
	return 1;
}

static const char *const set_chars = "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";

/* "ADDRESS [weight=N] [backup]": one item of a backend list. */
static int
parse_backend(struct parse *p, const char *key, char *item,
    struct config_backend *b, int set)
{
	char *save = NULL, *tok = strtok_r(item, " \t", &save);

	memset(b, 0, sizeof(*b));
	b->set = set;
	b->weight = 1;
	if (tok == NULL)
		return fail(p, key, "empty address in list");
	if (!parse_addr(p, key, tok, &b->addr))
		return 0;
	while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
		size_t w;
		if (!strcmp(tok, "backup")) {
			b->backup = true;
		} else if (!strncmp(tok, "weight=", 7)) {
			if (!parse_count(p, key, tok + 7, 1, 256, &w))
				return 0;
			b->weight = (unsigned)w;
		} else {
			return fail(p, key, "'%s' is not weight=N or backup",
			    tok);
		}
	}
	return 1;
}

/* A comma-separated list of backends into `set`. */
static int
parse_backend_list(struct parse *p, const char *key, const char *v,
    struct config_listener *l, int set)
{
	char buf[2048];
	char *save = NULL;
	size_t before = l->nbackend;

	if (strlen(v) >= sizeof(buf))
		return fail(p, key, "value too long");
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (l->nbackend >= CONFIG_MAX_BACKENDS)
			return fail(p, key, "more than %d backends in all",
			    CONFIG_MAX_BACKENDS);
		if (!parse_backend(p, key, tok, &l->backend[l->nbackend], set))
			return 0;
		l->nbackend++;
	}
	if (l->nbackend == before)
		return fail(p, key, "no address given");
	return 1;
}

/* "NAME: backend list" */
static int
parse_backend_set(struct parse *p, const char *key, const char *v,
    struct config_listener *l)
{
	const char *colon = strchr(v, ':');
	size_t len = colon ? (size_t)(colon - v) : 0;

	if (colon == NULL || len == 0 || len >= CONFIG_SET_NAME ||
	    strspn(v, set_chars) != len)
		return fail(p, key, "'%s' is not NAME: backends (a name of "
		    "letters, digits, '-', '_', '.')", v);
	for (size_t i = 0; i < l->nsets; i++)
		if (strlen(l->set_name[i]) == len &&
		    !strncmp(l->set_name[i], v, len))
			return fail(p, key, "set '%.*s' given twice", (int)len,
			    v);
	if (l->nsets >= CONFIG_MAX_SETS)
		return fail(p, key, "more than %d backend sets",
		    CONFIG_MAX_SETS - 1);
	memcpy(l->set_name[l->nsets], v, len);
	l->set_name[l->nsets][len] = '\0';
	l->nsets++;
	colon++;
	colon += strspn(colon, " \t");
	return parse_backend_list(p, key, colon, l, (int)l->nsets - 1);
}

/* "sni:NAME -> SET" or "alpn:PROTO -> SET"; SET resolved later. */
static int
parse_route(struct parse *p, const char *key, const char *v,
    struct config_listener *l)
{
	struct config_route *r;
	const char *arrow = strstr(v, "->"), *m, *end, *set;
	size_t mlen;

	if (l->nroutes >= CONFIG_MAX_ROUTES)
		return fail(p, key, "more than %d routes", CONFIG_MAX_ROUTES);
	r = &l->route[l->nroutes];
	memset(r, 0, sizeof(*r));
	if (!strncmp(v, "sni:", 4)) {
		r->kind = CONFIG_ROUTE_SNI;
		m = v + 4;
	} else if (!strncmp(v, "alpn:", 5)) {
		r->kind = CONFIG_ROUTE_ALPN;
		m = v + 5;
	} else {
		return fail(p, key, "'%s' is not sni:NAME -> SET or "
		    "alpn:PROTOCOL -> SET", v);
	}
	if (arrow == NULL)
		return fail(p, key, "'%s': no '-> SET'", v);
	for (end = arrow; end > m && (end[-1] == ' ' || end[-1] == '\t');
	    end--)
		;
	mlen = (size_t)(end - m);
	if (mlen == 0 || mlen >= sizeof(r->match) ||
	    memchr(m, ' ', mlen) != NULL)
		return fail(p, key, "'%s': an empty or bad name to match", v);
	memcpy(r->match, m, mlen);
	set = arrow + 2;
	set += strspn(set, " \t");
	if (*set == '\0' || strlen(set) >= CONFIG_SET_NAME ||
	    strspn(set, set_chars) != strlen(set))
		return fail(p, key, "'%s': a bad set name", v);
	snprintf(r->set_name, sizeof(r->set_name), "%s", set);
	r->line = p->line;
	l->nroutes++;
	return 1;
}

/* An octal mode for chmod: 0 to 0777. */
static int
parse_mode(struct parse *p, const char *key, const char *v, unsigned *out)
{
	size_t n = strspn(v, "01234567");
	unsigned long m;

	if (n == 0 || v[n] != '\0' || n > 4)
		return fail(p, key, "'%s' is not an octal mode (0660)", v);
	m = strtoul(v, NULL, 8);
	if (m > 0777)
		return fail(p, key, "'%s' is more than 0777", v);
	*out = (unsigned)m;
	return 1;
}

static int
parse_choice(struct parse *p, const char *key, const char *v,
    const char *const *names, int *out)
{
	char all[128] = "";

	for (int i = 0; names[i] != NULL; i++) {
		if (!strcasecmp(v, names[i])) {
			*out = i;
			return 1;
		}
		snprintf(all + strlen(all), sizeof(all) - strlen(all),
		    "%s%s", i ? ", " : "", names[i]);
	}
	return fail(p, key, "'%s' is not one of %s", v, all);
}

static int
copy_str(struct parse *p, const char *key, const char *v, char *dst,
    size_t len)
{
	if (strlen(v) >= len)
		return fail(p, key, "value longer than %zu bytes", len - 1);
	memcpy(dst, v, strlen(v) + 1);
	return 1;
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
		return parse_int(p, k, v, 0, 1024, &c->workers);
	if (!strcmp(k, "max_restarts"))
		return parse_int(p, k, v, 0, 1000000, &c->max_restarts);
	if (!strcmp(k, "admin")) {
		c->admin_set = true;
		return parse_addr(p, k, v, &c->admin);
	}
	if (!strcmp(k, "log_level")) {
		int l = log_level_parse(v);
		if (l < 0)
			return fail(p, k, "'%s' is not one of error, warn, "
			    "info, debug", v);
		c->log_level = l;
		return 1;
	}
	if (!strcmp(k, "log"))
		return parse_choice(p, k, v, log_dests, &c->log_dest);
	if (!strcmp(k, "log_format"))
		return parse_choice(p, k, v, log_formats, &c->log_format);
	if (!strcmp(k, "user"))
		return copy_str(p, k, v, c->user, sizeof(c->user));
	if (!strcmp(k, "group"))
		return copy_str(p, k, v, c->group, sizeof(c->group));
	if (!strcmp(k, "drain_timeout"))
		return parse_seconds(p, k, v, &c->drain_timeout);
	if (!strcmp(k, "admin_timeout"))
		return parse_deadline(p, k, v, "an admin request from its "
		    "connection to its answer", &c->admin_timeout);
	if (!strcmp(k, "cert_watch"))
		return parse_bool(p, k, v, &c->cert_watch);
	if (!strcmp(k, "pid_file")) {
		if (*v != '/')
			return fail(p, k, "'%s' is not an absolute path", v);
		return copy_str(p, k, v, c->pid_file, sizeof(c->pid_file));
	}
	if (!strcmp(k, "admin_token")) {
		if (strlen(v) < 16)
			return fail(p, k, "shorter than 16 characters");
		return copy_str(p, k, v, c->admin_token,
		    sizeof(c->admin_token));
	}
	if (!strcmp(k, "admin_max_connections"))
		return parse_count(p, k, v, 1, 100000,
		    &c->admin_max_connections);
	if (!strcmp(k, "ocsp_dir")) {
		if (*v == '\0')
			return fail(p, k, "empty directory name");
		return copy_str(p, k, v, c->ocsp_dir, sizeof(c->ocsp_dir));
	}
	if (!strcmp(k, "ocsp_timeout"))
		return parse_deadline(p, k, v, "an OCSP fetch",
		    &c->ocsp_timeout);
	return fail(p, k, "unknown key");
}

/*
 * One NATS server URL: nats://HOST:PORT, tls://HOST:PORT or HOST:PORT
 * (nats:// then), kept as the client library takes it.
 */
static int
parse_nats_url(struct parse *p, const char *key, const char *v, char *out,
    size_t outlen)
{
	const char *scheme = "nats://", *hp = v;
	char host[CONFIG_ADDR_LEN], why[256];
	int port;

	if (!strncmp(v, "nats://", 7)) {
		hp = v + 7;
	} else if (!strncmp(v, "tls://", 6)) {
		scheme = "tls://";
		hp = v + 6;
	} else if (strstr(v, "://") != NULL) {
		return fail(p, key, "'%s': the scheme is nats:// or tls://", v);
	}
	if (netutil_parse_hostport(hp, host, sizeof(host), &port, why,
	    sizeof(why)) < 0)
		return fail(p, key, "'%s': %s", v, why);
	if (host[0] == '\0' || port == 0)
		return fail(p, key, "'%s' needs a host and a port", v);
	snprintf(out, outlen, strchr(host, ':') ? "%s[%s]:%d" : "%s%s:%d",
	    scheme, host, port);
	return 1;
}

static int
parse_nats_list(struct parse *p, const char *key, const char *v,
    struct config_cluster *cl)
{
	char buf[CONFIG_MAX_LINE], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", v);
	cl->nnats = 0;
	for (tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		while (isspace((unsigned char)*tok))
			tok++;
		for (char *e = tok + strlen(tok); e > tok &&
		    isspace((unsigned char)e[-1]); e--)
			e[-1] = '\0';
		if (*tok == '\0')
			continue;
		if (cl->nnats >= CONFIG_MAX_NATS)
			return fail(p, key, "more than %d servers",
			    CONFIG_MAX_NATS);
		if (!parse_nats_url(p, key, tok, cl->nats[cl->nnats],
		    sizeof(cl->nats[0])))
			return 0;
		cl->nnats++;
	}
	if (cl->nnats == 0)
		return fail(p, key, "no server given");
	return 1;
}

/* Node names go into logs, metric labels and heartbeats as they are. */
static int
parse_node(struct parse *p, const char *key, const char *v, char *out,
    size_t outlen)
{
	if (*v == '\0')
		return fail(p, key, "empty name");
	for (const char *c = v; *c; c++)
		if (*c <= 0x20 || *c >= 0x7f || *c == '"' || *c == '\\')
			return fail(p, key, "use printable ASCII without "
			    "blanks, quotes or backslashes");
	return copy_str(p, key, v, out, outlen);
}

/* Tokens of letters, digits, '-' and '_', separated by single dots. */
static int
parse_prefix(struct parse *p, const char *key, const char *v, char *out,
    size_t outlen)
{
	static const char token_chars[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	const char *t = v;

	for (;;) {
		size_t n = strspn(t, token_chars);
		if (n == 0 || (t[n] != '\0' && t[n] != '.'))
			return fail(p, key, "'%s' is not NATS subject tokens "
			    "(letters, digits, '-' and '_', separated by "
			    "single dots)", v);
		if (t[n] == '\0')
			break;
		t += n + 1;
	}
	return copy_str(p, key, v, out, outlen);
}

static int
cluster_key(struct parse *p, const char *k, const char *v)
{
	struct config_cluster *cl = &p->c->cluster;

	if (!strcmp(k, "nats"))
		return parse_nats_list(p, k, v, cl);
	if (!strcmp(k, "node"))
		return parse_node(p, k, v, cl->node, sizeof(cl->node));
	if (!strcmp(k, "subject_prefix"))
		return parse_prefix(p, k, v, cl->subject_prefix,
		    sizeof(cl->subject_prefix));
	if (*v == '\0')
		return fail(p, k, "empty value");
	if (!strcmp(k, "nats_ca"))
		return copy_str(p, k, v, cl->nats_ca, sizeof(cl->nats_ca));
	if (!strcmp(k, "nats_cert"))
		return copy_str(p, k, v, cl->nats_cert, sizeof(cl->nats_cert));
	if (!strcmp(k, "nats_key"))
		return copy_str(p, k, v, cl->nats_key, sizeof(cl->nats_key));
	if (!strcmp(k, "nats_creds"))
		return copy_str(p, k, v, cl->nats_creds,
		    sizeof(cl->nats_creds));
	if (!strcmp(k, "nats_user"))
		return copy_str(p, k, v, cl->nats_user, sizeof(cl->nats_user));
	if (!strcmp(k, "nats_password"))
		return copy_str(p, k, v, cl->nats_password,
		    sizeof(cl->nats_password));
	if (!strcmp(k, "nats_token"))
		return copy_str(p, k, v, cl->nats_token,
		    sizeof(cl->nats_token));
	return fail(p, k, "unknown key");
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
		if (!parse_choice(p, k, v, modes, &i))
			return 0;
		l->mode = (enum config_mode)i;
		l->mode_set = true;
		return 1;
	}
	if (!strcmp(k, "bind"))
		return parse_addr_list(p, k, v, l->bind, &l->nbind,
		    CONFIG_MAX_BINDS);
	if (!strcmp(k, "cert")) {
		if (l->ncert >= CONFIG_MAX_CERTS)
			return fail(p, k, "more than %d certificates",
			    CONFIG_MAX_CERTS);
		return copy_str(p, k, v, l->cert[l->ncert++], CONFIG_PATH_LEN);
	}
	if (!strcmp(k, "key")) {
		if (l->nkey >= CONFIG_MAX_CERTS)
			return fail(p, k, "more than %d keys",
			    CONFIG_MAX_CERTS);
		return copy_str(p, k, v, l->key[l->nkey++], CONFIG_PATH_LEN);
	}
	if (!strcmp(k, "client_ca"))
		return copy_str(p, k, v, l->client_ca, sizeof(l->client_ca));
	if (!strcmp(k, "verify_client")) {
		if (!parse_choice(p, k, v, verifies, &i))
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
			return fail(p, k, "'%s' is not 1.2 or 1.3", v);
		return 1;
	}
	if (!strcmp(k, "ciphers"))
		return copy_str(p, k, v, l->ciphers, sizeof(l->ciphers));
	if (!strcmp(k, "ciphersuites"))
		return copy_str(p, k, v, l->ciphersuites,
		    sizeof(l->ciphersuites));
	if (!strcmp(k, "alpn"))
		return copy_str(p, k, v, l->alpn, sizeof(l->alpn));
	if (!strcmp(k, "alpn_fallback"))
		return parse_bool(p, k, v, &l->alpn_fallback);
	if (!strcmp(k, "accept_proxy"))
		return parse_bool(p, k, v, &l->accept_proxy);
	if (!strcmp(k, "unix_mode"))
		return parse_mode(p, k, v, &l->unix_mode);
	if (!strcmp(k, "unix_owner")) {
		if (*v == '\0')
			return fail(p, k, "empty owner");
		return copy_str(p, k, v, l->unix_owner, sizeof(l->unix_owner));
	}
	if (!strcmp(k, "client_crl"))
		return copy_str(p, k, v, l->client_crl, sizeof(l->client_crl));
	if (!strcmp(k, "ticket_keys")) {
		if (*v == '\0')
			return fail(p, k, "empty file name");
		return copy_str(p, k, v, l->ticket_keys,
		    sizeof(l->ticket_keys));
	}
	if (!strcmp(k, "ticket_rotate"))
		return parse_seconds(p, k, v, &l->ticket_rotate);
	if (!strcmp(k, "ocsp")) {
		if (l->nocsp >= CONFIG_MAX_CERTS)
			return fail(p, k, "more than %d values",
			    CONFIG_MAX_CERTS);
		if (*v == '\0')
			return fail(p, k, "empty: give off, auto or a file");
		return copy_str(p, k, v, l->ocsp[l->nocsp++], CONFIG_PATH_LEN);
	}
	if (!strcmp(k, "handshake_timeout"))
		return parse_deadline(p, k, v, "the TLS handshake and the "
		    "relay registration (the defence against slow and silent "
		    "clients)", &l->handshake_timeout);
	if (!strcmp(k, "idle_timeout"))
		return parse_seconds(p, k, v, &l->idle_timeout);
	if (!strcmp(k, "max_connections"))
		return parse_count(p, k, v, 0, 10000000, &l->max_connections);
	if (!strcmp(k, "max_connections_per_source"))
		return parse_count(p, k, v, 0, 10000000, &l->max_per_source);
	if (!strcmp(k, "access_log")) {
		if (*v == '\0')
			return fail(p, k, "empty file name");
		return copy_str(p, k, v, l->access_log, sizeof(l->access_log));
	}
	/* relay */
	if (!strcmp(k, "slow_consumer")) {
		if (!parse_choice(p, k, v, slows, &i))
			return 0;
		l->slow_consumer = (enum config_slow)i;
		return 1;
	}
	if (!strcmp(k, "queue_bytes"))
		return parse_size(p, k, v, 4, 1 << 30, &l->queue_bytes);
	if (!strcmp(k, "max_consumers"))
		return parse_count(p, k, v, 1, 100000, &l->max_consumers);
	if (!strcmp(k, "grace"))
		return parse_seconds(p, k, v, &l->grace);
	if (!strcmp(k, "takeover")) {
		if (!parse_choice(p, k, v, takeovers, &i))
			return 0;
		l->takeover = (enum config_takeover)i;
		return 1;
	}
	if (!strcmp(k, "last_value"))
		return parse_bool(p, k, v, &l->last_value);
	if (!strcmp(k, "max_uuid_bytes"))
		return parse_size(p, k, v, 1, 255, &l->max_uuid);
	if (!strcmp(k, "max_keys_bytes"))
		return parse_size(p, k, v, 1, 65536, &l->max_keys_bytes);
	if (!strcmp(k, "max_keys"))
		return parse_count(p, k, v, 1, 16384, &l->max_keys);
	if (!strcmp(k, "origins"))
		return copy_str(p, k, v, l->origins, sizeof(l->origins));
	if (!strcmp(k, "max_message_bytes"))
		return parse_size(p, k, v, 4, 1 << 30, &l->max_message_bytes);
	if (!strcmp(k, "acl")) {
		if (*v == '\0')
			return fail(p, k, "empty file name");
		return copy_str(p, k, v, l->acl, sizeof(l->acl));
	}
	/* forward */
	if (!strcmp(k, "backend"))
		return parse_backend_list(p, k, v, l, 0);
	if (!strcmp(k, "backend_set"))
		return parse_backend_set(p, k, v, l);
	if (!strcmp(k, "route"))
		return parse_route(p, k, v, l);
	if (!strcmp(k, "route_nomatch")) {
		if (!parse_choice(p, k, v, nomatches, &i))
			return 0;
		l->route_refuse = i == 1;
		return 1;
	}
	if (!strcmp(k, "balance")) {
		if (!parse_choice(p, k, v, balances, &i))
			return 0;
		l->balance = (enum config_balance)i;
		return 1;
	}
	if (!strcmp(k, "max_fails"))
		return parse_count(p, k, v, 0, 1000, &l->max_fails);
	if (!strcmp(k, "fail_timeout"))
		return parse_deadline(p, k, v, "how long failures are counted "
		    "and a failed backend stays down", &l->fail_timeout);
	if (!strcmp(k, "check_interval"))
		return parse_seconds(p, k, v, &l->check_interval);
	if (!strcmp(k, "check")) {
		if (!parse_choice(p, k, v, checks, &i))
			return 0;
		l->check = (enum config_check)i;
		return 1;
	}
	if (!strcmp(k, "proxy_tlvs"))
		return parse_bool(p, k, v, &l->proxy_tlvs);
	if (!strcmp(k, "connect_timeout"))
		return parse_deadline(p, k, v, "a backend's connect and TLS "
		    "handshake", &l->connect_timeout);
	if (!strcmp(k, "fin_timeout"))
		return parse_seconds(p, k, v, &l->fin_timeout);
	if (!strcmp(k, "backend_tls"))
		return parse_bool(p, k, v, &l->backend_tls);
	if (!strcmp(k, "backend_ca"))
		return copy_str(p, k, v, l->backend_ca, sizeof(l->backend_ca));
	if (!strcmp(k, "backend_sni"))
		return copy_str(p, k, v, l->backend_sni,
		    sizeof(l->backend_sni));
	if (!strcmp(k, "backend_cert"))
		return copy_str(p, k, v, l->backend_cert,
		    sizeof(l->backend_cert));
	if (!strcmp(k, "backend_key"))
		return copy_str(p, k, v, l->backend_key,
		    sizeof(l->backend_key));
	if (!strcmp(k, "proxy_protocol")) {
		if (!parse_choice(p, k, v, proxies, &i))
			return 0;
		l->proxy_protocol = (enum config_proxy)i;
		return 1;
	}
	if (!strcmp(k, "high_water"))
		return parse_size(p, k, v, 1024, 1 << 30, &l->high_water);
	return fail(p, k, "unknown key");
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
		return fail(p, NULL, "syntax error: '[' without ']'");
	for (rest = close + 1; isspace((unsigned char)*rest); rest++)
		;
	if (*rest != '\0' && *rest != ';' && *rest != '#')
		return fail(p, NULL, "syntax error: text after ']'");
	len = (size_t)(close - name);
	if (len == 0)
		return fail(p, NULL, "empty section name");
	if (len >= CONFIG_NAME_LEN)
		return fail(p, NULL, "section name longer than %d "
		    "characters: [%.*s...]", CONFIG_NAME_LEN - 1,
		    CONFIG_NAME_LEN - 1, name);
	memcpy(p->section, name, len);
	p->section[len] = '\0';
	/* Names go into logs and metric labels as they are. */
	if (strspn(p->section, name_chars) != len)
		return fail(p, "section name", "use letters, digits, '-', '_' "
		    "and '.'");
	p->cur = NULL;
	p->in_cluster = false;
	if (!strcmp(p->section, "cluster")) {
		if (c->cluster.set)
			return fail(p, "section", "given twice (first on line "
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
			return fail(p, "section", "given twice (first on line "
			    "%d)", p->ferry_line);
		p->ferry_line = p->line;
		return true;
	}
	for (size_t i = 0; i < c->nlisteners; i++)
		if (!strcmp(c->listeners[i].name, p->section))
			return fail(p, "section", "given twice (first on line "
			    "%d): a listener is one section",
			    c->listeners[i].line);
	if (c->nlisteners >= CONFIG_MAX_LISTENERS)
		return fail(p, "section", "more than %d listeners",
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
	first = find_line(lines, n, key, 0);
	if (first < 0)
		return 1;
	return fail(p, key, "given twice (first on line %d)%s", first,
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
		return fail(p, name, "key outside any [section]");
	/* inih's copy of the name is ours, or its first 49 characters. */
	if (strncmp(section, p->section, strlen(section)) != 0)
		return fail(p, name, "section name read as [%s]", section);
	k = find_key(name);
	if (p->in_cluster) {
		if (k == NULL || k->scope != CONFIG_SCOPE_CLUSTER)
			return fail(p, name, k == NULL ? "unknown key" :
			    k->scope == CONFIG_SCOPE_PROCESS ?
			    "belongs in [ferry]" : "belongs in a listener");
		lines = p->c->cluster.lines;
		nlines = &p->c->cluster.nlines;
	} else if (p->cur == NULL) {
		if (k == NULL || k->scope != CONFIG_SCOPE_PROCESS)
			return fail(p, name, k != NULL &&
			    k->scope == CONFIG_SCOPE_CLUSTER ?
			    "belongs in [cluster]" : "unknown key");
		lines = p->c->lines;
		nlines = &p->c->nlines;
	} else {
		if (k == NULL || k->scope == CONFIG_SCOPE_PROCESS ||
		    k->scope == CONFIG_SCOPE_CLUSTER)
			return fail(p, name, k == NULL ? "unknown key" :
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

/* ---- validation ---- */

/* Errors about a key point at its line, if it was given. */
static void
key_line(struct parse *p, const struct config_listener *l, const char *key)
{
	int line = find_line(l->lines, l->nlines, key, 0);

	if (line > 0)
		p->line = line;
}

static const char *const tls_keys[] = { "client_ca", "tls_min_version",
    "ciphers", "ciphersuites", "alpn", "alpn_fallback", "client_crl",
    "ticket_keys", "ticket_rotate", "ocsp", NULL };

static bool
binds_unix(const struct config_listener *l)
{
	for (size_t i = 0; i < l->nbind; i++)
		if (config_addr_is_unix(&l->bind[i]))
			return true;
	return false;
}

/*
 * Every route names a set that exists; clients no route takes go to the
 * set "default", which then needs backends (unless they are refused).
 */
static int
check_routes(struct parse *p, struct config_listener *l)
{
	bool has_default = false;

	for (size_t i = 0; i < l->nroutes; i++) {
		struct config_route *r = &l->route[i];
		r->set = -1;
		for (size_t j = 0; j < l->nsets; j++)
			if (!strcmp(l->set_name[j], r->set_name))
				r->set = (int)j;
		if (r->set < 0) {
			p->line = r->line;
			return fail(p, "route", "no backend set '%s' (give "
			    "backend_set = %s: ADDRESS...)", r->set_name,
			    r->set_name);
		}
	}
	for (size_t i = 0; i < l->nbackend; i++)
		has_default = has_default || l->backend[i].set == 0;
	if (l->mode == CONFIG_FORWARD && !has_default && !l->route_refuse) {
		key_line(p, l, "backend_set");
		return fail(p, "backend", "missing: clients that no route "
		    "takes go to the backends of `backend`; give it, or "
		    "route_nomatch = refuse");
	}
	return 1;
}

/* ocsp: once for every certificate, or once per certificate. */
static int
check_ocsp(struct parse *p, struct config_listener *l)
{
	if (l->nocsp == 0)
		return 1;
	key_line(p, l, "ocsp");
	if (l->nocsp != 1 && l->nocsp != l->ncert)
		return fail(p, "ocsp", "%zu values for %zu certificates: give "
		    "one for all, or one per cert, in order", l->nocsp,
		    l->ncert);
	if (l->nocsp == 1 && l->ncert > 1 && strcmp(l->ocsp[0], "auto") &&
	    strcmp(l->ocsp[0], "off"))
		return fail(p, "ocsp", "one file for %zu certificates: give "
		    "one ocsp line per cert, in order", l->ncert);
	for (size_t i = 0; i < l->nocsp; i++)
		if (!strcmp(l->ocsp[i], "auto") && p->c->ocsp_dir[0] == '\0')
			return fail(p, "ocsp", "auto needs ocsp_dir in [ferry] "
			    "(where the responses are kept, and shared by the "
			    "workers)");
	return 1;
}

static int
check_listener(struct parse *p, struct config_listener *l)
{
	p->line = l->line;
	snprintf(p->section, sizeof(p->section), "%s", l->name);
	if (!l->mode_set)
		return fail(p, "mode", "missing (relay or forward)");
	for (size_t i = 0; i < l->nlines; i++) {
		const struct config_key *k = find_key(l->lines[i].key);
		if ((k->scope == CONFIG_SCOPE_RELAY && l->mode != CONFIG_RELAY) ||
		    (k->scope == CONFIG_SCOPE_FORWARD &&
		    l->mode != CONFIG_FORWARD)) {
			p->line = l->lines[i].line;
			return fail(p, k->name, "only for %s listeners",
			    k->scope == CONFIG_SCOPE_RELAY ? "relay" :
			    "forward");
		}
	}
	if (l->nbind == 0)
		return fail(p, "bind", "missing");
	if (l->ncert != l->nkey)
		return fail(p, "key", "%zu certificates but %zu keys: give "
		    "one key per cert, in order", l->ncert, l->nkey);
	if (l->verify != CONFIG_VERIFY_NONE && l->ncert == 0)
		return fail(p, "verify_client", "needs TLS (cert/key)");
	if (l->verify != CONFIG_VERIFY_NONE && l->client_ca[0] == '\0')
		return fail(p, "client_ca", "missing: verify_client needs "
		    "the CA file");
	/* A plain listener would ignore these without a word. */
	for (size_t i = 0; l->ncert == 0 && tls_keys[i] != NULL; i++) {
		if (find_line(l->lines, l->nlines, tls_keys[i], 0) < 0)
			continue;
		key_line(p, l, tls_keys[i]);
		return fail(p, tls_keys[i], "needs TLS (cert and key): this "
		    "listener is plain");
	}
	if (l->acl[0] != '\0' && l->verify == CONFIG_VERIFY_NONE) {
		key_line(p, l, "acl");
		return fail(p, "acl", "needs verify_client = required (or "
		    "optional) and client_ca: the access list matches client "
		    "certificates");
	}
	if (l->mode == CONFIG_FORWARD && l->nbackend == 0)
		return fail(p, "backend", "missing for a forward listener");
	for (size_t i = 0; i < l->nbackend; i++)
		if (l->backend[i].addr.host[0] == '\0') {
			int line = find_line(l->lines, l->nlines, "backend", 0);
			if (line > 0)
				p->line = line;
			return fail(p, "backend", "':%d' needs a host to "
			    "connect to", l->backend[i].addr.port);
		}
	if (!check_routes(p, l))
		return 0;
	if (l->check == CONFIG_CHECK_TLS && !l->backend_tls &&
	    l->check_interval > 0) {
		key_line(p, l, "check");
		return fail(p, "check", "tls needs backend_tls = on");
	}
	if ((l->unix_mode != 0 || l->unix_owner[0]) && !binds_unix(l)) {
		key_line(p, l, l->unix_mode != 0 ? "unix_mode" : "unix_owner");
		return fail(p, l->unix_mode != 0 ? "unix_mode" : "unix_owner",
		    "no unix: address in bind");
	}
	if (l->mode == CONFIG_RELAY && l->nbackend > 0)
		return fail(p, "backend", "only forward listeners have "
		    "backends");
	if (l->backend_tls == false && (l->backend_ca[0] ||
	    l->backend_sni[0] || l->backend_cert[0]))
		return fail(p, "backend_tls", "backend_ca/backend_sni/"
		    "backend_cert given but backend_tls is off");
	if (l->backend_key[0] && !l->backend_cert[0]) {
		key_line(p, l, "backend_key");
		return fail(p, "backend_key", "needs backend_cert");
	}
	if (l->client_crl[0] && l->verify == CONFIG_VERIFY_NONE) {
		key_line(p, l, "client_crl");
		return fail(p, "client_crl", "needs verify_client (and "
		    "client_ca): the CRL is checked against client "
		    "certificates");
	}
	return check_ocsp(p, l);
}

/*
 * Relay listeners share one uuid namespace: one without an access list
 * would let its clients produce and consume the uuids another's list
 * guards.  So it is all of them or none.
 */
static int
check_acls(struct parse *p)
{
	const struct config_listener *guarded = NULL;

	for (size_t i = 0; i < p->c->nlisteners; i++) {
		const struct config_listener *l = &p->c->listeners[i];
		if (l->mode == CONFIG_RELAY && l->acl[0] != '\0') {
			guarded = l;
			break;
		}
	}
	if (guarded == NULL)
		return 1;
	for (size_t i = 0; i < p->c->nlisteners; i++) {
		struct config_listener *l = &p->c->listeners[i];
		if (l->mode != CONFIG_RELAY || l->acl[0] != '\0')
			continue;
		p->line = l->line;
		snprintf(p->section, sizeof(p->section), "%s", l->name);
		return fail(p, "acl", "missing: relay listeners share their "
		    "uuids, and [%s] has an access list; give every relay "
		    "listener one (with verify_client), or serve this one "
		    "from another ferry", guarded->name);
	}
	return 1;
}

/* Points p at the line of [cluster]'s `key`, or at the section. */
static void
cluster_line(struct parse *p, const char *key)
{
	const struct config_cluster *cl = &p->c->cluster;
	int line = find_line(cl->lines, cl->nlines, key, 0);

	p->line = line > 0 ? line : cl->line;
	snprintf(p->section, sizeof(p->section), "cluster");
}

/* The keys of [cluster] that only make sense together, or alone. */
static int
check_cluster(struct parse *p)
{
	const struct config_cluster *cl = &p->c->cluster;
	int auths = (cl->nats_user[0] || cl->nats_password[0]) +
	    (cl->nats_token[0] != '\0') + (cl->nats_creds[0] != '\0');

	if (!cl->set)
		return 1;
	if (cl->nnats == 0) {
		cluster_line(p, "nats");
		return fail(p, "nats", "missing: the NATS servers to join "
		    "(nats://host:port, ...)");
	}
	if ((cl->nats_cert[0] != '\0') != (cl->nats_key[0] != '\0')) {
		const char *k = cl->nats_cert[0] ? "nats_key" : "nats_cert";
		cluster_line(p, cl->nats_cert[0] ? "nats_cert" : "nats_key");
		return fail(p, k, "missing: a client certificate needs its "
		    "key, and the key its certificate");
	}
	if ((cl->nats_user[0] != '\0') != (cl->nats_password[0] != '\0')) {
		const char *k = cl->nats_user[0] ? "nats_password" :
		    "nats_user";
		cluster_line(p, cl->nats_user[0] ? "nats_user" :
		    "nats_password");
		return fail(p, k, "missing: nats_user and nats_password go "
		    "together");
	}
	if (auths > 1) {
		const char *k = cl->nats_creds[0] ? "nats_creds" :
		    "nats_token";
		cluster_line(p, k);
		return fail(p, k, "give one way to authenticate to NATS: "
		    "nats_user/nats_password, nats_token or nats_creds");
	}
	return 1;
}

static int
finish(struct parse *p, int rc)
{
	if (rc == -1 && !p->failed) {
		snprintf(p->err, p->errlen, "%s: %s", p->label,
		    strerror(errno));
		return -1;
	}
	if (rc > 0 && !p->failed) {
		/* inih: a line that is not key = value nor [section] */
		snprintf(p->err, p->errlen, "%s:%d: syntax error (expected "
		    "[section] or key = value)", p->label, rc);
		return -1;
	}
	if (rc < -1 && !p->failed) {
		snprintf(p->err, p->errlen, "%s: out of memory", p->label);
		return -1;
	}
	if (p->failed)
		return -1;
	if (p->c->nlisteners == 0) {
		snprintf(p->err, p->errlen, "%s: no listener section",
		    p->label);
		return -1;
	}
	if (p->c->group[0] != '\0' && p->c->user[0] == '\0') {
		p->line = find_line(p->c->lines, p->c->nlines, "group", 0);
		snprintf(p->section, sizeof(p->section), "ferry");
		fail(p, "group", "needs user (group is the group to drop to "
		    "with it)");
		return -1;
	}
	for (size_t i = 0; i < p->c->nlisteners; i++)
		if (!check_listener(p, &p->c->listeners[i]))
			return -1;
	if (!check_acls(p) || !check_cluster(p))
		return -1;
	return 0;
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
		return fail(p, NULL, "line longer than %d bytes", num - 2);
	if (memchr(line, '\0', len) != NULL)
		return fail(p, NULL, "NUL byte in the line");
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
	return finish(&p, rc);
}

int
config_load_string(struct config *c, const char *text, const char *label,
    char *err, size_t errlen)
{
	struct parse p = { .c = c, .label = label, .err = err,
	    .errlen = errlen, .text = text };

	snprintf(c->label, sizeof(c->label), "%s", label);
	ini_setup();
	return finish(&p, ini_parse_stream(read_string_line, &p, on_value,
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
