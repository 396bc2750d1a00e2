/* forward_proxy: see forward_proxy.h. */
#include "forward_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const unsigned char proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

/*
 * The address and port (both in network order) of src and dst when both
 * are IPv4 or both IPv6: the family, else AF_UNSPEC.
 */
struct inet_pair {
	int family;
	size_t alen;			/* 4 or 16 */
	const void *saddr, *daddr;
	const void *sport, *dport;	/* 2 bytes each */
};

static void
inet_pair(const struct sockaddr *src, const struct sockaddr *dst,
    struct inet_pair *p)
{
	memset(p, 0, sizeof(*p));
	p->family = AF_UNSPEC;
	if (src->sa_family != dst->sa_family)
		return;
	if (src->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)src;
		const struct sockaddr_in *d4 = (const void *)dst;
		*p = (struct inet_pair){ AF_INET, 4, &s4->sin_addr,
		    &d4->sin_addr, &s4->sin_port, &d4->sin_port };
	} else if (src->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)src;
		const struct sockaddr_in6 *d6 = (const void *)dst;
		*p = (struct inet_pair){ AF_INET6, 16, &s6->sin6_addr,
		    &d6->sin6_addr, &s6->sin6_port, &d6->sin6_port };
	}
}

static unsigned
port_of(const void *be16)
{
	const unsigned char *b = be16;

	return (unsigned)b[0] << 8 | b[1];
}

static int
proxy_v1(const struct inet_pair *p, unsigned char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	int n;

	if (p->family == AF_UNSPEC) {
		n = snprintf((char *)out, outlen, "PROXY UNKNOWN\r\n");
	} else {
		inet_ntop(p->family, p->saddr, a, sizeof(a));
		inet_ntop(p->family, p->daddr, b, sizeof(b));
		n = snprintf((char *)out, outlen, "PROXY TCP%c %s %s %u %u\r\n",
		    p->family == AF_INET ? '4' : '6', a, b,
		    port_of(p->sport), port_of(p->dport));
	}
	return n < 0 || (size_t)n >= outlen ? -1 : n;
}

static int
proxy_v2(const struct inet_pair *p, unsigned char *out, size_t outlen)
{
	/* UNSPEC (the receiver ignores it), TCP over IPv4, over IPv6. */
	unsigned char fam = p->family == AF_INET ? 0x11 :
	    p->family == AF_INET6 ? 0x21 : 0x00;
	size_t alen = 2 * p->alen + (p->alen ? 4 : 0);
	unsigned char *q = out + 16;

	if (outlen < 16 + alen)
		return -1;
	memcpy(out, proxy_v2_sig, sizeof(proxy_v2_sig));
	out[12] = 0x21;			/* version 2, command PROXY */
	out[13] = fam;
	out[14] = (unsigned char)(alen >> 8);
	out[15] = (unsigned char)(alen & 0xff);
	if (p->alen > 0) {
		memcpy(q, p->saddr, p->alen);
		memcpy(q + p->alen, p->daddr, p->alen);
		memcpy(q + 2 * p->alen, p->sport, 2);	/* big-endian */
		memcpy(q + 2 * p->alen + 2, p->dport, 2);
	}
	return (int)(16 + alen);
}

/* One TLV of n bytes (cut to `max`) at out[*at]; false without room. */
static bool
put_tlv(unsigned char *out, size_t outlen, size_t *at, unsigned type,
    const void *v, size_t n, size_t max)
{
	if (n > max)
		n = max;
	if (*at + 3 + n > outlen)
		return false;
	out[*at] = (unsigned char)type;
	out[*at + 1] = (unsigned char)(n >> 8);
	out[*at + 2] = (unsigned char)(n & 0xff);
	memcpy(out + *at + 3, v, n);
	*at += 3 + n;
	return true;
}

static bool
put_str(unsigned char *out, size_t outlen, size_t *at, unsigned type,
    const char *s, size_t max)
{
	if (s == NULL || *s == '\0')
		return true;
	return put_tlv(out, outlen, at, type, s, strlen(s), max);
}

/* PP2_TYPE_SSL and its sub-TLVs at out[*at]. */
static bool
put_ssl(const struct forward_proxy_tlvs *t, unsigned char *out,
    size_t outlen, size_t *at)
{
	size_t start = *at, sub;
	uint32_t verify = t->cert ? t->verify : 1;

	if (*at + 3 + 5 > outlen)
		return false;
	out[*at] = 0x20;
	out[*at + 3] = (unsigned char)(0x01 | (t->cert ? 0x06 : 0));
	out[*at + 4] = (unsigned char)(verify >> 24);
	out[*at + 5] = (unsigned char)(verify >> 16);
	out[*at + 6] = (unsigned char)(verify >> 8);
	out[*at + 7] = (unsigned char)verify;
	*at += 8;
	if (!put_str(out, outlen, at, 0x21, t->version, 64) ||
	    (t->cert && !put_str(out, outlen, at, 0x22, t->cn, 64)) ||
	    !put_str(out, outlen, at, 0x23, t->cipher, 64))
		return false;
	sub = *at - start - 3;
	out[start + 1] = (unsigned char)(sub >> 8);
	out[start + 2] = (unsigned char)(sub & 0xff);
	return true;
}

int
forward_proxy_header_tlv(enum forward_proxy version,
    const struct sockaddr *src, const struct sockaddr *dst,
    const struct forward_proxy_tlvs *t, unsigned char *out, size_t outlen)
{
	struct inet_pair p;
	size_t at, len;
	int n;

	inet_pair(src, dst, &p);
	switch (version) {
	case FORWARD_PROXY_V1:
		return proxy_v1(&p, out, outlen);
	case FORWARD_PROXY_V2:
		break;
	case FORWARD_PROXY_OFF:
		return -1;
	}
	if ((n = proxy_v2(&p, out, outlen)) < 0 || t == NULL)
		return n;
	at = (size_t)n;
	if ((t->alpn_len > 0 && !put_tlv(out, outlen, &at, 0x01, t->alpn,
	    t->alpn_len, 255)) ||
	    !put_str(out, outlen, &at, 0x02, t->authority, 255) ||
	    (t->ssl && !put_ssl(t, out, outlen, &at)))
		return -1;
	len = at - 16;
	out[14] = (unsigned char)(len >> 8);
	out[15] = (unsigned char)(len & 0xff);
	return (int)at;
}

int
forward_proxy_header(enum forward_proxy version, const struct sockaddr *src,
    const struct sockaddr *dst, unsigned char *out, size_t outlen)
{
	return forward_proxy_header_tlv(version, src, dst, NULL, out, outlen);
}
