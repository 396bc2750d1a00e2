/*
 * tls_tickets: the keys that seal TLS session tickets, shared by every
 * worker and kept across reloads and worker restarts.
 *
 * A struct tls_tickets is made before the workers fork (listeners_new, in
 * the supervisor), and its keys live in a shared anonymous mapping: every
 * worker, and every worker the supervisor restarts later, sees the same
 * keys, so a client resumes whichever worker it lands on.  A reload
 * (SIGHUP) keeps them; before this, each worker's rebuilt SSL_CTX made
 * keys of its own, and after one SIGHUP with two workers most resumptions
 * failed.
 *
 * The keys form generations: keys[0] of the current generation seals new
 * tickets, every key of it opens them.  Two sources:
 *  - generated (no file): random keys made at start.  Every `rotate`
 *    seconds (0: never) the first process to seal a ticket after the
 *    deadline publishes a new generation: a new random key first, the
 *    previous keys after it, up to TLS_TICKETS_KEEP in all; so a ticket
 *    opens for between (KEEP - 1) and KEEP rotation periods (and never
 *    beyond the session's own lifetime, which OpenSSL checks).  A ticket
 *    opened with an older key is answered with a fresh one.
 *  - a file (`ticket_keys = FILE`): keys of 80 bytes each, laid out as
 *    nginx reads them (16-byte name, 32-byte HMAC-SHA256 key, 32-byte
 *    AES-256 key), 1 to TLS_TICKETS_MAX of them; the first seals.  The
 *    operator rotates by rewriting the file and sending SIGHUP; several
 *    machines with one file resume each other's tickets.
 *
 * Publishing is lock-free for readers: a writer claims the next slot of a
 * small ring with a compare-and-swap, fills it, then moves the head.  A
 * reader reads the head's slot; writers are rare (a rotation per period,
 * a reload), so the slot a reader holds is never the one being written.
 * A claim left by a process killed while writing (a few hundred bytes of
 * copying) is taken over after 5 s.
 */
#ifndef FERRY_TLS_TICKETS_H
#define FERRY_TLS_TICKETS_H

#include <stdbool.h>
#include <stddef.h>

#define TLS_TICKETS_MAX 8	/* keys in a file */
#define TLS_TICKETS_KEEP 3	/* generated: the sealing key + 2 previous */
#define TLS_TICKETS_KEYLEN 80

struct tls_tickets;

/*
 * Keys from `file` (NULL: generated, rotated every `rotate` seconds, 0 =
 * never).  Call before forking.  NULL with err on a bad file or when
 * memory cannot be had.
 */
struct tls_tickets *tls_tickets_new(const char *file, double rotate,
    char *err, size_t errlen);

/*
 * SIGHUP: re-reads the file (generated keys are kept as they are).  A
 * file whose keys are already published changes nothing, so the
 * supervisor's reload publishes and its workers', which follow, do not.
 * 0, or -1 with err (the current keys stay).
 */
int tls_tickets_reload(struct tls_tickets *t, char *err, size_t errlen);

/*
 * Another holder of `t` in this process (a reload's new listener sharing
 * the keys of the one it replaces): each calls tls_tickets_free.
 */
struct tls_tickets *tls_tickets_ref(struct tls_tickets *t);

/*
 * Drops a reference (NULL is ignored); the last one frees.  The mapping
 * goes with the last process using it.
 */
void tls_tickets_free(struct tls_tickets *t);

/* How many keys open tickets now; the name of the one that seals. */
size_t tls_tickets_count(const struct tls_tickets *t);
void tls_tickets_current_name(const struct tls_tickets *t,
    unsigned char name[16]);

/*
 * For tls_ctx: seal and open this SSL_CTX's tickets with `t` (which must
 * outlive the context).  0, or -1.
 */
struct ssl_ctx_st;
int tls_tickets_install(struct tls_tickets *t, struct ssl_ctx_st *ctx);

#endif
