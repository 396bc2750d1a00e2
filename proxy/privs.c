/* privs: see privs.h. */
#define _GNU_SOURCE
#include "privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int
privs_lookup(const struct config *c, uid_t *uid, gid_t *gid, char *err,
    size_t errlen)
{
	struct passwd *pw;
	char why[256];

	errno = 0;
	pw = getpwnam(c->user);
	if (pw == NULL) {
		snprintf(why, sizeof(why), "no user '%s'%s%s", c->user,
		    errno ? ": " : "", errno ? strerror(errno) : "");
		config_error(c, NULL, "user", 0, why, err, errlen);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	if (c->group[0]) {
		struct group *gr;
		errno = 0;
		gr = getgrnam(c->group);
		if (gr == NULL) {
			snprintf(why, sizeof(why), "no group '%s'%s%s",
			    c->group, errno ? ": " : "",
			    errno ? strerror(errno) : "");
			config_error(c, NULL, "group", 0, why, err, errlen);
			return -1;
		}
		*gid = gr->gr_gid;
	}
	return 0;
}

int
privs_drop(const struct config *c, char *err, size_t errlen)
{
	uid_t uid;
	gid_t gid;

	if (c->user[0] == '\0')
		return 0;
	if (privs_lookup(c, &uid, &gid, err, errlen) < 0)
		return -1;
	/* Started as that user already (systemd User=): nothing to drop. */
	if (geteuid() != 0) {
		if (geteuid() == uid && getegid() == gid)
			return 0;
		snprintf(err, errlen, "not started as root: cannot become %s",
		    c->user);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", c->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(err, errlen, "privileges could be regained");
		return -1;
	}
	LOGI("running as user %s (uid %ld, gid %ld)", c->user, (long)uid,
	    (long)gid);
	return 0;
}
