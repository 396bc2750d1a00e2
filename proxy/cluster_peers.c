/* cluster_peers: see cluster_peers.h. */
#include "cluster_peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

void
peers_init(struct cluster_peers *p, const char *prefix)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->prefix, sizeof(p->prefix), "%s", prefix);
}

void
peers_free(struct cluster_peers *p)
{
	struct cluster_peer *q, *next;

	for (q = p->head; q != NULL; q = next) {
		next = q->next;
		buffer_free(&q->out);
		free(q);
	}
	p->head = NULL;
	p->alive = 0;
}

void
peers_subject(const char *prefix, const char *name, size_t len, char *out,
    size_t outlen)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char md[SHA256_DIGEST_LENGTH];
	char tok[17];

	SHA256((const unsigned char *)name, len, md);
	/* 96 bits, base64url: 16 characters a subject token may hold. */
	for (int i = 0, o = 0; i < 12; i += 3) {
		uint32_t v = (uint32_t)md[i] << 16 | (uint32_t)md[i + 1] << 8 |
		    md[i + 2];
		tok[o++] = b64[v >> 18 & 63];
		tok[o++] = b64[v >> 12 & 63];
		tok[o++] = b64[v >> 6 & 63];
		tok[o++] = b64[v & 63];
	}
	tok[16] = '\0';
	snprintf(out, outlen, "%s.n.%s", prefix, tok);
}

struct cluster_peer *
peers_find(struct cluster_peers *p, const char *name, size_t len)
{
	for (struct cluster_peer *q = p->head; q != NULL; q = q->next)
		if (q->len == len && memcmp(q->name, name, len) == 0)
			return q;
	return NULL;
}

struct cluster_peer *
peers_get(struct cluster_peers *p, const char *name, size_t len,
    ev_tstamp now)
{
	struct cluster_peer *q = peers_find(p, name, len);

	if (q != NULL || len == 0 || len > CLUSTER_NODE_MAX)
		return q;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	memcpy(q->name, name, len);
	q->len = len;
	q->last_seen = now;
	buffer_init(&q->out);
	peers_subject(p->prefix, name, len, q->subject, sizeof(q->subject));
	q->next = p->head;
	p->head = q;
	return q;
}

static void
set_alive(struct cluster_peers *p, struct cluster_peer *q, bool alive)
{
	if (alive && !q->alive)
		p->alive++;
	else if (!alive && q->alive)
		p->alive--;
	q->alive = alive;
	if (!alive)
		buffer_free(&q->out);
}

enum peer_news
peers_heard(struct cluster_peers *p, const char *name, size_t len,
    uint64_t instance, bool stopping, ev_tstamp now,
    struct cluster_peer **pp, uint64_t *old)
{
	struct cluster_peer *q = peers_find(p, name, len);
	enum peer_news news;

	*old = 0;
	if (q == NULL) {
		q = peers_get(p, name, len, now);
		news = PEER_NEW;
	} else if (q->instance != instance && q->instance != 0) {
		*old = q->instance;
		news = PEER_RESTARTED;
	} else {
		news = q->alive ? PEER_SAME : PEER_BACK;
	}
	*pp = q;
	if (q == NULL)
		return news;
	q->instance = instance;
	q->last_seen = now;
	q->written_off = false;
	if (stopping) {
		bool was = q->alive;
		set_alive(p, q, false);
		return was || news == PEER_RESTARTED ? PEER_STOPPING : PEER_SAME;
	}
	set_alive(p, q, true);
	return news;
}

void
peers_listening(struct cluster_peers *p, ev_tstamp now)
{
	p->listening_since = now;
	if (now == 0)
		return;
	/* Everyone gets a whole window to be heard from now. */
	for (struct cluster_peer *q = p->head; q != NULL; q = q->next)
		if (q->last_seen < now)
			q->last_seen = now;
}

void
peers_expire(struct cluster_peers *p, ev_tstamp now,
    void (*dead)(void *arg, struct cluster_peer *peer), void *arg)
{
	if (p->listening_since == 0)
		return;
	for (struct cluster_peer *q = p->head; q != NULL; q = q->next) {
		if (now - q->last_seen <= CLUSTER_DEAD_AFTER)
			continue;
		if (q->alive) {
			set_alive(p, q, false);
			dead(arg, q);
		} else if (q->instance == 0 && !q->written_off) {
			q->written_off = true;
			dead(arg, q);
		}
	}
}

enum peer_verdict
peers_judge(const struct cluster_peers *p, const char *name, size_t len,
    uint64_t instance, ev_tstamp now)
{
	for (const struct cluster_peer *q = p->head; q != NULL; q = q->next) {
		if (q->len != len || memcmp(q->name, name, len) != 0)
			continue;
		if (q->instance == 0)
			break;		/* named (by its interest), never heard */
		if (q->instance != instance || !q->alive)
			return PEER_DEAD;
		return PEER_ALIVE;
	}
	if (p->listening_since > 0 &&
	    now - p->listening_since >= CLUSTER_DEAD_AFTER)
		return PEER_DEAD;
	return PEER_UNKNOWN;
}
