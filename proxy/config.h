/*
 * config: the INI file (parsed with inih) and the embedded default ->
 * struct config.
 *
 * One section per listener plus [ferry] for the process.  Every value is
 * checked here, with the file, line, key and reason in the error, so that
 * `ferry --check` catches a bad file before it is deployed.  The structs
 * below are plain data: the listeners module turns them into SSL contexts,
 * relay options and forward options.  See ferry.conf.example for every key.
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_MAX_LISTENERS 32
#define CONFIG_MAX_BINDS 8
#define CONFIG_MAX_CERTS 16
#define CONFIG_MAX_BACKENDS 32	/* per listener, every set */
#define CONFIG_MAX_SETS 8	/* "default" and up to 7 backend_set */
#define CONFIG_MAX_ROUTES 16
#define CONFIG_SET_NAME 32
#define CONFIG_NAME_LEN 64
#define CONFIG_PATH_LEN 512
#define CONFIG_ADDR_LEN 300
#define CONFIG_MAX_KEYLINES 192
#define CONFIG_MAX_NATS 16
#define CONFIG_NODE_LEN 120		/* room for "-wNN" per worker */

/*
 * Every key, and where it may appear.  The parser refuses a key that is
 * not here; ferry.conf.example and the README document exactly these.
 */
enum config_scope {
	CONFIG_SCOPE_PROCESS,		/* [ferry] */
	CONFIG_SCOPE_LISTENER,		/* any listener */
	CONFIG_SCOPE_RELAY,		/* mode = relay only */
	CONFIG_SCOPE_FORWARD,		/* mode = forward only */
	CONFIG_SCOPE_CLUSTER,		/* [cluster] */
};

struct config_key {
	const char *name;
	enum config_scope scope;
};

extern const struct config_key config_keys[];	/* ends with a NULL name */

/* Where a key was given, so that later errors (a certificate that does
 * not load, a backend that does not resolve) can name file and line. */
struct config_keyline {
	char key[32];
	int line;
};

enum config_mode { CONFIG_RELAY = 0, CONFIG_FORWARD };
enum config_verify { CONFIG_VERIFY_NONE = 0, CONFIG_VERIFY_OPTIONAL,
    CONFIG_VERIFY_REQUIRED };
enum config_slow { CONFIG_SLOW_DROP = 0, CONFIG_SLOW_DISCONNECT,
    CONFIG_SLOW_BLOCK };
enum config_takeover { CONFIG_TAKEOVER_REPLACE = 0, CONFIG_TAKEOVER_REFUSE };
enum config_proxy { CONFIG_PROXY_OFF = 0, CONFIG_PROXY_V1, CONFIG_PROXY_V2 };

struct config_addr {
	char host[CONFIG_ADDR_LEN];	/* "" = every interface; "unix:PATH" */
	int port;			/* 0 for a unix socket */
};

/* A unix socket's address: host is "unix:" and an absolute path. */
bool config_addr_is_unix(const struct config_addr *a);

/* A forward listener's backend: "ADDRESS [weight=N] [backup]". */
struct config_backend {
	struct config_addr addr;
	int set;			/* index into set_name */
	unsigned weight;		/* 1..256, default 1 */
	bool backup;
};

enum config_route_kind { CONFIG_ROUTE_SNI = 0, CONFIG_ROUTE_ALPN };

/* "route = sni:NAME -> SET" or "alpn:PROTO -> SET". */
struct config_route {
	enum config_route_kind kind;
	char match[256];
	char set_name[CONFIG_SET_NAME];
	int set;			/* resolved once every set is read */
	int line;
};

enum config_balance { CONFIG_BALANCE_ROUNDROBIN = 0, CONFIG_BALANCE_LEASTCONN };
enum config_check { CONFIG_CHECK_TCP = 0, CONFIG_CHECK_TLS };

struct config_listener {
	char name[CONFIG_NAME_LEN];	/* letters, digits, '-', '_', '.' */
	int line;			/* where the section starts */
	struct config_keyline lines[CONFIG_MAX_KEYLINES];
	size_t nlines;
	enum config_mode mode;
	bool mode_set;
	struct config_addr bind[CONFIG_MAX_BINDS];
	size_t nbind;

	/* TLS towards clients: on when at least one cert is given */
	char cert[CONFIG_MAX_CERTS][CONFIG_PATH_LEN];
	char key[CONFIG_MAX_CERTS][CONFIG_PATH_LEN];
	size_t ncert, nkey;
	char client_ca[CONFIG_PATH_LEN];
	enum config_verify verify;
	int tls_min_version;		/* 0x0303 / 0x0304 */
	char ciphers[512];
	char ciphersuites[512];
	char alpn[256];
	char client_crl[CONFIG_PATH_LEN];	/* "" = none */
	char ticket_keys[CONFIG_PATH_LEN];	/* "" = generated, rotated */
	double ticket_rotate;		/* generated keys; 0 = never */
	/* per certificate: "off", "auto" or a DER file; one for all, or one
	 * per cert in order */
	char ocsp[CONFIG_MAX_CERTS][CONFIG_PATH_LEN];
	size_t nocsp;

	bool alpn_fallback;		/* no common protocol: go on without */
	bool accept_proxy;		/* a PROXY header before anything */
	unsigned unix_mode;		/* unix socket binds: chmod; 0 = umask */
	char unix_owner[64];		/* "user[:group]" for chown, or "" */

	double handshake_timeout;	/* TLS handshake (and relay header) */
	double idle_timeout;		/* 0 = none */
	size_t max_connections;		/* 0 = unlimited */
	size_t max_per_source;		/* 0 = unlimited */
	char access_log[CONFIG_PATH_LEN];	/* "" = none */

	/* relay */
	enum config_slow slow_consumer;
	size_t queue_bytes;
	size_t max_consumers;
	double grace;
	enum config_takeover takeover;
	bool last_value;
	size_t max_uuid;
	size_t max_keys_bytes;
	size_t max_keys;
	char acl[CONFIG_PATH_LEN];	/* access list file, or "" */
	char origins[1024];		/* WebSocket Origins allowed; "" = any */
	size_t max_message_bytes;	/* a WebSocket client's message */

	/* forward */
	struct config_backend backend[CONFIG_MAX_BACKENDS];
	size_t nbackend;
	char set_name[CONFIG_MAX_SETS][CONFIG_SET_NAME];	/* [0] default */
	size_t nsets;
	struct config_route route[CONFIG_MAX_ROUTES];
	size_t nroutes;
	bool route_refuse;		/* route_nomatch = refuse */
	enum config_balance balance;
	size_t max_fails;		/* 0: passive health off */
	double fail_timeout;
	double check_interval;		/* 0: no active checks */
	enum config_check check;
	bool proxy_tlvs;
	double connect_timeout;
	double fin_timeout;		/* once a side has ended; 0 = none */
	bool backend_tls;
	char backend_ca[CONFIG_PATH_LEN];
	char backend_sni[256];
	char backend_cert[CONFIG_PATH_LEN];	/* client cert to backends */
	char backend_key[CONFIG_PATH_LEN];
	enum config_proxy proxy_protocol;
	size_t high_water;
};

/*
 * [cluster]: this process is a node (every worker one) of a Ferry cluster
 * sharing one uuid namespace over NATS (cluster.h).  Absent: no NATS.
 */
struct config_cluster {
	bool set;
	int line;			/* of the [cluster] header */
	struct config_keyline lines[CONFIG_MAX_KEYLINES];
	size_t nlines;
	char nats[CONFIG_MAX_NATS][CONFIG_ADDR_LEN + 16];	/* URLs */
	size_t nnats;
	char node[CONFIG_NODE_LEN];	/* "" = hostname:pid */
	char subject_prefix[64];	/* dot-separated tokens */
	char nats_ca[CONFIG_PATH_LEN];
	char nats_cert[CONFIG_PATH_LEN];
	char nats_key[CONFIG_PATH_LEN];
	char nats_creds[CONFIG_PATH_LEN];
	char nats_user[128];
	char nats_password[256];
	char nats_token[256];
};

struct config {
	char path[CONFIG_PATH_LEN];	/* "" for the embedded default */
	char label[CONFIG_PATH_LEN];	/* the file (or text) in messages */
	struct config_keyline lines[CONFIG_MAX_KEYLINES];	/* [ferry] */
	size_t nlines;
	int workers;			/* 0 = one per core */
	int max_restarts;
	struct config_addr admin;
	bool admin_set;
	int log_level;			/* enum log_level */
	int log_dest;			/* enum log_dest (0: stderr) */
	int log_format;			/* enum log_format (0: text) */
	char user[64];
	char group[64];
	double drain_timeout;		/* SIGTERM: seconds to let streams finish */
	double admin_timeout;		/* accept to answer, per admin request */
	size_t admin_max_connections;	/* admin connections open at once */
	char pid_file[CONFIG_PATH_LEN];	/* "" = none */
	bool cert_watch;		/* reload certificates when they change */
	char ocsp_dir[CONFIG_PATH_LEN];	/* OCSP responses kept; "" = none */
	double ocsp_timeout;		/* one OCSP fetch, connect to answer */
	char admin_token[256];		/* every admin request's; "" = none */

	struct config_listener listeners[CONFIG_MAX_LISTENERS];
	size_t nlisteners;

	struct config_cluster cluster;
};

/* Defaults for the process and a listener (as documented). */
void config_init(struct config *c);
void config_listener_init(struct config_listener *l, const char *name);

/*
 * Loads `path` into c (config_init first).  Returns 0, or -1 with
 * "FILE:LINE: [section] key: reason" in err.
 */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/* Same, from a string (the embedded default, tests); `label` names it. */
int config_load_string(struct config *c, const char *text, const char *label,
    char *err, size_t errlen);

/*
 * The embedded default: relay on :8888 (plain) and :8443 (TLS with the
 * development certificate found under `certdir`).
 */
int config_default(struct config *c, const char *certdir, char *err,
    size_t errlen);

/*
 * For errors found after parsing (certificates, backends, binds): writes
 * "FILE:LINE: [section] key: why" into err, LINE being where the index-th
 * `key` of listener l (NULL: [ferry]) was given, else where its section
 * starts.
 */
void config_error(const struct config *c, const struct config_listener *l,
    const char *key, size_t index, const char *why, char *err,
    size_t errlen);
/* The same for a key of [cluster]. */
void config_cluster_error(const struct config *c, const char *key,
    const char *why, char *err, size_t errlen);

#endif
