/* relay_proto: see relay_proto.h. */
#define _GNU_SOURCE
#include "relay_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
relay_limits_default(struct relay_limits *l)
{
	l->max_uuid = RELAY_MAX_UUID;
	l->max_keys_bytes = RELAY_MAX_KEYS_BYTES;
	l->max_keys = RELAY_MAX_KEYS;
}

bool
relay_utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned c = u[i], cp;
		size_t more;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			more = 1;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3;
		else
			return false;
		cp = c & (0x3fu >> more);
		if (len - i - 1 < more)
			return false;
		for (size_t k = 1; k <= more; k++) {
			if ((u[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (u[i + k] & 0x3f);
		}
		/* Overlong forms, surrogates and beyond U+10FFFF. */
		if (cp < (more == 1 ? 0x80u : more == 2 ? 0x800u : 0x10000u) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += more + 1;
	}
	return true;
}

size_t
relay_keys_count(const char *k, size_t len)
{
	size_t n = 1;

	for (size_t i = 0; i < len; i++)
		n += k[i] == RELAY_KEY_SEP;
	return n;
}

/* ---- the checks ---- */

static enum relay_verdict say(char *why, size_t whylen,
    enum relay_verdict v, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Returns v with the reason in why. */
static enum relay_verdict
say(char *why, size_t whylen, enum relay_verdict v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return v;
}

/* Whether a uuid or key byte is a control character (NUL included). */
static bool
is_control(char c)
{
	return (unsigned char)c < 0x20 || c == 0x7f;
}

/* A field's length (field 0: uuid, 1: keys) against its limit. */
static enum relay_verdict
check_len(const struct relay_limits *l, int field, uint64_t len, char *why,
    size_t whylen)
{
	size_t max = field == 0 ? l->max_uuid : l->max_keys_bytes;

	if (len == 0 || len > max)
		return say(why, whylen, RELAY_BROKEN, "%s length %lu out of "
		    "range 1..%zu", field == 0 ? "uuid" : "keys",
		    (unsigned long)len, max);
	return RELAY_VALID;
}

enum relay_verdict
relay_check_uuid(const struct relay_limits *l, const char *u, size_t len,
    char *why, size_t whylen)
{
	if (check_len(l, 0, len, why, whylen) != RELAY_VALID)
		return RELAY_BROKEN;
	if (!relay_utf8_valid(u, len))
		return say(why, whylen, RELAY_BROKEN, "uuid is not UTF-8");
	/* An identifier: shown in logs and metric labels as is. */
	for (size_t i = 0; i < len; i++)
		if (is_control(u[i]))
			return say(why, whylen, RELAY_BROKEN, "uuid has a "
			    "control character (0x%02x)",
			    (unsigned)(unsigned char)u[i]);
	return RELAY_VALID;
}

/*
 * Counts the names of a key list into *n; broken by an empty name or a
 * control character.
 */
static enum relay_verdict
count_names(const char *k, size_t len, size_t *n, char *why, size_t whylen)
{
	size_t cur = 0;

	*n = 1;
	for (size_t i = 0; i < len; i++) {
		if (k[i] == RELAY_KEY_SEP) {
			if (cur == 0)
				break;
			++*n;
			cur = 0;
		} else if (is_control(k[i])) {
			return say(why, whylen, RELAY_BROKEN, "key %zu has a "
			    "control character (0x%02x)", *n,
			    (unsigned)(unsigned char)k[i]);
		} else {
			cur++;
		}
	}
	if (cur == 0)
		return say(why, whylen, RELAY_BROKEN, "empty key name");
	return RELAY_VALID;
}

/* One name of a key list, for the duplicate check. */
struct key_name {
	uint32_t off, len;
};

static int
key_name_cmp(const void *a, const void *b, void *keys)
{
	const struct key_name *x = a, *y = b;
	const char *k = keys;
	int c = memcmp(k + x->off, k + y->off, x->len < y->len ? x->len :
	    y->len);

	if (c != 0)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	/* Equal names: the first in the list first, to name the pair. */
	return x->off < y->off ? -1 : x->off > y->off;
}

/* The 1-based position of the name at byte `off` of the list. */
static size_t
key_position(const char *k, uint32_t off)
{
	return relay_keys_count(k, off);
}

/*
 * Whether two of the n names (well-formed, non-empty) of the list are the
 * same.  Sorted, not compared in pairs: 16,384 names would be 134 million
 * comparisons.
 */
static enum relay_verdict
unique_names(const char *k, size_t len, size_t n, char *why, size_t whylen)
{
	enum relay_verdict v = RELAY_VALID;
	struct key_name *names;
	size_t i = 0, start = 0;

	if (n < 2)
		return RELAY_VALID;
	if ((names = malloc(n * sizeof(*names))) == NULL)
		return say(why, whylen, RELAY_NOMEM, "out of memory");
	for (size_t b = 0; b <= len; b++)
		if (b == len || k[b] == RELAY_KEY_SEP) {
			names[i].off = (uint32_t)start;
			names[i].len = (uint32_t)(b - start);
			i++;
			start = b + 1;
		}
	qsort_r(names, n, sizeof(*names), key_name_cmp, (void *)k);
	for (i = 1; i < n; i++) {
		const struct key_name *x = &names[i - 1], *y = &names[i];
		if (x->len == y->len &&
		    memcmp(k + x->off, k + y->off, x->len) == 0) {
			v = say(why, whylen, RELAY_BROKEN, "keys %zu and %zu "
			    "have the same name", key_position(k, x->off),
			    key_position(k, y->off));
			break;
		}
	}
	free(names);
	return v;
}

enum relay_verdict
relay_check_keys(const struct relay_limits *l, const char *k, size_t len,
    size_t *count, char *why, size_t whylen)
{
	enum relay_verdict v;
	size_t n;

	*count = 0;
	if (check_len(l, 1, len, why, whylen) != RELAY_VALID)
		return RELAY_BROKEN;
	if (!relay_utf8_valid(k, len))
		return say(why, whylen, RELAY_BROKEN, "keys are not UTF-8");
	if ((v = count_names(k, len, &n, why, whylen)) != RELAY_VALID)
		return v;
	if (n > l->max_keys)
		return say(why, whylen, RELAY_BROKEN, "%zu keys, more than %zu",
		    n, l->max_keys);
	/* Names the consumers map values by: one name, one value. */
	if ((v = unique_names(k, len, n, why, whylen)) != RELAY_VALID)
		return v;
	*count = n;
	return RELAY_VALID;
}

/* ---- the parser ---- */

void
relay_parser_init(struct relay_parser *p, const struct relay_limits *l)
{
	memset(p, 0, sizeof(*p));
	p->state = RELAY_PS_ROLE;
	p->lim = *l;
}

void
relay_parser_free(struct relay_parser *p)
{
	free(p->body);
	free(p->scratch);
	p->body = p->scratch = NULL;
}

/* Ends the parser with the error in p->err; returns 1 (stop). */
static int
fail_with(struct relay_parser *p, relay_event_cb cb, void *arg,
    bool limit, bool nomem)
{
	struct relay_event ev = { .type = RELAY_EV_ERROR, .role = p->role,
	    .error = p->err, .limit = limit, .nomem = nomem };

	p->state = RELAY_PS_DEAD;
	cb(arg, &ev);
	return 1;
}

/* The same for a check's verdict (not RELAY_VALID). */
static int
fail_check(struct relay_parser *p, relay_event_cb cb, void *arg,
    enum relay_verdict v)
{
	return fail_with(p, cb, arg, v == RELAY_BROKEN, v == RELAY_NOMEM);
}

static int
fail_nomem(struct relay_parser *p, relay_event_cb cb, void *arg)
{
	snprintf(p->err, sizeof(p->err), "out of memory");
	return fail_with(p, cb, arg, false, true);
}

/* A complete uuid or key list of p->need bytes. */
static int
field_done(struct relay_parser *p, const char *body, relay_event_cb cb,
    void *arg)
{
	struct relay_event ev = { .role = p->role, .data = body,
	    .len = p->need };
	enum relay_verdict v;

	if (p->field == 0) {
		v = relay_check_uuid(&p->lim, body, p->need, p->err,
		    sizeof(p->err));
		if (v != RELAY_VALID)
			return fail_check(p, cb, arg, v);
		ev.type = RELAY_EV_UUID;
		p->state = p->role == RELAY_PRODUCER ? RELAY_PS_LEN :
		    RELAY_PS_ACCEPT;
		p->field = 1;
		p->lenhave = 0;
		return cb(arg, &ev);
	}
	v = relay_check_keys(&p->lim, body, p->need, &ev.count, p->err,
	    sizeof(p->err));
	if (v != RELAY_VALID)
		return fail_check(p, cb, arg, v);
	ev.type = RELAY_EV_KEYS;
	p->frame_size = relay_frame_size(ev.count);
	p->state = RELAY_PS_FRAMES;
	return cb(arg, &ev);
}

static int
length_done(struct relay_parser *p, relay_event_cb cb, void *arg)
{
	uint32_t need = relay_len_get(p->lenbuf);
	enum relay_verdict v;

	/* Checked before anything is allocated: 4 GB claims cost nothing. */
	v = check_len(&p->lim, p->field, need, p->err, sizeof(p->err));
	if (v != RELAY_VALID)
		return fail_check(p, cb, arg, v);
	p->need = need;
	p->bodyhave = 0;
	p->state = RELAY_PS_BODY;
	return 0;
}

static int
feed_body(struct relay_parser *p, const char *data, size_t len,
    size_t *used, relay_event_cb cb, void *arg)
{
	size_t n = p->need - p->bodyhave;
	int stop;

	if (p->bodyhave == 0 && len >= n) {
		/* Whole in this chunk: no copy. */
		*used = n;
		return field_done(p, data, cb, arg);
	}
	if (p->body == NULL && (p->body = malloc(p->need)) == NULL) {
		*used = 0;
		return fail_nomem(p, cb, arg);
	}
	if (n > len)
		n = len;
	memcpy(p->body + p->bodyhave, data, n);
	p->bodyhave += n;
	*used = n;
	if (p->bodyhave < p->need)
		return 0;
	stop = field_done(p, p->body, cb, arg);
	free(p->body);
	p->body = NULL;
	return stop;
}

static int
feed_frames(struct relay_parser *p, const char *data, size_t len,
    size_t *used, relay_event_cb cb, void *arg)
{
	struct relay_event ev = { .type = RELAY_EV_FRAMES, .role = p->role };
	size_t fs = p->frame_size, i = 0;

	*used = 0;
	if (p->scratch_have > 0) {
		size_t n = fs - p->scratch_have;
		if (n > len)
			n = len;
		memcpy(p->scratch + p->scratch_have, data, n);
		p->scratch_have += n;
		i = *used = n;
		if (p->scratch_have < fs)
			return 0;
		p->scratch_have = 0;
		ev.data = p->scratch;
		ev.count = 1;
		ev.len = fs;
		if (cb(arg, &ev))
			return 1;
	}
	if (len - i >= fs) {
		ev.count = (len - i) / fs;
		ev.data = data + i;
		ev.len = ev.count * fs;
		i += ev.len;
		*used = i;
		if (cb(arg, &ev))
			return 1;
	}
	if (i < len) {
		/* The head of a frame: kept until its tail arrives. */
		if (p->scratch == NULL && (p->scratch = malloc(fs)) == NULL)
			return fail_nomem(p, cb, arg);
		memcpy(p->scratch, data + i, len - i);
		p->scratch_have = len - i;
		*used = len;
	}
	return 0;
}

/* The first byte: the client's role. */
static int
feed_role(struct relay_parser *p, unsigned char b, relay_event_cb cb,
    void *arg)
{
	struct relay_event ev = { .type = RELAY_EV_ROLE, .role = b };

	if (b != RELAY_PRODUCER && b != RELAY_CONSUMER) {
		snprintf(p->err, sizeof(p->err), "unknown first byte 0x%02x",
		    b);
		return fail_with(p, cb, arg, false, false);
	}
	p->role = b;
	p->state = RELAY_PS_LEN;
	p->field = 0;
	p->lenhave = 0;
	return cb(arg, &ev);
}

size_t
relay_parser_feed(struct relay_parser *p, const char *data, size_t len,
    relay_event_cb cb, void *arg)
{
	size_t i = 0, used;
	int stop = 0;

	while (i < len && !stop) {
		switch (p->state) {
		case RELAY_PS_ROLE:
			stop = feed_role(p, (unsigned char)data[i++], cb, arg);
			break;
		case RELAY_PS_LEN:
			while (i < len && p->lenhave < RELAY_LEN_SIZE)
				p->lenbuf[p->lenhave++] = (uint8_t)data[i++];
			if (p->lenhave == RELAY_LEN_SIZE)
				stop = length_done(p, cb, arg);
			break;
		case RELAY_PS_BODY:
			stop = feed_body(p, data + i, len - i, &used, cb, arg);
			i += used;
			break;
		case RELAY_PS_ACCEPT: {
			struct relay_event ev = { .type = RELAY_EV_ACCEPT,
			    .role = (unsigned char)data[i++] };
			p->state = RELAY_PS_IGNORE;
			stop = cb(arg, &ev);
			break;
		}
		case RELAY_PS_FRAMES:
			stop = feed_frames(p, data + i, len - i, &used, cb,
			    arg);
			i += used;
			break;
		case RELAY_PS_IGNORE:
			/* A consumer has nothing more to say; ignore it. */
			p->ignored += len - i;
			i = len;
			break;
		case RELAY_PS_DEAD:
			return i;
		}
	}
	return i;
}
