/* acl: see acl.h. */
#define _GNU_SOURCE
#include "acl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest uuid the protocol allows: a longer pattern matches nothing. */
#define ACL_MAX_UUID 255

enum id_match { ID_ANY = -1 };	/* else an enum peer_id_kind */

struct acl_rule {
	enum acl_role role;
	int kind;			/* enum peer_id_kind, or ID_ANY */
	char *value;			/* the identity's value (not for ID_ANY) */
	size_t vlen;
	char *pattern;			/* the uuid, or its prefix */
	size_t plen;
	bool prefix;			/* pattern ended with '*' */
	int line;
};

struct acl {
	char path[512];
	struct acl_rule *rules;
	size_t n, cap;
};

const char *
acl_role_name(enum acl_role role)
{
	return role == ACL_PRODUCE ? "produce" : "consume";
}

size_t
acl_rules(const struct acl *a)
{
	return a->n;
}

const char *
acl_path(const struct acl *a)
{
	return a->path;
}

void
acl_free(struct acl *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n; i++) {
		free(a->rules[i].value);
		free(a->rules[i].pattern);
	}
	free(a->rules);
	free(a);
}

/* ---- parsing ---- */

struct lexer {
	const char *label;
	int line;
	char *err;
	size_t errlen;
};

static int lex_fail(struct lexer *lx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int
lex_fail(struct lexer *lx, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(lx->err, lx->errlen, "%s:%d: %s", lx->label, lx->line, why);
	return -1;
}

static bool
blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/*
 * One field of [p, end) into a malloc'd, NUL-terminated copy; *p moves past
 * it.  Returns 1 with a field, 0 at the end of the line or a comment, -1
 * on an error.
 */
static int
next_field(struct lexer *lx, const char **p, const char *end, char **out,
    size_t *outlen)
{
	const char *s = *p;
	char *f;
	size_t n = 0;

	while (s < end && blank(*s))
		s++;
	*p = s;
	if (s == end || *s == '#')
		return 0;
	f = malloc((size_t)(end - s) + 1);
	if (f == NULL)
		return lex_fail(lx, "out of memory");
	if (*s != '"') {
		while (s < end && !blank(*s)) {
			if (*s == '"') {
				free(f);
				return lex_fail(lx, "a '\"' inside a field: "
				    "quote the whole field");
			}
			f[n++] = *s++;
		}
	} else {
		for (s++;; s++) {
			if (s == end) {
				free(f);
				return lex_fail(lx, "unterminated quote");
			}
			if (*s == '"')
				break;
			if (*s == '\\') {
				if (s + 1 == end || (s[1] != '"' &&
				    s[1] != '\\')) {
					free(f);
					return lex_fail(lx, "only \\\" and "
					    "\\\\ are escapes");
				}
				s++;
			}
			f[n++] = *s;
		}
		s++;
		if (s < end && !blank(*s)) {
			free(f);
			return lex_fail(lx, "a blank must follow a closing "
			    "quote");
		}
	}
	f[n] = '\0';
	*p = s;
	*out = f;
	*outlen = n;
	return 1;
}

/* What logs and metric labels show as is: no control characters. */
static const char *
bad_char(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return "a control character";
	return NULL;
}

static int
parse_identity(struct lexer *lx, struct acl_rule *r, char *f, size_t len)
{
	static const struct {
		const char *prefix;
		enum peer_id_kind kind;
	} kinds[] = {
		{ "cn:", PEER_ID_CN },
		{ "dns:", PEER_ID_DNS },
		{ "email:", PEER_ID_EMAIL },
		{ "uri:", PEER_ID_URI },
	};
	const char *why;

	if (strcmp(f, "*") == 0) {
		r->kind = ID_ANY;
		free(f);
		return 0;
	}
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t pl = strlen(kinds[i].prefix);
		if (len < pl || strncasecmp(f, kinds[i].prefix, pl) != 0)
			continue;
		if (len == pl) {
			free(f);
			return lex_fail(lx, "identity '%s' has no value after "
			    "the ':'", kinds[i].prefix);
		}
		if ((why = bad_char(f + pl, len - pl)) != NULL) {
			free(f);
			return lex_fail(lx, "identity has %s", why);
		}
		memmove(f, f + pl, len - pl + 1);
		r->kind = (int)kinds[i].kind;
		r->value = f;
		r->vlen = len - pl;
		return 0;
	}
	lex_fail(lx, "identity '%.64s': use cn:NAME, dns:NAME, email:ADDR, "
	    "uri:URI or *", bad_char(f, len) ? "?" : f);
	free(f);
	return -1;
}

static int
parse_pattern(struct lexer *lx, struct acl_rule *r, char *f, size_t len)
{
	const char *star = memchr(f, '*', len);
	const char *why;

	if (len == 0) {
		free(f);
		return lex_fail(lx, "empty uuid pattern");
	}
	if (star != NULL && star != f + len - 1) {
		free(f);
		return lex_fail(lx, "uuid pattern: '*' only at the end");
	}
	if ((why = bad_char(f, len)) != NULL) {
		free(f);
		return lex_fail(lx, "uuid pattern has %s", why);
	}
	r->prefix = star != NULL;
	r->plen = r->prefix ? len - 1 : len;
	if (r->plen > ACL_MAX_UUID) {
		free(f);
		return lex_fail(lx, "uuid pattern longer than %d bytes matches "
		    "no uuid", ACL_MAX_UUID);
	}
	f[r->plen] = '\0';
	r->pattern = f;
	return 0;
}

static int
add_rule(struct lexer *lx, struct acl *a, const struct acl_rule *r)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		struct acl_rule *nr = realloc(a->rules, cap * sizeof(*nr));
		if (nr == NULL)
			return lex_fail(lx, "out of memory");
		a->rules = nr;
		a->cap = cap;
	}
	a->rules[a->n++] = *r;
	return 0;
}

/* One line; every field it allocates ends in `a` or is freed. */
static int
parse_line(struct lexer *lx, struct acl *a, const char *p, const char *end)
{
	struct acl_rule r = { .line = lx->line };
	char *f, *extra;
	size_t len;
	int got;

	if ((got = next_field(lx, &p, end, &f, &len)) <= 0)
		return got;
	if (strcmp(f, "produce") == 0)
		r.role = ACL_PRODUCE;
	else if (strcmp(f, "consume") == 0)
		r.role = ACL_CONSUME;
	else {
		lex_fail(lx, "role '%.32s': use produce or consume",
		    bad_char(f, len) ? "?" : f);
		free(f);
		return -1;
	}
	free(f);
	if ((got = next_field(lx, &p, end, &f, &len)) <= 0)
		return got < 0 ? -1 : lex_fail(lx, "missing the identity and "
		    "the uuid pattern");
	if (parse_identity(lx, &r, f, len) < 0)
		return -1;
	if ((got = next_field(lx, &p, end, &f, &len)) <= 0) {
		free(r.value);
		return got < 0 ? -1 : lex_fail(lx, "missing the uuid pattern");
	}
	if (parse_pattern(lx, &r, f, len) < 0) {
		free(r.value);
		return -1;
	}
	if ((got = next_field(lx, &p, end, &extra, &len)) != 0) {
		if (got > 0) {
			free(extra);
			lex_fail(lx, "more than three fields (quote a field "
			    "with blanks; '#' starts a comment)");
		}
		free(r.value);
		free(r.pattern);
		return -1;
	}
	if (add_rule(lx, a, &r) < 0) {
		free(r.value);
		free(r.pattern);
		return -1;
	}
	return 0;
}

struct acl *
acl_parse(const char *text, size_t len, const char *label, char *err,
    size_t errlen)
{
	struct lexer lx = { .label = label, .err = err, .errlen = errlen };
	const char *p = text, *end = text + len;
	struct acl *a = calloc(1, sizeof(*a));

	if (a == NULL) {
		snprintf(err, errlen, "%s: out of memory", label);
		return NULL;
	}
	snprintf(a->path, sizeof(a->path), "%s", label);
	if (memchr(text, '\0', len) != NULL) {
		snprintf(err, errlen, "%s: a NUL byte: not a text file", label);
		acl_free(a);
		return NULL;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl != NULL ? nl : end;

		lx.line++;
		if (parse_line(&lx, a, p, eol) < 0) {
			acl_free(a);
			return NULL;
		}
		p = nl != NULL ? nl + 1 : end;
	}
	return a;
}

struct acl *
acl_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	struct acl *a;
	char *buf;
	size_t len;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(ACL_MAX_FILE + 1);
	if (buf == NULL) {
		fclose(f);
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	len = fread(buf, 1, ACL_MAX_FILE + 1, f);
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		a = NULL;
	} else if (len > ACL_MAX_FILE) {
		snprintf(err, errlen, "%s: larger than %d bytes", path,
		    ACL_MAX_FILE);
		a = NULL;
	} else {
		a = acl_parse(buf, len, path, err, errlen);
	}
	free(buf);
	fclose(f);
	return a;
}

/* ---- matching ---- */

static bool
id_matches(const struct acl_rule *r, const struct peer_id *id)
{
	if ((int)id->kind != r->kind || id->len != r->vlen)
		return false;
	/* DNS names are case-insensitive; the others are compared exactly. */
	if (id->kind == PEER_ID_DNS)
		return strncasecmp(id->value, r->value, r->vlen) == 0;
	return memcmp(id->value, r->value, r->vlen) == 0;
}

static bool
uuid_matches(const struct acl_rule *r, const char *uuid, size_t ulen)
{
	if (r->prefix)
		return ulen >= r->plen && memcmp(uuid, r->pattern, r->plen) ==
		    0;
	return ulen == r->plen && memcmp(uuid, r->pattern, ulen) == 0;
}

int
acl_check(const struct acl *a, enum acl_role role,
    const struct peer_ids *ids, const char *uuid, size_t ulen,
    const struct peer_id **matched)
{
	if (matched != NULL)
		*matched = NULL;
	if (ids == NULL)
		return 0;
	for (size_t i = 0; i < a->n; i++) {
		const struct acl_rule *r = &a->rules[i];

		if (r->role != role || !uuid_matches(r, uuid, ulen))
			continue;
		if (r->kind == ID_ANY)
			return r->line;
		for (size_t k = 0; k < ids->n; k++)
			if (id_matches(r, &ids->id[k])) {
				if (matched != NULL)
					*matched = &ids->id[k];
				return r->line;
			}
	}
	return 0;
}
