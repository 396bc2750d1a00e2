/*
 * config_impl: the config module's own header, shared by its files and
 * included by no other module (the public contract is config.h).
 *
 *   config.c        the key table, the sections ([ferry], [cluster], a
 *                   listener), inih's line readers and handler, loading
 *   config_value.c  the value parsers: one value of a key into the struct,
 *                   or an error with the file, line and key
 *   config_check.c  what the file as a whole must satisfy, checked after
 *                   it is read (listeners, routes, OCSP, ACLs, [cluster]),
 *                   and the errors other modules report at a key's line
 */
#ifndef FERRY_CONFIG_IMPL_H
#define FERRY_CONFIG_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"

/*
 * Longest line, '\n' included: inih needs one byte more for the '\0'.  A
 * longer line is refused (inih would cut it and read the rest as a line of
 * its own).
 */
#define CONFIG_MAX_LINE 4096

struct parse {
	struct config *c;
	const char *label;		/* file name for messages */
	int line;			/* current line (counted by the reader) */
	int ferry_line;			/* of the [ferry] header, or 0 */
	bool in_cluster;		/* the section being read is [cluster] */
	/*
	 * The section being read, as the reader saw its header (whole: see
	 * open_section), and its listener (NULL for [ferry]).
	 */
	char section[CONFIG_NAME_LEN];
	struct config_listener *cur;
	char *err;
	size_t errlen;
	bool failed;
	/* input: a string, or a file read with getline() into buf */
	const char *text;
	FILE *fp;
	char *buf;
	size_t bufcap;
};
/* config.c */
int config_fail(struct parse *p, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const struct config_key *config_find_key(const char *name);
int config_find_line(const struct config_keyline *lines, size_t n,
    const char *key, size_t index);

/* config_value.c: each returns 1, or 0 after config_fail() */
int config_parse_bool(struct parse *p, const char *key, const char *v,
    bool *out);
int config_parse_seconds(struct parse *p, const char *key, const char *v,
    double *out);
int config_parse_deadline(struct parse *p, const char *key, const char *v,
    const char *what, double *out);
int config_parse_size(struct parse *p, const char *key, const char *v,
    size_t min, size_t max, size_t *out);
int config_parse_count(struct parse *p, const char *key, const char *v,
    size_t min, size_t max, size_t *out);
int config_parse_int(struct parse *p, const char *key, const char *v,
    int min, int max, int *out);
int config_parse_addr(struct parse *p, const char *key, const char *v,
    struct config_addr *a);
int config_parse_addr_list(struct parse *p, const char *key, const char *v,
    struct config_addr *list, size_t *n, size_t max);
int config_parse_backend_list(struct parse *p, const char *key,
    const char *v, struct config_listener *l, int set);
int config_parse_backend_set(struct parse *p, const char *key,
    const char *v, struct config_listener *l);
int config_parse_route(struct parse *p, const char *key, const char *v,
    struct config_listener *l);
int config_parse_mode(struct parse *p, const char *key, const char *v,
    unsigned *out);
int config_parse_choice(struct parse *p, const char *key, const char *v,
    const char *const *names, int *out);
int config_copy_str(struct parse *p, const char *key, const char *v,
    char *dst, size_t len);
int config_parse_nats_list(struct parse *p, const char *key, const char *v,
    struct config_cluster *cl);
int config_parse_node(struct parse *p, const char *key, const char *v,
    char *out, size_t outlen);
int config_parse_prefix(struct parse *p, const char *key, const char *v,
    char *out, size_t outlen);

/* config_check.c: inih's result rc -> 0, or -1 with the error in p->err */
int config_finish(struct parse *p, int rc);

#endif
