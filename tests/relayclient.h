/*
 * relayclient: blocking clients of the relay protocol (version 1, its
 * bytes from relay_proto.h) for tests, plain or TLS, on 127.0.0.1.
 *
 * The socket is non-blocking underneath and every call waits with poll()
 * for at most its timeout, so a test can ask "did the producer block?" or
 * "did the server close?" and never hangs.  TLS clients verify the server
 * against certs/ca.pem for the name "localhost".
 *
 * Frames of the test streams carry their sequence number in every value
 * (rc_frame), so a reader can tell a whole frame from a torn one and see
 * gaps and reordering (rc_frame_seq).
 *
 * Nothing here asserts: functions report, tests decide.  Usable from
 * threads (one client per thread).
 */
#ifndef FERRY_TEST_RELAYCLIENT_H
#define FERRY_TEST_RELAYCLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "metrics_read.h"

#define RC_TIMEOUT 10.0		/* default per-call timeout, seconds */

struct rclient {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	double timeout;
	char *keys;			/* consumer: the keys the server sent */
	size_t keys_len;
	size_t nkeys;			/* keys (producer: sent, consumer: got) */
	int refused_at;			/* step answered 0x01 (1..3), or 0 */
};

/* Results of the protocol helpers. */
enum { RC_OK = 0, RC_REFUSED = 1, RC_ERROR = -1 };
/* rc_read(): nothing arrived within the timeout. */
#define RC_TIMEDOUT (-2)

/*
 * Connects to 127.0.0.1:port (TLS when `tls`; with rcvbuf > 0 the
 * socket's receive buffer is set first, to make a small window).  0 or -1.
 */
int rc_connect(struct rclient *c, bool tls, int port, int rcvbuf);
/*
 * TLS to 127.0.0.1:port with a client certificate (cert/key PEM files;
 * NULL: none).  0 or -1 (the handshake failed).  Under TLS 1.3 the
 * server checks the certificate after the client's handshake is done: a
 * refusal then shows as the first read failing.
 */
int rc_connect_cert(struct rclient *c, int port, const char *cert,
    const char *key, int rcvbuf);
/* Clean close (close_notify, FIN). */
void rc_close(struct rclient *c);
/* Abortive close: RST (SO_LINGER 0), no close_notify. */
void rc_reset(struct rclient *c);
/* Frees the client without a word to the server (socket closed). */
void rc_free(struct rclient *c);

/* Writes up to len bytes within `timeout`; returns bytes written. */
size_t rc_write(struct rclient *c, const void *buf, size_t len,
    double timeout);
/* All of it within c->timeout. */
bool rc_send(struct rclient *c, const void *buf, size_t len);
bool rc_send_byte(struct rclient *c, int b);
bool rc_send_u32(struct rclient *c, uint32_t v);
/* A length-prefixed field: BE32 length, then the bytes. */
bool rc_send_field(struct rclient *c, const void *p, size_t len);

/* Up to len bytes: > 0, 0 on EOF, -1 on error (reset), RC_TIMEDOUT. */
long rc_read(struct rclient *c, void *buf, size_t len, double timeout);
/* Exactly len bytes within c->timeout each read. */
bool rc_read_exact(struct rclient *c, void *buf, size_t len);
/* One byte (0..255), or -1 on EOF/error, RC_TIMEDOUT. */
int rc_byte(struct rclient *c, double timeout);
/* The server closed (EOF or reset) with no more bytes within `timeout`. */
bool rc_closed(struct rclient *c, double timeout);
/* Nothing arrives (and no close) within `timeout`. */
bool rc_quiet(struct rclient *c, double timeout);

/*
 * The whole producer registration: role, uuid, keys, each answered 0x00.
 * RC_OK; RC_REFUSED (c->refused_at = step); RC_ERROR (connect, close,
 * other answer).  The connection stays open in every case.
 */
int rc_producer(struct rclient *c, bool tls, int port, const char *uuid,
    const char *keys);
/* The same on a connected client. */
int rc_register(struct rclient *c, const char *uuid, size_t ulen,
    const char *keys, size_t klen);
/*
 * A consumer: role, uuid, reads the keys into c->keys, sends the accept
 * byte.  RC_OK, RC_REFUSED (at step 1 or 2), RC_ERROR.
 */
int rc_consumer(struct rclient *c, bool tls, int port, const char *uuid,
    int rcvbuf);
/* The same on a connected client. */
int rc_subscribe(struct rclient *c, const char *uuid);
/*
 * A consumer's first steps on a connected client: role, uuid, the keys
 * read into c->keys, and no accept byte (the caller sends it, or not).
 * RC_OK, RC_REFUSED (at step 1 or 2), RC_ERROR.
 */
int rc_ask_keys(struct rclient *c, const char *uuid);

/*
 * n distinct key names joined by ',', shortest first ("0,...,z,00,..."),
 * so that many fit: 16,384 take 61,567 bytes.  Allocated; NULL without
 * memory.
 */
char *rc_key_names(size_t n);

/* Frame `seq` of a test stream: value j is seq * 8 + j % 8 (exact). */
void rc_frame(uint8_t *out, size_t nkeys, uint32_t seq);
/* The sequence number of a whole test frame; false if it is torn. */
bool rc_frame_seq(const uint8_t *f, size_t nkeys, uint32_t *seq);
/* Sends frames first .. first + n - 1 within c->timeout. */
bool rc_send_frames(struct rclient *c, uint32_t first, size_t n);
/*
 * Reads n frames, each whole, into seqs (may be NULL); returns how many
 * were read before an EOF, error, timeout or torn frame (*torn set).
 */
size_t rc_read_frames(struct rclient *c, size_t n, uint32_t *seqs,
    bool *torn);

/*
 * A consumer that keeps reading: a thread reads what has arrived (up to
 * 256 KB at a time, never past the want-th frame) until `want` frames, or
 * an EOF, error, timeout or torn frame, keeping each frame's sequence
 * number.
 */
struct rc_reader {
	pthread_t th;
	struct rclient *c;
	size_t want;
	uint32_t *seqs;			/* want entries; [0, got) written */
	size_t got;			/* atomic: read it with rc_reader_got */
	bool torn;
};

/* 0, or -1 (no memory, no thread). */
int rc_reader_start(struct rc_reader *r, struct rclient *c, size_t want);
/* Frames read so far. */
size_t rc_reader_got(struct rc_reader *r);
/* Waits for the thread to end (want frames, or it stopped). */
void rc_reader_join(struct rc_reader *r);
/* Frees seqs (after rc_reader_join). */
void rc_reader_free(struct rc_reader *r);
/*
 * Waits (timeout seconds at most) until each of nr readers has frames 0 ..
 * n - 1 of a stream whose frames are numbered from 0.  RC_OK; RC_ERROR as
 * soon as one has lost (or reordered) frames: its last frame's number is
 * not its count, or it stopped short; RC_TIMEDOUT.  *which says which.
 */
int rc_readers_take(struct rc_reader *rs, size_t nr, size_t n,
    double timeout, size_t *which);

/* rc_metric(): metrics_read.h. */

#endif
