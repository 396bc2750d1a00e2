/* peer_id: see peer_id.h. */
#include "peer_id.h"

#include <string.h>

#include <openssl/x509v3.h>

const char *
peer_id_kind_name(enum peer_id_kind kind)
{
	switch (kind) {
	case PEER_ID_CN: return "cn";
	case PEER_ID_DNS: return "dns";
	case PEER_ID_EMAIL: return "email";
	case PEER_ID_URI: return "uri";
	}
	return "?";
}

static void
add_peer_id(struct peer_ids *out, size_t *used, enum peer_id_kind kind,
    const unsigned char *p, int len)
{
	size_t n = len > 0 ? (size_t)len : 0;

	/* An embedded NUL could make "a\0.evil" pass for "a". */
	if (n == 0 || memchr(p, '\0', n) != NULL)
		return;
	if (out->n == PEER_IDS_MAX || n + 1 > sizeof(out->buf) - *used) {
		out->truncated = true;
		return;
	}
	memcpy(out->buf + *used, p, n);
	out->buf[*used + n] = '\0';
	out->id[out->n].kind = kind;
	out->id[out->n].value = out->buf + *used;
	out->id[out->n].len = n;
	out->n++;
	*used += n + 1;
}

static void
add_subject_cns(struct peer_ids *out, size_t *used, X509 *x)
{
	X509_NAME *name = X509_get_subject_name(x);
	int i = -1;

	while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >=
	    0) {
		ASN1_STRING *d = X509_NAME_ENTRY_get_data(
		    X509_NAME_get_entry(name, i));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, d);

		if (len >= 0)
			add_peer_id(out, used, PEER_ID_CN, utf8, len);
		OPENSSL_free(utf8);
	}
}

static void
add_sans(struct peer_ids *out, size_t *used, X509 *x)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL);

	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const ASN1_IA5STRING *v;
		enum peer_id_kind kind;

		switch (g->type) {
		case GEN_DNS:
			kind = PEER_ID_DNS;
			v = g->d.dNSName;
			break;
		case GEN_EMAIL:
			kind = PEER_ID_EMAIL;
			v = g->d.rfc822Name;
			break;
		case GEN_URI:
			kind = PEER_ID_URI;
			v = g->d.uniformResourceIdentifier;
			break;
		default:
			continue;
		}
		add_peer_id(out, used, kind, ASN1_STRING_get0_data(v),
		    ASN1_STRING_length(v));
	}
	GENERAL_NAMES_free(sans);
}

void
peer_ids_from_cert(struct peer_ids *out, struct x509_st *cert)
{
	size_t used = 0;

	out->n = 0;
	out->truncated = false;
	add_subject_cns(out, &used, cert);
	add_sans(out, &used, cert);
}
