/* listeners: --check (see listeners.h, listeners_impl.h). */
#define _GNU_SOURCE
#include "listeners.h"
#include "listeners_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "accesslog.h"
#include "acl.h"
#include "admin.h"
#include "cluster.h"
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "netutil.h"
#include "registry.h"
#include "sockpool.h"
#include "relay.h"
#include "relay_metrics.h"
#include "tcpserver.h"
#include "tls.h"
#include "tls_ocsp.h"
#include "tls_tickets.h"

/* ---- --check ---- */

/*
 * The addresses to bind (and the admin page's) must resolve.  Resolving,
 * not binding: a check must not take the ports of a running ferry, nor
 * need its privileges.
 */
static int
check_addresses(const struct config *cfg, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char why[256];

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		for (size_t j = 0; j < l->nbind; j++) {
			const struct config_addr *a = &l->bind[j];
			uid_t uid;
			gid_t gid;
			if (config_addr_is_unix(a)) {
				if (listeners_unix_owner(l, &uid, &gid, why,
				    sizeof(why)) < 0) {
					config_error(cfg, l, "unix_owner", 0,
					    why, err, errlen);
					return -1;
				}
				continue;
			}
			if (a->host[0] != '\0' && netutil_resolve(a->host,
			    a->port, &ss, &len, why, sizeof(why)) < 0) {
				config_error(cfg, l, "bind", 0, why, err,
				    errlen);
				return -1;
			}
		}
	}
	if (cfg->admin_set && cfg->admin.host[0] != '\0' &&
	    netutil_resolve(cfg->admin.host, cfg->admin.port, &ss, &len, why,
	    sizeof(why)) < 0) {
		config_error(cfg, NULL, "admin", 0, why, err, errlen);
		return -1;
	}
	return 0;
}

/*
 * An access log's directory must be there (opening the file would create
 * it: a check creates nothing).
 */
static int
check_access_logs(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		char dir[CONFIG_PATH_LEN], why[CONFIG_PATH_LEN + 64];
		const char *slash = strrchr(l->access_log, '/');
		struct stat sb;

		if (l->access_log[0] == '\0')
			continue;
		if (slash == NULL)
			snprintf(dir, sizeof(dir), ".");
		else
			snprintf(dir, sizeof(dir), "%.*s",
			    slash == l->access_log ? 1 :
			    (int)(slash - l->access_log), l->access_log);
		errno = 0;
		if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
			snprintf(why, sizeof(why), "directory %s: %s", dir,
			    errno ? strerror(errno) : "not a directory");
			config_error(cfg, l, "access_log", 0, why, err, errlen);
			return -1;
		}
	}
	return 0;
}

/* Whether a and b (resolved) would take the same port. */
static bool
clash(const struct config_addr *a, const struct config_addr *b)
{
	struct sockaddr_storage sa, sb;
	socklen_t la, lb;
	char why[256];

	if (a->port == 0 || a->port != b->port)
		return false;
	/* ":port" is every address of both families. */
	if (a->host[0] == '\0' || b->host[0] == '\0')
		return true;
	if (netutil_resolve(a->host, a->port, &sa, &la, why, sizeof(why)) < 0 ||
	    netutil_resolve(b->host, b->port, &sb, &lb, why, sizeof(why)) < 0 ||
	    sa.ss_family != sb.ss_family)
		return false;
	if (sa.ss_family == AF_INET) {
		in_addr_t x = ((struct sockaddr_in *)&sa)->sin_addr.s_addr;
		in_addr_t y = ((struct sockaddr_in *)&sb)->sin_addr.s_addr;
		return x == y || x == htonl(INADDR_ANY) ||
		    y == htonl(INADDR_ANY);
	}
	if (sa.ss_family == AF_INET6) {
		const struct in6_addr *x = &((struct sockaddr_in6 *)&sa)->sin6_addr;
		const struct in6_addr *y = &((struct sockaddr_in6 *)&sb)->sin6_addr;
		return !memcmp(x, y, sizeof(*x)) || IN6_IS_ADDR_UNSPECIFIED(x) ||
		    IN6_IS_ADDR_UNSPECIFIED(y);
	}
	return false;
}

/* Two listeners (or the admin page) on one address fail at start. */
int
listeners_check_clashes(const struct config *cfg, char *err, size_t errlen)
{
	const struct config_listener *owner[CONFIG_MAX_LISTENERS *
	    CONFIG_MAX_BINDS + 1];
	const struct config_addr *addr[CONFIG_MAX_LISTENERS *
	    CONFIG_MAX_BINDS + 1];
	size_t n = 0;
	char why[512], where[128];

	if (cfg->admin_set) {
		owner[n] = NULL;
		addr[n++] = &cfg->admin;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nbind; j++) {
			owner[n] = &cfg->listeners[i];
			addr[n++] = &cfg->listeners[i].bind[j];
		}
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < i; k++) {
			if (!clash(addr[k], addr[i]))
				continue;
			if (owner[k] != NULL)
				snprintf(where, sizeof(where), "[%s] (line %d)",
				    owner[k]->name, owner[k]->line);
			else
				snprintf(where, sizeof(where), "admin");
			snprintf(why, sizeof(why), "%s%s%s:%d is also bound by "
			    "%s: one address, one listener", strchr(addr[i]->host,
			    ':') ? "[" : "", addr[i]->host, strchr(addr[i]->host,
			    ':') ? "]" : "", addr[i]->port, where);
			config_error(cfg, owner[i], owner[i] ? "bind" : "admin",
			    0, why, err, errlen);
			return -1;
		}
	return 0;
}

size_t
listeners_idle_workers(const struct config *cfg, int workers)
{
	/*
	 * Relay listeners and the admin page are worker 0's alone, unless
	 * every worker is a node of a cluster.
	 */
	if (cfg->cluster.set)
		return 0;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].mode == CONFIG_FORWARD)
			return 0;
	return workers > 1 ? (size_t)workers - 1 : 0;
}

int
listeners_check(const struct config *cfg, char *err, size_t errlen)
{
	struct backend_def backends[CONFIG_MAX_BACKENDS];
	struct tls_keep *keep = listeners_tls_keep_build(cfg, NULL, err, errlen);
	struct tls_set t;
	int rc;

	if (keep == NULL)
		return -1;
	rc = listeners_tls_set_build(cfg, &t, keep, err, errlen);
	if (rc == 0)
		listeners_tls_set_free(&t, cfg->nlisteners);
	listeners_tls_keep_free(keep);
	if (rc < 0 || cluster_check(cfg, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->mode == CONFIG_FORWARD && listeners_resolve_backends(cfg, l,
		    backends, err, errlen) < 0)
			return -1;
	}
	if (check_addresses(cfg, err, errlen) < 0 ||
	    check_access_logs(cfg, err, errlen) < 0)
		return -1;
	return listeners_check_clashes(cfg, err, errlen);
}
