/*
 * privs: the user and group ferry runs as ([ferry] user and group), after
 * binding.  Errors name the configuration line (config_error).
 */
#ifndef FERRY_PRIVS_H
#define FERRY_PRIVS_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

/* The user's uid and gid (or the group's).  0, or -1 with err. */
int privs_lookup(const struct config *c, uid_t *uid, gid_t *gid, char *err,
    size_t errlen);

/*
 * Becomes `user` (nothing when unset, or when started as that user
 * already), for good: -1 with err when it cannot, or could come back.
 */
int privs_drop(const struct config *c, char *err, size_t errlen);

#endif
