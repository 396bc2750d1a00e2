/*
 * forward_proxy: the PROXY protocol header (HAProxy's proxy-protocol.txt)
 * a forward listener sends its backend first, in the clear, so that the
 * backend knows the client's address.  Pure: no I/O, no state.
 */
#ifndef FERRY_FORWARD_PROXY_H
#define FERRY_FORWARD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum forward_proxy { FORWARD_PROXY_OFF = 0, FORWARD_PROXY_V1,
    FORWARD_PROXY_V2 };

/*
 * A v1 header is at most 107 bytes; a v2 header for TCP6 is 52, and its
 * TLVs (forward_proxy_header_tlv) at most 3 + 255 (ALPN), 3 + 255
 * (authority), 3 + 5 + 3 * (3 + 64) (SSL).  A string longer than its
 * room is cut.
 */
#define FORWARD_PROXY_MAX 1024

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

/*
 * What a v2 header tells the backend about the client's TLS, in TLVs as
 * HAProxy and hitch send them: PP2_TYPE_ALPN (0x01) the protocol agreed,
 * PP2_TYPE_AUTHORITY (0x02) the name the client sent (SNI), and
 * PP2_TYPE_SSL (0x20): client flags (PP2_CLIENT_SSL 0x01, and with a
 * certificate PP2_CLIENT_CERT_CONN 0x02 | PP2_CLIENT_CERT_SESS 0x04), the
 * verify result (BE32, 0 = verified; 1 when no certificate was
 * presented, as HAProxy sends it), then the sub-TLVs
 * PP2_SUBTYPE_SSL_VERSION (0x21), PP2_SUBTYPE_SSL_CN (0x22, only with a
 * certificate) and PP2_SUBTYPE_SSL_CIPHER (0x23).  NULL or empty strings
 * are left out; ssl false leaves out the SSL TLV.
 */
struct forward_proxy_tlvs {
	const unsigned char *alpn;
	size_t alpn_len;
	const char *authority;
	bool ssl;
	bool cert;
	uint32_t verify;
	const char *version;
	const char *cipher;
	const char *cn;
};

/*
 * forward_proxy_header() with TLVs after the addresses (v2; a v1 header
 * carries none, and `tlvs` NULL adds none).  The same return.
 */
int forward_proxy_header_tlv(enum forward_proxy version,
    const struct sockaddr *src, const struct sockaddr *dst,
    const struct forward_proxy_tlvs *tlvs, unsigned char *out,
    size_t outlen);

#endif
