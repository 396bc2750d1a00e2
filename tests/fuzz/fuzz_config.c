/*
 * libFuzzer target: the config parser (config.h) on arbitrary text.
 *
 * A refused text must come with a message that names the label.  An
 * accepted one must hold nothing outside the documented ranges
 * (ferry.conf.example): every number within its bounds, every enum one of
 * its values, every string terminated inside its array, every listener
 * complete (mode, bind, one key per cert, a backend for forward and none
 * for relay, a CA for client verification, no TLS key without a cert),
 * every deadline above 0, section names unique and of the allowed
 * characters.  config_error() must then work for any key.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"fuzz_config: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	abort(); } } while (0)

#define LABEL "fuzz.conf"
#define MAX_SECONDS (86400.0 * 365)

static bool
terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}
#define TERM(field) CHECK(terminated((field), sizeof(field)))

static void
check_seconds(double d)
{
	CHECK(isfinite(d) && d >= 0 && d <= MAX_SECONDS);
}

static void
check_addr(const struct config_addr *a)
{
	TERM(a->host);
	CHECK(a->port >= 0 && a->port <= 65535);
}

static void
check_listener(const struct config *c, const struct config_listener *l)
{
	char err[1024];

	TERM(l->name);
	CHECK(l->name[0] != '\0');
	CHECK(strspn(l->name, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == strlen(l->name));
	CHECK(strcmp(l->name, "ferry") != 0);
	CHECK(l->mode_set);
	CHECK(l->mode == CONFIG_RELAY || l->mode == CONFIG_FORWARD);
	CHECK(l->nbind >= 1 && l->nbind <= CONFIG_MAX_BINDS);
	for (size_t i = 0; i < l->nbind; i++)
		check_addr(&l->bind[i]);
	CHECK(l->ncert == l->nkey && l->ncert <= CONFIG_MAX_CERTS);
	for (size_t i = 0; i < l->ncert; i++) {
		TERM(l->cert[i]);
		TERM(l->key[i]);
	}
	TERM(l->client_ca);
	CHECK(l->verify == CONFIG_VERIFY_NONE ||
	    l->verify == CONFIG_VERIFY_OPTIONAL ||
	    l->verify == CONFIG_VERIFY_REQUIRED);
	if (l->verify != CONFIG_VERIFY_NONE)
		CHECK(l->ncert > 0 && l->client_ca[0] != '\0');
	CHECK(l->tls_min_version == 0x0303 || l->tls_min_version == 0x0304);
	TERM(l->ciphers);
	TERM(l->ciphersuites);
	TERM(l->alpn);
	if (l->ncert == 0)
		CHECK(l->client_ca[0] == '\0' && l->ciphers[0] == '\0' &&
		    l->ciphersuites[0] == '\0' && l->alpn[0] == '\0' &&
		    l->tls_min_version == 0x0303);
	check_seconds(l->handshake_timeout);
	CHECK(l->handshake_timeout > 0);
	check_seconds(l->idle_timeout);
	CHECK(l->max_connections <= 10000000);
	CHECK(l->max_per_source <= 10000000);

	CHECK(l->slow_consumer == CONFIG_SLOW_DROP ||
	    l->slow_consumer == CONFIG_SLOW_DISCONNECT ||
	    l->slow_consumer == CONFIG_SLOW_BLOCK);
	CHECK(l->queue_bytes >= 4 && l->queue_bytes <= (1u << 30));
	CHECK(l->max_consumers >= 1 && l->max_consumers <= 100000);
	check_seconds(l->grace);
	CHECK(l->takeover == CONFIG_TAKEOVER_REPLACE ||
	    l->takeover == CONFIG_TAKEOVER_REFUSE);
	CHECK(l->max_uuid >= 1 && l->max_uuid <= 255);
	CHECK(l->max_keys_bytes >= 1 && l->max_keys_bytes <= 65536);
	CHECK(l->max_keys >= 1 && l->max_keys <= 16384);

	CHECK(l->nbackend <= CONFIG_MAX_BACKENDS);
	if (l->mode == CONFIG_FORWARD)
		CHECK(l->nbackend >= 1);
	else
		CHECK(l->nbackend == 0);
	CHECK(l->nsets >= 1 && l->nsets <= CONFIG_MAX_SETS);
	for (size_t i = 0; i < l->nsets; i++) {
		TERM(l->set_name[i]);
		CHECK(l->set_name[i][0] != '\0');
	}
	for (size_t i = 0; i < l->nbackend; i++) {
		const struct config_backend *b = &l->backend[i];
		check_addr(&b->addr);
		CHECK(b->addr.host[0] != '\0');
		if (config_addr_is_unix(&b->addr))
			CHECK(b->addr.host[5] == '/' && b->addr.port == 0);
		CHECK(b->set >= 0 && (size_t)b->set < l->nsets);
		CHECK(b->weight >= 1 && b->weight <= 256);
	}
	/* Every route goes to a set that exists. */
	CHECK(l->nroutes <= CONFIG_MAX_ROUTES);
	for (size_t i = 0; i < l->nroutes; i++) {
		const struct config_route *r = &l->route[i];
		TERM(r->match);
		CHECK(r->match[0] != '\0');
		CHECK(r->kind == CONFIG_ROUTE_SNI || r->kind == CONFIG_ROUTE_ALPN);
		CHECK(r->set >= 0 && (size_t)r->set < l->nsets);
		CHECK(strcmp(l->set_name[r->set], r->set_name) == 0);
	}
	CHECK(l->balance == CONFIG_BALANCE_ROUNDROBIN ||
	    l->balance == CONFIG_BALANCE_LEASTCONN);
	CHECK(l->check == CONFIG_CHECK_TCP || l->check == CONFIG_CHECK_TLS);
	CHECK(l->max_fails <= 1000);
	check_seconds(l->fail_timeout);
	CHECK(l->fail_timeout > 0);
	check_seconds(l->check_interval);
	CHECK(l->unix_mode <= 0777);
	TERM(l->unix_owner);
	check_seconds(l->connect_timeout);
	CHECK(l->connect_timeout > 0);
	check_seconds(l->fin_timeout);
	TERM(l->backend_ca);
	TERM(l->backend_sni);
	if (!l->backend_tls)
		CHECK(l->backend_ca[0] == '\0' && l->backend_sni[0] == '\0');
	CHECK(l->proxy_protocol == CONFIG_PROXY_OFF ||
	    l->proxy_protocol == CONFIG_PROXY_V1 ||
	    l->proxy_protocol == CONFIG_PROXY_V2);
	CHECK(l->high_water >= 1024 && l->high_water <= (1u << 30));

	CHECK(l->nlines <= CONFIG_MAX_KEYLINES);
	config_error(c, l, "bind", 0, "why", err, sizeof(err));
	CHECK(strncmp(err, LABEL ":", strlen(LABEL ":")) == 0);
	config_error(c, l, "no-such-key", 3, "why", err, sizeof(err));
	CHECK(strncmp(err, LABEL ":", strlen(LABEL ":")) == 0);
}

static void
check_config(const struct config *c)
{
	char err[1024];

	CHECK(c->workers >= 0 && c->workers <= 1024);
	CHECK(c->max_restarts >= 0 && c->max_restarts <= 1000000);
	if (c->admin_set)
		check_addr(&c->admin);
	CHECK(c->log_level >= 0 && c->log_level <= 3);
	TERM(c->user);
	TERM(c->group);
	check_seconds(c->drain_timeout);
	check_seconds(c->admin_timeout);
	CHECK(c->admin_timeout > 0);
	CHECK(c->admin_max_connections >= 1 &&
	    c->admin_max_connections <= 100000);
	if (c->group[0] != '\0')
		CHECK(c->user[0] != '\0');
	CHECK(c->nlines <= CONFIG_MAX_KEYLINES);
	CHECK(c->nlisteners >= 1 && c->nlisteners <= CONFIG_MAX_LISTENERS);
	for (size_t i = 0; i < c->nlisteners; i++) {
		check_listener(c, &c->listeners[i]);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(c->listeners[i].name,
			    c->listeners[j].name) != 0);
	}
	config_error(c, NULL, "workers", 0, "why", err, sizeof(err));
	CHECK(strncmp(err, LABEL ":", strlen(LABEL ":")) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Large: a struct config holds every listener's paths. */
	static struct config c;
	char err[1024];
	char *text = malloc(size + 1);

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	config_init(&c);
	memset(err, 0x55, sizeof(err));
	if (config_load_string(&c, text, LABEL, err, sizeof(err)) == 0) {
		check_config(&c);
	} else {
		TERM(err);
		CHECK(strncmp(err, LABEL, strlen(LABEL)) == 0);
	}
	free(text);
	return 0;
}
