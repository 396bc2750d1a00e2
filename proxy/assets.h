/*
 * assets: the status page's files (HTML, JavaScript, CSS, the vendored
 * uPlot and its license), built into the binary: the Makefile turns
 * proxy/assets/ into a generated C file (scripts/embed_assets.py), so
 * nothing is read from disk or fetched from the network at run time.
 */
#ifndef FERRY_ASSETS_H
#define FERRY_ASSETS_H

#include <stddef.h>

struct asset {
	const char *name;		/* file name under proxy/assets/ */
	const char *type;		/* Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct asset assets[];	/* ends with a NULL name */

/* The asset of that name (len bytes, not terminated), or NULL. */
const struct asset *assets_find(const char *name, size_t len);

#endif
