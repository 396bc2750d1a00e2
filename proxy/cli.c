/* cli: see cli.h. */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listeners.h"
#include "log.h"
#include "privs.h"
#include "process.h"
#include "upgrade.h"

void
cli_usage(FILE *f)
{
	fprintf(f,
	    "usage: ferry [-c FILE] [--check] [options]\n"
	    "\n"
	    "  -c, --config FILE   run the listeners of FILE (INI; see\n"
	    "                      ferry.conf.example); without it, the embedded\n"
	    "                      default: relay on :8888 and TLS relay on :8443\n"
	    "      --check         validate the configuration (certificates,\n"
	    "                      backends, addresses, user included) and exit:\n"
	    "                      0 if good, else 2\n"
	    "                      with FILE:LINE: [section] key: reason\n"
	    "      --certs DIR     certificates of the embedded default (certs)\n"
	    "      --log-level L   error, warn, info, debug (overrides the file)\n"
	    "  -h, --help          this text\n"
	    "  -V, --version       the version\n"
	    "      --upgrade       tell the ferry of [ferry] pid_file to hand\n"
	    "                      its sockets to a new ferry (SIGUSR2), and\n"
	    "                      wait until it has\n"
	    "\n"
	    "Development shortcuts, instead of a file (port 0 picks a free port):\n"
	    "      --relay ADDR      a relay listener on ADDR (e.g. :8888)\n"
	    "      --relay-tls ADDR  a TLS relay listener on ADDR (e.g. :8443)\n"
	    "      --cert FILE       its certificate (certs/server.pem)\n"
	    "      --key FILE        its private key (certs/server.key)\n"
	    "\n"
	    "Signals: TERM/INT stop accepting, let live connections finish (up\n"
	    "to drain_timeout) and exit; HUP reloads the file: listeners\n"
	    "added, changed or removed, certificates, keys and access lists\n"
	    "(nothing changes if the new file is bad); USR2 starts the ferry\n"
	    "binary anew on the same sockets, and drains once it is ready.\n");
}

enum { OPT_CHECK = 256, OPT_CERTS, OPT_LOG, OPT_RELAY, OPT_RELAY_TLS,
    OPT_CERT, OPT_KEY, OPT_UPGRADE };

int
cli_parse(int argc, char **argv, struct cli *cli)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, OPT_CHECK },
		{ "upgrade", no_argument, NULL, OPT_UPGRADE },
		{ "certs", required_argument, NULL, OPT_CERTS },
		{ "log-level", required_argument, NULL, OPT_LOG },
		{ "relay", required_argument, NULL, OPT_RELAY },
		{ "relay-tls", required_argument, NULL, OPT_RELAY_TLS },
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(cli, 0, sizeof(*cli));
	cli->certs = "certs";
	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cli->config = optarg; break;
		case OPT_CHECK: cli->check = true; break;
		case OPT_UPGRADE: cli->upgrade = true; break;
		case OPT_CERTS: cli->certs = optarg; break;
		case OPT_LOG: cli->log_level = optarg; break;
		case OPT_RELAY: cli->relay = optarg; break;
		case OPT_RELAY_TLS: cli->relay_tls = optarg; break;
		case OPT_CERT: cli->cert = optarg; break;
		case OPT_KEY: cli->key = optarg; break;
		case 'h': cli_usage(stdout); exit(0);
		case 'V': printf("ferry %s\n", FERRY_VERSION); exit(0);
		default: cli_usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ferry: unexpected argument '%s'\n",
		    argv[optind]);
		return -1;
	}
	if (cli->config != NULL && (cli->relay || cli->relay_tls)) {
		fprintf(stderr, "ferry: -c and --relay/--relay-tls do not "
		    "mix\n");
		return -1;
	}
	return 0;
}

/* --relay / --relay-tls: listeners given on the command line. */
static int
cli_listeners(struct config *c, const struct cli *cli, char *err,
    size_t errlen)
{
	char text[4096];
	int n = 0;

	if (cli->relay != NULL)
		n += snprintf(text + n, sizeof(text) - (size_t)n,
		    "[relay]\nmode = relay\nbind = %s\n", cli->relay);
	if (cli->relay_tls != NULL)
		n += snprintf(text + n, sizeof(text) - (size_t)n,
		    "[relay-tls]\nmode = relay\nbind = %s\ncert = %s\n"
		    "key = %s\n", cli->relay_tls,
		    cli->cert ? cli->cert : "certs/server.pem",
		    cli->key ? cli->key : "certs/server.key");
	if (n < 0 || (size_t)n >= sizeof(text)) {
		snprintf(err, errlen, "command line listeners too long");
		return -1;
	}
	config_init(c);
	return config_load_string(c, text, "(command line)", err, errlen);
}

int
cli_check(const struct config *cfg)
{
	char err[1024];
	uid_t uid;
	gid_t gid;

	if (listeners_check(cfg, err, sizeof(err)) < 0 ||
	    (cfg->user[0] != '\0' &&
	    privs_lookup(cfg, &uid, &gid, err, sizeof(err)) < 0)) {
		fprintf(stderr, "ferry: %s\n", err);
		return 2;
	}
	if (listeners_idle_workers(cfg, cfg->workers <= 0 ?
	    process_cpu_count() : cfg->workers) > 0)
		fprintf(stderr, "ferry: warning: workers = %d: every listener "
		    "is a relay listener, which worker 0 alone serves: the "
		    "others would be idle\n", cfg->workers);
	printf("%s: OK (%zu listeners)\n", cfg->label, cfg->nlisteners);
	return 0;
}

int
cli_load_config(struct config *c, const struct cli *cli, char *err,
    size_t errlen)
{
	char buf[1024];
	int rc;

	if (err == NULL) {
		err = buf;
		errlen = sizeof(buf);
	}
	config_init(c);
	if (cli->relay || cli->relay_tls)
		rc = cli_listeners(c, cli, err, errlen);
	else if (cli->config != NULL)
		rc = config_load(c, cli->config, err, errlen);
	else
		rc = config_default(c, cli->certs, err, errlen);
	if (rc == 0 && cli->log_level != NULL) {
		int l = log_level_parse(cli->log_level);
		if (l < 0) {
			snprintf(err, errlen, "bad --log-level '%s'",
			    cli->log_level);
			rc = -1;
		} else {
			c->log_level = l;
		}
	}
	if (rc < 0 && err == buf)
		fprintf(stderr, "ferry: %s\n", err);
	return rc;
}


int
cli_upgrade(const struct config *cfg)
{
	char err[1024];
	pid_t opid, npid;

	if (cfg->pid_file[0] == '\0') {
		fprintf(stderr, "ferry: --upgrade: %s has no pid_file in "
		    "[ferry]: signal the running ferry with SIGUSR2\n",
		    cfg->label);
		return 2;
	}
	if (upgrade_signal(cfg->pid_file, &opid, &npid, err,
	    sizeof(err)) < 0) {
		fprintf(stderr, "ferry: --upgrade: %s\n", err);
		return 1;
	}
	printf("upgraded: pid %ld handed its sockets to pid %ld\n",
	    (long)opid, (long)npid);
	return 0;
}
