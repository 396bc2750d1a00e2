/* proxy_in: see proxy_in.h. */
#include "proxy_in.h"

#include <arpa/inet.h>
#include <string.h>

static const unsigned char v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

static enum proxy_in_result
fail(struct proxy_in *out, const char *why)
{
	out->error = why;
	return PROXY_IN_ERROR;
}

static size_t
min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ---- version 1 ---- */

/* A port: 0..65535, decimal, no sign, no leading zero. */
static int
v1_port(const char *s, size_t n, unsigned *port)
{
	unsigned v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = v;
	return 0;
}

/* One address of family `af` from n bytes (not NUL-terminated). */
static int
v1_addr(int af, const char *s, size_t n, union proxy_in_addr *a)
{
	char tmp[INET6_ADDRSTRLEN + 1];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(a, 0, sizeof(*a));
	if (af == AF_INET) {
		a->in.sin_family = AF_INET;
		return inet_pton(AF_INET, tmp, &a->in.sin_addr) == 1 ? 0 : -1;
	}
	a->in6.sin6_family = AF_INET6;
	return inet_pton(AF_INET6, tmp, &a->in6.sin6_addr) == 1 ? 0 : -1;
}

static void
set_port(union proxy_in_addr *a, unsigned port)
{
	if (a->sa.sa_family == AF_INET)
		a->in.sin_port = htons((uint16_t)port);
	else
		a->in6.sin6_port = htons((uint16_t)port);
}

/* The fields of a whole line (CRLF excluded): TCP4/TCP6 only. */
static enum proxy_in_result
v1_fields(const char *line, size_t n, struct proxy_in *out)
{
	const char *f[6];
	size_t flen[6], nf = 0, start = 0;
	unsigned sport, dport;
	int af;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && line[i] != ' ')
			continue;
		if (nf == 6)
			return fail(out, "v1: too many fields");
		f[nf] = line + start;
		flen[nf++] = i - start;
		start = i + 1;
	}
	if (nf != 6)
		return fail(out, "v1: too few fields");
	if (flen[1] == 4 && memcmp(f[1], "TCP4", 4) == 0)
		af = AF_INET;
	else if (flen[1] == 4 && memcmp(f[1], "TCP6", 4) == 0)
		af = AF_INET6;
	else
		return fail(out, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	if (v1_addr(af, f[2], flen[2], &out->src) < 0 ||
	    v1_addr(af, f[3], flen[3], &out->dst) < 0)
		return fail(out, "v1: bad address");
	if (v1_port(f[4], flen[4], &sport) < 0 ||
	    v1_port(f[5], flen[5], &dport) < 0)
		return fail(out, "v1: bad port");
	set_port(&out->src, sport);
	set_port(&out->dst, dport);
	out->kind = PROXY_IN_ADDR;
	out->addrlen = af == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
	return PROXY_IN_DONE;
}

static enum proxy_in_result
parse_v1(const unsigned char *buf, size_t len, struct proxy_in *out)
{
	static const char prefix[] = "PROXY ";
	const char *s = (const char *)buf;
	size_t end = 0;

	out->version = 1;
	if (memcmp(buf, prefix, min_size(len, 6)) != 0)
		return fail(out, "not a PROXY protocol header");
	/* Printable ASCII up to CR LF: nothing else may come before it. */
	for (size_t i = 0; i < len && end == 0; i++) {
		if (buf[i] == '\r') {
			if (i + 1 == len)
				break;
			if (buf[i + 1] != '\n')
				return fail(out, "v1: CR without LF");
			end = i;
		} else if (buf[i] < 0x20 || buf[i] > 0x7e) {
			return fail(out, "v1: control or non-ASCII byte");
		}
	}
	if (end == 0) {
		if (len >= PROXY_IN_V1_MAX)
			return fail(out, "v1: no CRLF within 107 bytes");
		return PROXY_IN_MORE;
	}
	if (end + 2 > PROXY_IN_V1_MAX)
		return fail(out, "v1: line longer than 107 bytes");
	out->len = end + 2;
	if (end >= 13 && memcmp(s + 6, "UNKNOWN", 7) == 0 &&
	    (end == 13 || s[13] == ' ')) {
		out->kind = PROXY_IN_LOCAL;
		return PROXY_IN_DONE;
	}
	return v1_fields(s, end, out);
}

/* ---- version 2 ---- */

/* The TLVs of buf[from..to) must each be whole. */
static int
v2_tlvs_whole(const unsigned char *buf, size_t from, size_t to)
{
	while (from < to) {
		if (to - from < 3)
			return -1;
		size_t n = (size_t)buf[from + 1] << 8 | buf[from + 2];
		if (n > to - from - 3)
			return -1;
		from += 3 + n;
	}
	return 0;
}

static enum proxy_in_result
parse_v2(const unsigned char *buf, size_t len, struct proxy_in *out)
{
	size_t alen, total, need;
	unsigned cmd, fam;

	out->version = 2;
	if (memcmp(buf, v2_sig, min_size(len, 12)) != 0)
		return fail(out, "v2: bad signature");
	if (len >= 13 && (buf[12] >> 4) != 2)
		return fail(out, "v2: version is not 2");
	if (len >= 13 && (buf[12] & 0xf) > 1)
		return fail(out, "v2: command is not LOCAL or PROXY");
	if (len < 16)
		return PROXY_IN_MORE;
	cmd = buf[12] & 0xf;
	fam = buf[13];
	alen = (size_t)buf[14] << 8 | buf[15];
	total = 16 + alen;
	if (total > PROXY_IN_MAX)
		return fail(out, "v2: header longer than PROXY_IN_MAX");
	switch (fam) {
	case 0x00: need = 0; break;
	case 0x11: need = 12; break;
	case 0x21: need = 36; break;
	case 0x31: need = 216; break;
	default:
		if (cmd == 0) {
			need = alen;	/* LOCAL: the block is not read */
			break;
		}
		return fail(out, "v2: not a stream over IPv4, IPv6 or UNIX");
	}
	if (alen < need)
		return fail(out, "v2: address block too short for its family");
	if (len < total)
		return PROXY_IN_MORE;
	if (v2_tlvs_whole(buf, 16 + need, total) < 0)
		return fail(out, "v2: a TLV runs past the header");
	out->len = total;
	out->kind = PROXY_IN_LOCAL;
	if (cmd == 0 || (fam != 0x11 && fam != 0x21))
		return PROXY_IN_DONE;
	memset(&out->src, 0, sizeof(out->src));
	memset(&out->dst, 0, sizeof(out->dst));
	if (fam == 0x11) {
		out->src.in.sin_family = out->dst.in.sin_family = AF_INET;
		memcpy(&out->src.in.sin_addr, buf + 16, 4);
		memcpy(&out->dst.in.sin_addr, buf + 20, 4);
		memcpy(&out->src.in.sin_port, buf + 24, 2);
		memcpy(&out->dst.in.sin_port, buf + 26, 2);
		out->addrlen = sizeof(struct sockaddr_in);
	} else {
		out->src.in6.sin6_family = out->dst.in6.sin6_family = AF_INET6;
		memcpy(&out->src.in6.sin6_addr, buf + 16, 16);
		memcpy(&out->dst.in6.sin6_addr, buf + 32, 16);
		memcpy(&out->src.in6.sin6_port, buf + 48, 2);
		memcpy(&out->dst.in6.sin6_port, buf + 50, 2);
		out->addrlen = sizeof(struct sockaddr_in6);
	}
	out->kind = PROXY_IN_ADDR;
	return PROXY_IN_DONE;
}

enum proxy_in_result
proxy_in_parse(const unsigned char *buf, size_t len, struct proxy_in *out)
{
	memset(out, 0, sizeof(*out));
	if (len == 0)
		return PROXY_IN_MORE;
	if (buf[0] == v2_sig[0])
		return parse_v2(buf, len, out);
	return parse_v1(buf, len, out);
}
