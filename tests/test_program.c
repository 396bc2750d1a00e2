/*
 * The ferry program as a user runs it: command line, --check, the embedded
 * default, the admin page.  Real binary, loopback, port 0.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

Test(program, version_and_help, .timeout = 30)
{
	char out[8192];
	const char *v[] = { "--version", NULL };
	const char *h[] = { "--help", NULL };
	const char *bad[] = { "--no-such-option", NULL };

	cr_assert_eq(ferry_run(v, out, sizeof(out)), 0);
	cr_assert(strncmp(out, "ferry ", 6) == 0, "version: %s", out);
	cr_assert_eq(ferry_run(h, out, sizeof(out)), 0);
	cr_assert_not_null(strstr(out, "--check"), "help: %s", out);
	cr_assert_neq(ferry_run(bad, out, sizeof(out)), 0);
}

Test(program, ports_ready_and_clean_stop, .timeout = 60, .fini = cleanup)
{
	int status;

	ferry_start(&fp,
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[devices]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "[devices-tls]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n");
	int plain = ferry_port(&fp, "devices");
	int tls = ferry_port(&fp, "devices-tls");
	int admin = ferry_port(&fp, "admin");
	cr_assert_neq(plain, tls);
	char *body = http_get(admin, "/metrics", &status);
	cr_assert_not_null(body);
	cr_assert_eq(status, 200);
	cr_assert_not_null(strstr(body,
	    "ferry_connections_accepted_total{listener=\"devices\""));
	free(body);
	status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "exit status %d", status);
	cr_assert_geq(ferry_log_count(&fp, "stopped"), 1);
}
