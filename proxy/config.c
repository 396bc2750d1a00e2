/* config: see config.h. */
#define _GNU_SOURCE
#include "config.h"

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

struct parse {
	struct config *c;
	const char *label;		/* file name for messages */
	int line;			/* current line (counted by the reader) */
	int header_line;		/* of the last [section] header */
	struct config_listener *cur;
	char section[CONFIG_NAME_LEN];
	char *err;
	size_t errlen;
	bool failed;
	/* string input */
	const char *text;
	FILE *fp;
};

static int fail(struct parse *p, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

const struct config_key config_keys[] = {
	{ "workers", CONFIG_SCOPE_PROCESS },
	{ "max_restarts", CONFIG_SCOPE_PROCESS },
	{ "admin", CONFIG_SCOPE_PROCESS },
	{ "log_level", CONFIG_SCOPE_PROCESS },
	{ "user", CONFIG_SCOPE_PROCESS },
	{ "group", CONFIG_SCOPE_PROCESS },
	{ "drain_timeout", CONFIG_SCOPE_PROCESS },
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
	{ "handshake_timeout", CONFIG_SCOPE_LISTENER },
	{ "idle_timeout", CONFIG_SCOPE_LISTENER },
	{ "max_connections", CONFIG_SCOPE_LISTENER },
	{ "max_connections_per_source", CONFIG_SCOPE_LISTENER },
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
	{ "backend", CONFIG_SCOPE_FORWARD },
	{ "connect_timeout", CONFIG_SCOPE_FORWARD },
	{ "fin_timeout", CONFIG_SCOPE_FORWARD },
	{ "backend_tls", CONFIG_SCOPE_FORWARD },
	{ "backend_ca", CONFIG_SCOPE_FORWARD },
	{ "backend_sni", CONFIG_SCOPE_FORWARD },
	{ "proxy_protocol", CONFIG_SCOPE_FORWARD },
	{ "high_water", CONFIG_SCOPE_FORWARD },
	{ NULL, 0 },
};

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
	snprintf(p->err, p->errlen, "%s:%d: [%s] %s: %s", p->label, p->line,
	    p->section, key, why);
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
	l->connect_timeout = 5;
	l->fin_timeout = 30;
	l->high_water = 256 * 1024;
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

static int
parse_seconds(struct parse *p, const char *key, const char *v, double *out)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(v, &end);
	if (*v == '\0' || errno != 0 || !isfinite(d) || d < 0 ||
	    d > 86400 * 365)
		return fail(p, key, "'%s' is not a number of seconds", v);
	if (!strcmp(end, "ms"))
		d /= 1000;
	else if (*end != '\0' && strcmp(end, "s") != 0)
		return fail(p, key, "'%s' is not a number of seconds", v);
	*out = d;
	return 1;
}

static int
parse_size(struct parse *p, const char *key, const char *v, size_t min,
    size_t max, size_t *out)
{
	char *end;
	unsigned long long n;
	unsigned long long mult = 1;

	errno = 0;
	if (*v == '-' || *v == '\0')
		return fail(p, key, "'%s' is not a size", v);
	n = strtoull(v, &end, 10);
	if (errno != 0)
		return fail(p, key, "'%s' is not a size", v);
	if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") ||
	    !strcasecmp(end, "kib"))
		mult = 1024;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") ||
	    !strcasecmp(end, "mib"))
		mult = 1024 * 1024;
	else if (*end != '\0')
		return fail(p, key, "'%s' is not a size", v);
	if (n > max / mult || n * mult < min || n * mult > max)
		return fail(p, key, "%s is outside %zu..%zu", v, min, max);
	*out = (size_t)(n * mult);
	return 1;
}

static int
parse_int(struct parse *p, const char *key, const char *v, int min, int max,
    int *out)
{
	size_t n;

	if (!parse_size(p, key, v, (size_t)min, (size_t)max, &n))
		return 0;
	*out = (int)n;
	return 1;
}

static int
parse_addr(struct parse *p, const char *key, const char *v,
    struct config_addr *a)
{
	char why[256];

	if (netutil_parse_hostport(v, a->host, sizeof(a->host), &a->port,
	    why, sizeof(why)) < 0)
		return fail(p, key, "%s", why);
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
	if (!strcmp(k, "user"))
		return copy_str(p, k, v, c->user, sizeof(c->user));
	if (!strcmp(k, "group"))
		return copy_str(p, k, v, c->group, sizeof(c->group));
	if (!strcmp(k, "drain_timeout"))
		return parse_seconds(p, k, v, &c->drain_timeout);
	return fail(p, k, "unknown key");
}

static const char *const modes[] = { "relay", "forward", NULL };
static const char *const verifies[] = { "none", "optional", "required", NULL };
static const char *const slows[] = { "drop", "disconnect", "block", NULL };
static const char *const takeovers[] = { "replace", "refuse", NULL };
static const char *const proxies[] = { "off", "v1", "v2", NULL };

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
	if (!strcmp(k, "handshake_timeout"))
		return parse_seconds(p, k, v, &l->handshake_timeout);
	if (!strcmp(k, "idle_timeout"))
		return parse_seconds(p, k, v, &l->idle_timeout);
	if (!strcmp(k, "max_connections"))
		return parse_size(p, k, v, 0, 10000000, &l->max_connections);
	if (!strcmp(k, "max_connections_per_source"))
		return parse_size(p, k, v, 0, 10000000, &l->max_per_source);
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
		return parse_size(p, k, v, 1, 100000, &l->max_consumers);
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
		return parse_size(p, k, v, 1, 16384, &l->max_keys);
	if (!strcmp(k, "acl")) {
		if (*v == '\0')
			return fail(p, k, "empty file name");
		return copy_str(p, k, v, l->acl, sizeof(l->acl));
	}
	/* forward */
	if (!strcmp(k, "backend"))
		return parse_addr_list(p, k, v, l->backend, &l->nbackend,
		    CONFIG_MAX_BACKENDS);
	if (!strcmp(k, "connect_timeout"))
		return parse_seconds(p, k, v, &l->connect_timeout);
	if (!strcmp(k, "fin_timeout"))
		return parse_seconds(p, k, v, &l->fin_timeout);
	if (!strcmp(k, "backend_tls"))
		return parse_bool(p, k, v, &l->backend_tls);
	if (!strcmp(k, "backend_ca"))
		return copy_str(p, k, v, l->backend_ca, sizeof(l->backend_ca));
	if (!strcmp(k, "backend_sni"))
		return copy_str(p, k, v, l->backend_sni,
		    sizeof(l->backend_sni));
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

static struct config_listener *
find_or_add(struct parse *p, const char *section)
{
	struct config *c = p->c;

	for (size_t i = 0; i < c->nlisteners; i++)
		if (!strcmp(c->listeners[i].name, section))
			return &c->listeners[i];
	if (c->nlisteners >= CONFIG_MAX_LISTENERS) {
		fail(p, "section", "more than %d listeners",
		    CONFIG_MAX_LISTENERS);
		return NULL;
	}
	struct config_listener *l = &c->listeners[c->nlisteners++];
	config_listener_init(l, section);
	l->line = p->header_line > 0 ? p->header_line : p->line;
	return l;
}

static int
on_value(void *user, const char *section, const char *name,
    const char *value)
{
	struct parse *p = user;

	const struct config_key *k;

	if (p->failed)
		return 1;	/* keep the first error */
	snprintf(p->section, sizeof(p->section), "%s", section);
	if (section[0] == '\0')
		return fail(p, name, "key outside any [section]");
	if (strlen(section) >= CONFIG_NAME_LEN)
		return fail(p, name, "section name too long");
	/* Names go into logs and metric labels as they are. */
	if (strspn(section, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-_.") != strlen(section))
		return fail(p, name, "section name: use letters, digits, "
		    "'-', '_' and '.'");
	k = find_key(name);
	if (!strcmp(section, "ferry")) {
		if (k == NULL || k->scope != CONFIG_SCOPE_PROCESS)
			return fail(p, name, "unknown key");
		record_line(p->c->lines, &p->c->nlines, name, p->line);
		return ferry_key(p, name, value);
	}
	if (k == NULL || k->scope == CONFIG_SCOPE_PROCESS)
		return fail(p, name, k == NULL ? "unknown key" :
		    "belongs in [ferry]");
	if (p->cur == NULL || strcmp(p->cur->name, section) != 0) {
		p->cur = find_or_add(p, section);
		if (p->cur == NULL)
			return 0;
	}
	record_line(p->cur->lines, &p->cur->nlines, name, p->line);
	return listener_key(p, name, value);
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
	if (l->acl[0] != '\0' && l->verify == CONFIG_VERIFY_NONE) {
		key_line(p, l, "acl");
		return fail(p, "acl", "needs verify_client = required (or "
		    "optional) and client_ca: the access list matches client "
		    "certificates");
	}
	if (l->mode == CONFIG_FORWARD && l->nbackend == 0)
		return fail(p, "backend", "missing for a forward listener");
	for (size_t i = 0; i < l->nbackend; i++)
		if (l->backend[i].host[0] == '\0') {
			int line = find_line(l->lines, l->nlines, "backend", 0);
			if (line > 0)
				p->line = line;
			return fail(p, "backend", "':%d' needs a host to "
			    "connect to", l->backend[i].port);
		}
	if (l->mode == CONFIG_RELAY && l->nbackend > 0)
		return fail(p, "backend", "only forward listeners have "
		    "backends");
	if (l->backend_tls == false && (l->backend_ca[0] ||
	    l->backend_sni[0]))
		return fail(p, "backend_tls", "backend_ca/backend_sni given "
		    "but backend_tls is off");
	return 1;
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
	for (size_t i = 0; i < p->c->nlisteners; i++)
		if (!check_listener(p, &p->c->listeners[i]))
			return -1;
	return check_acls(p) ? 0 : -1;
}

/*
 * Readers that count lines, since inih's handler does not get them (nor
 * section headers: those are noted here too).
 */
static void
note_line(struct parse *p, const char *line)
{
	p->line++;
	line += strspn(line, " \t");
	if (*line == '[')
		p->header_line = p->line;
}

static char *
read_file_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	char *r = fgets(str, num, p->fp);

	if (r != NULL)
		note_line(p, r);
	return r;
}

static char *
read_string_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	const char *nl;
	size_t n;

	if (*p->text == '\0' || num < 2)
		return NULL;
	nl = strchr(p->text, '\n');
	n = nl ? (size_t)(nl - p->text) + 1 : strlen(p->text);
	if (n > (size_t)num - 1)
		n = (size_t)num - 1;
	memcpy(str, p->text, n);
	str[n] = '\0';
	p->text += n;
	note_line(p, str);
	return str;
}

int
config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	struct parse p = { .c = c, .label = path, .err = err,
	    .errlen = errlen };
	int rc;

	snprintf(c->path, sizeof(c->path), "%s", path);
	snprintf(c->label, sizeof(c->label), "%s", path);
	/* Long cipher lists and paths: inih's default line is 200 bytes. */
	ini_use_stack = false;
	ini_max_line = 4096;
	ini_initial_alloc = 4096;
	p.fp = fopen(path, "r");
	if (p.fp == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	rc = ini_parse_stream(read_file_line, &p, on_value, &p);
	fclose(p.fp);
	return finish(&p, rc);
}

int
config_load_string(struct config *c, const char *text, const char *label,
    char *err, size_t errlen)
{
	struct parse p = { .c = c, .label = label, .err = err,
	    .errlen = errlen, .text = text };

	snprintf(c->label, sizeof(c->label), "%s", label);
	ini_use_stack = false;
	ini_max_line = 4096;
	ini_initial_alloc = 4096;
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
