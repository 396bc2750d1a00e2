/*
 * forward_proxy: the PROXY protocol header (HAProxy's proxy-protocol.txt)
 * a forward listener sends its backend first, in the clear, so that the
 * backend knows the client's address.  Pure: no I/O, no state.
 */
#ifndef FERRY_FORWARD_PROXY_H
#define FERRY_FORWARD_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

enum forward_proxy { FORWARD_PROXY_OFF = 0, FORWARD_PROXY_V1,
    FORWARD_PROXY_V2 };

/* A v1 header is at most 107 bytes; a v2 header for TCP6 is 52. */
#define FORWARD_PROXY_MAX 108

/*
 * The header for a TCP connection from `src` (the client) to `dst` (the
 * address it reached).
 * v1: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6 for IPv6), or
 * "PROXY UNKNOWN\r\n" for other or mixed families.  v2: the 12-byte
 * signature, 0x21 (version 2, PROXY), 0x11 (TCP over IPv4) or 0x21 (TCP
 * over IPv6), the address block length (BE16), then source and
 * destination addresses and ports in network order; other families get
 * 0x00 (UNSPEC) and no addresses.  Returns the length
 * written to out, or -1 if outlen is too small or the version unknown.
 */
int forward_proxy_header(enum forward_proxy version,
    const struct sockaddr *src, const struct sockaddr *dst,
    unsigned char *out, size_t outlen);

#endif
