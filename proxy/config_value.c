/* config_value: see config_impl.h (the value parsers). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_impl.h"
#include "netutil.h"

/* ---- value parsers ---- */

int
config_parse_bool(struct parse *p, const char *key, const char *v, bool *out)
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
	return config_fail(p, key, "'%s' is not on/off", v);
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

int
config_parse_seconds(struct parse *p, const char *key, const char *v,
    double *out)
{
	size_t n = decimal_len(v, true);
	double d = strtod(v, NULL);

	if (n == 0 || (v[n] != '\0' && strcmp(v + n, "s") != 0 &&
	    strcmp(v + n, "ms") != 0))
		return config_fail(p, key,
		    "'%s' is not a number of seconds (decimal, "
		    "as 10, 2.5 or 250ms)", v);
	if (strcmp(v + n, "ms") == 0)
		d /= 1000;
	if (!isfinite(d) || d > 86400 * 365)
		return config_fail(p, key, "%s is more than a year", v);
	*out = d;
	return 1;
}

/* A time that bounds something: 0 would turn the bound off. */
int
config_parse_deadline(struct parse *p, const char *key, const char *v,
    const char *what, double *out)
{
	double d;

	if (!config_parse_seconds(p, key, v, &d))
		return 0;
	if (d <= 0)
		return config_fail(p, key, "must be more than 0: it bounds %s",
		    what);
	*out = d;
	return 1;
}

int
config_parse_size(struct parse *p, const char *key, const char *v, size_t min,
    size_t max, size_t *out)
{
	size_t len = decimal_len(v, false);
	const char *end = v + len;
	unsigned long long n;
	unsigned long long mult = 1;

	if (len == 0)
		return config_fail(p, key,
		    "'%s' is not a size (decimal, with an "
		    "optional k or m: 65536, 64k)", v);
	n = len > 12 ? ~0ULL : strtoull(v, NULL, 10);
	if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") ||
	    !strcasecmp(end, "kib"))
		mult = 1024;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") ||
	    !strcasecmp(end, "mib"))
		mult = 1024 * 1024;
	else if (*end != '\0')
		return config_fail(p, key,
		    "'%s' is not a size (decimal, with an "
		    "optional k or m: 65536, 64k)", v);
	if (n > max / mult || n * mult < min || n * mult > max)
		return config_fail(p, key, "%s is outside %zu..%zu", v, min,
		    max);
	*out = (size_t)(n * mult);
	return 1;
}

/* A count (workers, connections, consumers): decimal digits, no suffix. */
int
config_parse_count(struct parse *p, const char *key, const char *v, size_t min,
    size_t max, size_t *out)
{
	size_t len = decimal_len(v, false);
	unsigned long long n;

	if (len == 0 || v[len] != '\0')
		return config_fail(p, key,
		    "'%s' is not a whole number (decimal "
		    "digits only)", v);
	n = len > 12 ? ~0ULL : strtoull(v, NULL, 10);
	if (n < min || n > max)
		return config_fail(p, key, "%s is outside %zu..%zu", v, min,
		    max);
	*out = (size_t)n;
	return 1;
}

int
config_parse_int(struct parse *p, const char *key, const char *v, int min,
    int max, int *out)
{
	size_t n;

	if (!config_parse_count(p, key, v, (size_t)min, (size_t)max, &n))
		return 0;
	*out = (int)n;
	return 1;
}

int
config_parse_addr(struct parse *p, const char *key, const char *v,
    struct config_addr *a)
{
	char why[256];

	if (strncmp(v, "unix:", 5) == 0) {
		/* sun_path holds 107 bytes and the NUL. */
		if (v[5] != '/')
			return config_fail(p, key,
			    "'%s': a unix socket's path must "
			    "be absolute", v);
		if (strlen(v + 5) > 107)
			return config_fail(p, key,
			    "'%s': a unix socket's path is at "
			    "most 107 bytes", v);
		snprintf(a->host, sizeof(a->host), "%s", v);
		a->port = 0;
		return 1;
	}

	if (netutil_parse_hostport(v, a->host, sizeof(a->host), &a->port,
	    why, sizeof(why)) < 0)
		return config_fail(p, key, "%s", why);
	/*
	 * getaddrinfo() would look "256.1.1.1" up as a host name, and take
	 * "10.1" for 10.0.0.1: digits and dots must be a dotted quad.
	 */
	if (a->host[0] != '\0' &&
	    strspn(a->host, "0123456789.") == strlen(a->host)) {
		struct in_addr in;
		if (inet_pton(AF_INET, a->host, &in) != 1)
			return config_fail(p, key,
			    "'%s' is not an IPv4 address",
			    a->host);
	}
	return 1;
}

/* "a, b, c" -> each trimmed item through parse_addr. */
int
config_parse_addr_list(struct parse *p, const char *key, const char *v,
    struct config_addr *list, size_t *n, size_t max)
{
	char buf[1024];
	char *save = NULL;

	if (strlen(v) >= sizeof(buf))
		return config_fail(p, key, "value too long");
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		char *e = tok + strlen(tok);
		while (e > tok && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (*tok == '\0')
			return config_fail(p, key, "empty address in list");
		if (*n >= max)
			return config_fail(p, key, "more than %zu addresses",
			    max);
		if (!config_parse_addr(p, key, tok, &list[*n]))
			return 0;
		(*n)++;
	}
	if (*n == 0)
		return config_fail(p, key, "no address given");
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
		return config_fail(p, key, "empty address in list");
	if (!config_parse_addr(p, key, tok, &b->addr))
		return 0;
	while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
		size_t w;
		if (!strcmp(tok, "backup")) {
			b->backup = true;
		} else if (!strncmp(tok, "weight=", 7)) {
			if (!config_parse_count(p, key, tok + 7, 1, 256, &w))
				return 0;
			b->weight = (unsigned)w;
		} else {
			return config_fail(p, key,
			    "'%s' is not weight=N or backup",
			    tok);
		}
	}
	return 1;
}

/* A comma-separated list of backends into `set`. */
int
config_parse_backend_list(struct parse *p, const char *key, const char *v,
    struct config_listener *l, int set)
{
	char buf[2048];
	char *save = NULL;
	size_t before = l->nbackend;

	if (strlen(v) >= sizeof(buf))
		return config_fail(p, key, "value too long");
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (l->nbackend >= CONFIG_MAX_BACKENDS)
			return config_fail(p, key,
			    "more than %d backends in all",
			    CONFIG_MAX_BACKENDS);
		if (!parse_backend(p, key, tok, &l->backend[l->nbackend], set))
			return 0;
		l->nbackend++;
	}
	if (l->nbackend == before)
		return config_fail(p, key, "no address given");
	return 1;
}

/* "NAME: backend list" */
int
config_parse_backend_set(struct parse *p, const char *key, const char *v,
    struct config_listener *l)
{
	const char *colon = strchr(v, ':');
	size_t len = colon ? (size_t)(colon - v) : 0;

	if (colon == NULL || len == 0 || len >= CONFIG_SET_NAME ||
	    strspn(v, set_chars) != len)
		return config_fail(p, key,
		    "'%s' is not NAME: backends (a name of "
		    "letters, digits, '-', '_', '.')", v);
	for (size_t i = 0; i < l->nsets; i++)
		if (strlen(l->set_name[i]) == len &&
		    !strncmp(l->set_name[i], v, len))
			return config_fail(p, key, "set '%.*s' given twice",
			    (int)len,
			    v);
	if (l->nsets >= CONFIG_MAX_SETS)
		return config_fail(p, key, "more than %d backend sets",
		    CONFIG_MAX_SETS - 1);
	memcpy(l->set_name[l->nsets], v, len);
	l->set_name[l->nsets][len] = '\0';
	l->nsets++;
	colon++;
	colon += strspn(colon, " \t");
	return config_parse_backend_list(p, key, colon, l, (int)l->nsets - 1);
}

/* "sni:NAME -> SET" or "alpn:PROTO -> SET"; SET resolved later. */
int
config_parse_route(struct parse *p, const char *key, const char *v,
    struct config_listener *l)
{
	struct config_route *r;
	const char *arrow = strstr(v, "->"), *m, *end, *set;
	size_t mlen;

	if (l->nroutes >= CONFIG_MAX_ROUTES)
		return config_fail(p, key, "more than %d routes",
		    CONFIG_MAX_ROUTES);
	r = &l->route[l->nroutes];
	memset(r, 0, sizeof(*r));
	if (!strncmp(v, "sni:", 4)) {
		r->kind = CONFIG_ROUTE_SNI;
		m = v + 4;
	} else if (!strncmp(v, "alpn:", 5)) {
		r->kind = CONFIG_ROUTE_ALPN;
		m = v + 5;
	} else {
		return config_fail(p, key, "'%s' is not sni:NAME -> SET or "
		    "alpn:PROTOCOL -> SET", v);
	}
	if (arrow == NULL)
		return config_fail(p, key, "'%s': no '-> SET'", v);
	for (end = arrow; end > m && (end[-1] == ' ' || end[-1] == '\t');
	    end--)
		;
	mlen = (size_t)(end - m);
	if (mlen == 0 || mlen >= sizeof(r->match) ||
	    memchr(m, ' ', mlen) != NULL)
		return config_fail(p, key,
		    "'%s': an empty or bad name to match", v);
	memcpy(r->match, m, mlen);
	set = arrow + 2;
	set += strspn(set, " \t");
	if (*set == '\0' || strlen(set) >= CONFIG_SET_NAME ||
	    strspn(set, set_chars) != strlen(set))
		return config_fail(p, key, "'%s': a bad set name", v);
	snprintf(r->set_name, sizeof(r->set_name), "%s", set);
	r->line = p->line;
	l->nroutes++;
	return 1;
}

/* An octal mode for chmod: 0 to 0777. */
int
config_parse_mode(struct parse *p, const char *key, const char *v,
    unsigned *out)
{
	size_t n = strspn(v, "01234567");
	unsigned long m;

	if (n == 0 || v[n] != '\0' || n > 4)
		return config_fail(p, key, "'%s' is not an octal mode (0660)",
		    v);
	m = strtoul(v, NULL, 8);
	if (m > 0777)
		return config_fail(p, key, "'%s' is more than 0777", v);
	*out = (unsigned)m;
	return 1;
}

int
config_parse_choice(struct parse *p, const char *key, const char *v,
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
	return config_fail(p, key, "'%s' is not one of %s", v, all);
}

int
config_copy_str(struct parse *p, const char *key, const char *v, char *dst,
    size_t len)
{
	if (strlen(v) >= len)
		return config_fail(p, key, "value longer than %zu bytes",
		    len - 1);
	memcpy(dst, v, strlen(v) + 1);
	return 1;
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
		return config_fail(p, key,
		    "'%s': the scheme is nats:// or tls://", v);
	}
	if (netutil_parse_hostport(hp, host, sizeof(host), &port, why,
	    sizeof(why)) < 0)
		return config_fail(p, key, "'%s': %s", v, why);
	if (host[0] == '\0' || port == 0)
		return config_fail(p, key, "'%s' needs a host and a port", v);
	snprintf(out, outlen, strchr(host, ':') ? "%s[%s]:%d" : "%s%s:%d",
	    scheme, host, port);
	return 1;
}

int
config_parse_nats_list(struct parse *p, const char *key, const char *v,
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
			return config_fail(p, key, "more than %d servers",
			    CONFIG_MAX_NATS);
		if (!parse_nats_url(p, key, tok, cl->nats[cl->nnats],
		    sizeof(cl->nats[0])))
			return 0;
		cl->nnats++;
	}
	if (cl->nnats == 0)
		return config_fail(p, key, "no server given");
	return 1;
}

/* Node names go into logs, metric labels and heartbeats as they are. */
int
config_parse_node(struct parse *p, const char *key, const char *v, char *out,
    size_t outlen)
{
	if (*v == '\0')
		return config_fail(p, key, "empty name");
	for (const char *c = v; *c; c++)
		if (*c <= 0x20 || *c >= 0x7f || *c == '"' || *c == '\\')
			return config_fail(p, key,
			    "use printable ASCII without "
			    "blanks, quotes or backslashes");
	return config_copy_str(p, key, v, out, outlen);
}

/* Tokens of letters, digits, '-' and '_', separated by single dots. */
int
config_parse_prefix(struct parse *p, const char *key, const char *v, char *out,
    size_t outlen)
{
	static const char token_chars[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	const char *t = v;

	for (;;) {
		size_t n = strspn(t, token_chars);
		if (n == 0 || (t[n] != '\0' && t[n] != '.'))
			return config_fail(p, key,
			    "'%s' is not NATS subject tokens "
			    "(letters, digits, '-' and '_', separated by "
			    "single dots)", v);
		if (t[n] == '\0')
			break;
		t += n + 1;
	}
	return config_copy_str(p, key, v, out, outlen);
}
