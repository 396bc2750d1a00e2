/*
 * acl: which client certificates may produce or consume which uuids on a
 * relay listener (its `acl = FILE`).
 *
 * The file is text, one rule per line, three fields:
 *
 *     # role   identity                  uuid pattern
 *     produce  cn:phone-alice            alice-*
 *     consume  dns:studio.example.com    alice-face
 *     consume  *                         public-*
 *
 *   role      `produce` or `consume`.
 *   identity  `cn:NAME` matches a commonName of the certificate's subject;
 *             `dns:NAME`, `email:ADDR`, `uri:URI` a subjectAltName of that
 *             type; `*` any client certificate that verified.  Values
 *             compare byte for byte, except DNS names, which ignore ASCII
 *             case.  There are no wildcards inside a value.
 *   pattern   a uuid exactly, or a prefix followed by one `*` at the very
 *             end (`alice-*`; `*` alone is every uuid).
 *
 * Fields are separated by blanks.  A field with blanks, or starting with
 * `"` or `#`, is written in double quotes, with \" and \\ inside.  Blank
 * lines and lines whose first field starts with `#` are comments, as is
 * anything from a `#` field after the three fields.
 *
 * Only allow rules: a client may take a role on a uuid when at least one
 * rule lets it, and nothing else may (an empty file lets no one in).  A
 * client without a verified certificate matches no rule, `*` included.
 *
 * Pure: acl_load reads the file, the rest touches no I/O and no state, so
 * a listener swaps one list for another (a reload) between two calls.
 */
#ifndef FERRY_ACL_H
#define FERRY_ACL_H

#include <stdbool.h>
#include <stddef.h>

#include "peer_id.h"

enum acl_role { ACL_PRODUCE = 0, ACL_CONSUME };

/* Largest file acl_load reads. */
#define ACL_MAX_FILE (1024 * 1024)

struct acl;

/*
 * Loads the rules of `path`.  NULL on failure, with "PATH:LINE: reason"
 * (or "PATH: reason") in err.
 */
struct acl *acl_load(const char *path, char *err, size_t errlen);
/* The same from text (`label` names it in errors). */
struct acl *acl_parse(const char *text, size_t len, const char *label,
    char *err, size_t errlen);
/* NULL is ignored. */
void acl_free(struct acl *a);

size_t acl_rules(const struct acl *a);
const char *acl_path(const struct acl *a);

/*
 * The line of the first rule that lets a client with the certificate
 * identities `ids` (NULL: no verified certificate) take `role` on uuid;
 * 0 when no rule does.  *matched (may be NULL) gets the identity that
 * matched, or NULL when the rule was `*`.
 */
int acl_check(const struct acl *a, enum acl_role role,
    const struct peer_ids *ids, const char *uuid, size_t ulen,
    const struct peer_id **matched);

const char *acl_role_name(enum acl_role role);

#endif
