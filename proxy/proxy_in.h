/*
 * proxy_in: the PROXY protocol header a client's load balancer sends
 * first (HAProxy's proxy-protocol.txt, versions 1 and 2), parsed strictly.
 * Pure: libc only, no I/O, no state (the fuzz target links it alone).
 *
 * The parser sees the bytes received so far, from the connection's first,
 * and says one of three things: the header is complete (its length, and
 * the addresses), it is not yet (every byte so far can only be part of a
 * header: the caller may consume them all and wait for more), or the
 * bytes cannot start a valid header (why).  So a reader can peek, parse,
 * and consume exactly the header, never a byte of what follows (a TLS
 * ClientHello).
 *
 * Strict, as the specification asks of a receiver:
 *   v1  "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n", single spaces, addresses
 *       as inet_pton reads them for that family, ports 0..65535 in decimal
 *       without a sign or leading zero, at most 107 bytes;
 *       "PROXY UNKNOWN...\r\n" (anything up to the CRLF) is accepted as
 *       "no address" (PROXY_IN_LOCAL).
 *   v2  the 12-byte signature, version 2, command LOCAL (0) or PROXY (1),
 *       family/transport TCP over IPv4 (0x11), TCP over IPv6 (0x21),
 *       stream over UNIX (0x31) or UNSPEC (0x00); the address block as
 *       long as the family needs at least; the TLVs after it each whole
 *       (a TLV that runs past the end is an error).  At most
 *       PROXY_IN_MAX bytes in all.  LOCAL, UNSPEC and UNIX carry no
 *       address the server uses: PROXY_IN_LOCAL (keep the socket's).
 */
#ifndef FERRY_PROXY_IN_H
#define FERRY_PROXY_IN_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

/* The longest header accepted (v2 with TLVs). */
#define PROXY_IN_MAX 1024
/* The longest v1 line, CRLF included (the specification's). */
#define PROXY_IN_V1_MAX 107

enum proxy_in_result {
	PROXY_IN_ERROR = -1,	/* not a valid header: out->error says why */
	PROXY_IN_MORE = 0,	/* a valid beginning: wait for more bytes */
	PROXY_IN_DONE = 1,	/* out->len bytes are the header */
};

enum proxy_in_kind {
	PROXY_IN_ADDR,		/* src and dst hold the client's addresses */
	PROXY_IN_LOCAL,		/* no address: keep the connection's own */
};

union proxy_in_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

struct proxy_in {
	size_t len;		/* the header's length, when DONE */
	int version;		/* 1 or 2 */
	enum proxy_in_kind kind;
	union proxy_in_addr src, dst;
	socklen_t addrlen;	/* of src and dst, when PROXY_IN_ADDR */
	const char *error;	/* a static string, when ERROR */
};

/* Parses buf[0..len) (the connection's first bytes). */
enum proxy_in_result proxy_in_parse(const unsigned char *buf, size_t len,
    struct proxy_in *out);

#endif
