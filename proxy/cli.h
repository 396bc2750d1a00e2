/*
 * cli: ferry's command line -> its configuration (a file, the --relay
 * shortcuts, or the embedded default), and --check.  Errors go to stderr.
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

struct cli {
	const char *config;
	const char *certs;
	const char *log_level;
	bool check;
	bool upgrade;
	/* development shortcuts: one relay listener each (port 0 allowed) */
	const char *relay, *relay_tls, *cert, *key;
};

void cli_usage(FILE *f);

/* 0, or -1 (after the usage); --help and --version exit here. */
int cli_parse(int argc, char **argv, struct cli *cli);

/*
 * The configuration the command line names, read anew (a reload calls it
 * again).  0, or -1 with the error on stderr... or in err when err is not
 * NULL.
 */
int cli_load_config(struct config *c, const struct cli *cli, char *err,
    size_t errlen);

/* --check: everything but binding; the exit status (0 or 2). */
int cli_check(const struct config *cfg);

/*
 * --upgrade: SIGUSR2 to the ferry of [ferry] pid_file, then waits for the
 * new one; the exit status (0, 1 when it did not hand over, 2 without a
 * pid_file).
 */
int cli_upgrade(const struct config *cfg);

#endif
