/*
 * peer_id: a certificate's identities as the access lists see them, read
 * from certificates made here in memory (names a CA would not sign, such
 * as one with a NUL byte, included); and stream_peer_ids() on a stream
 * whose transport has no certificates.
 */
#include <criterion/criterion.h>

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "helpers.h"
#include "peer_id.h"
#include "stream.h"

static void
add_cn(X509 *x, const char *cn)
{
	cr_assert_eq(X509_NAME_add_entry_by_NID(X509_get_subject_name(x),
	    NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
	    0), 1);
}

/* A subjectAltName entry of `type` holding len bytes (NULs allowed). */
static void
add_san(GENERAL_NAMES *sans, int type, const char *v, size_t len)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	cr_assert(g != NULL && s != NULL);
	cr_assert_eq(ASN1_STRING_set(s, v, (int)len), 1);
	GENERAL_NAME_set0_value(g, type, s);
	cr_assert(sk_GENERAL_NAME_push(sans, g) > 0);
}

static X509 *
cert_with(GENERAL_NAMES *sans)
{
	X509 *x = X509_new();

	cr_assert_not_null(x);
	if (sans != NULL) {
		cr_assert_eq(X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0,
		    X509V3_ADD_DEFAULT), 1);
		GENERAL_NAMES_free(sans);
	}
	return x;
}

static void
expect(const struct peer_ids *ids, size_t i, enum peer_id_kind kind,
    const char *value)
{
	cr_assert_lt(i, ids->n);
	cr_assert_eq(ids->id[i].kind, kind, "identity %zu: kind %d", i,
	    (int)ids->id[i].kind);
	cr_assert_eq(ids->id[i].len, strlen(value));
	cr_assert_str_eq(ids->id[i].value, value);
}

Test(peer_id, names_in_order, .timeout = 10)
{
	GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
	struct peer_ids ids;
	X509 *x;

	add_san(sans, GEN_DNS, "phone.lan", 9);
	add_san(sans, GEN_EMAIL, "studio@example.com", 18);
	add_san(sans, GEN_URI, "spiffe://ferry/viewer", 21);
	/* An IP address is no name the lists know: left out. */
	{
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_OCTET_STRING *ip = ASN1_OCTET_STRING_new();
		cr_assert_eq(ASN1_OCTET_STRING_set(ip,
		    (const unsigned char *)"\x7f\0\0\1", 4), 1);
		GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
		cr_assert(sk_GENERAL_NAME_push(sans, g) > 0);
	}
	add_san(sans, GEN_DNS, "second.lan", 10);
	x = cert_with(sans);
	add_cn(x, "phone-alice");
	add_cn(x, "Ålice");

	peer_ids_from_cert(&ids, x);
	cr_assert_eq(ids.n, 6);
	cr_assert_not(ids.truncated);
	expect(&ids, 0, PEER_ID_CN, "phone-alice");
	expect(&ids, 1, PEER_ID_CN, "Ålice");
	expect(&ids, 2, PEER_ID_DNS, "phone.lan");
	expect(&ids, 3, PEER_ID_EMAIL, "studio@example.com");
	expect(&ids, 4, PEER_ID_URI, "spiffe://ferry/viewer");
	expect(&ids, 5, PEER_ID_DNS, "second.lan");
	X509_free(x);
}

/* "a.lan\0.evil" could pass for "a.lan": such a name is left out. */
Test(peer_id, names_with_nul_left_out, .timeout = 10)
{
	GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
	struct peer_ids ids;
	X509 *x;

	add_san(sans, GEN_DNS, "a.lan\0.evil", 11);
	add_san(sans, GEN_EMAIL, "x@y\0z", 5);
	add_san(sans, GEN_DNS, "", 0);
	add_san(sans, GEN_DNS, "b.lan", 5);
	x = cert_with(sans);

	peer_ids_from_cert(&ids, x);
	cr_assert_eq(ids.n, 1);
	cr_assert_not(ids.truncated);
	expect(&ids, 0, PEER_ID_DNS, "b.lan");
	X509_free(x);
}

Test(peer_id, too_many_names_truncated, .timeout = 10)
{
	GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
	struct peer_ids ids;
	char name[32];
	X509 *x;

	for (int i = 0; i < PEER_IDS_MAX + 8; i++) {
		int n = snprintf(name, sizeof(name), "host%d.lan", i);
		add_san(sans, GEN_DNS, name, (size_t)n);
	}
	x = cert_with(sans);
	peer_ids_from_cert(&ids, x);
	cr_assert_eq(ids.n, PEER_IDS_MAX);
	cr_assert(ids.truncated);
	expect(&ids, PEER_IDS_MAX - 1, PEER_ID_DNS, "host31.lan");
	X509_free(x);

	/* By bytes: four names of 1000 bytes fit in 4096, the fifth not. */
	static char big[1000];
	sans = sk_GENERAL_NAME_new_null();
	memset(big, 'a', sizeof(big));
	for (int i = 0; i < 5; i++)
		add_san(sans, GEN_DNS, big, sizeof(big));
	add_san(sans, GEN_DNS, "small.lan", 9);
	x = cert_with(sans);
	peer_ids_from_cert(&ids, x);
	cr_assert(ids.truncated);
	cr_assert_eq(ids.n, 5, "%zu identities", ids.n);
	cr_assert_eq(ids.id[3].len, sizeof(big));
	expect(&ids, 4, PEER_ID_DNS, "small.lan");
	X509_free(x);
}

Test(peer_id, kind_names, .timeout = 10)
{
	cr_assert_str_eq(peer_id_kind_name(PEER_ID_CN), "cn");
	cr_assert_str_eq(peer_id_kind_name(PEER_ID_DNS), "dns");
	cr_assert_str_eq(peer_id_kind_name(PEER_ID_EMAIL), "email");
	cr_assert_str_eq(peer_id_kind_name(PEER_ID_URI), "uri");
}

/* A plain stream's transport has no certificates to tell of. */
Test(peer_id, plain_stream_has_none, .timeout = 10)
{
	struct tloop t;
	struct stream *s;
	struct peer_ids ids;
	int sv[2];

	tloop_init(&t);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
	    0);
	s = stream_new(&t.sl, sv[0], NULL);
	cr_assert_not_null(s);
	ids.n = 7;
	ids.truncated = true;
	cr_assert_not(stream_peer_ids(s, &ids));
	cr_assert_eq(ids.n, 0);
	cr_assert_not(ids.truncated);
	stream_close(s, STREAM_CLOSE_LOCAL);
	stream_loop_run_pending(&t.sl);
	close(sv[1]);
	tloop_destroy(&t);
}
