/* ferry-bench: the command line; see bench.h for the modes. */
#define _GNU_SOURCE
#include "bench.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
usage(FILE *f)
{
	fputs(
"usage: ferry-bench MODE [options]\n"
"\n"
"modes:\n"
"  relay      P producer/consumer pairs over the device protocol\n"
"  handshake  C clients doing full TLS handshakes (needs --tls)\n"
"  bulk       C connections streaming to HOST:PORT\n"
"  sink       a plaintext backend that discards (prints LISTEN port=N)\n"
"  idle       N connections opened, handshakes done, held\n"
"\n"
"options:\n"
"  -H, --host HOST     server address (127.0.0.1)\n"
"  -p, --port PORT     server port (sink: port to bind, 0 = any)\n"
"      --tls           speak TLS to the server\n"
"      --cafile FILE   verify the server's certificate against FILE\n"
"      --sni NAME      server name to send\n"
"      --tls12, --tls13  only this protocol version\n"
"      --groups LIST   key exchange groups (OpenSSL list)\n"
"      --ciphersuites LIST  TLS 1.3 cipher suites (OpenSSL list)\n"
"      --ciphers LIST  TLS 1.2 cipher list (OpenSSL syntax)\n"
"  -P, --pairs P       relay: producer/consumer pairs (10)\n"
"  -k, --keys K        relay: floats per frame, at least 3 (52)\n"
"  -r, --rate HZ       relay: frames/s per producer (0 = unlimited)\n"
"  -d, --duration S    measured seconds (5; sink: 0 = until a signal)\n"
"  -w, --warmup S      seconds run before measuring (1)\n"
"  -c, --conns C       handshake 64, bulk 8, idle 1000 by default\n"
"      --chunk BYTES   bulk: bytes per write (16384)\n"
"      --parallel N    connections set up at once (64)\n"
"      --hold S        idle: seconds to hold (0 = until a signal)\n"
"      --timeout S     setup deadline; handshake: per attempt (60, 10)\n"
"      --resume        handshake: each client resumes its last session\n"
"                      (session tickets) after its first, full handshake\n"
"      --progress, --quiet  force progress lines on or off\n"
"      --trace FILE    relay: write one line per frame of the window\n"
"                      (receive, send, due, kernel arrival and loop wake\n"
"                      times, pair, sequence number)\n"
"      --server-pid PID  relay: report that process's CPU wait too\n"
"      --consumer-port PORT  relay: consumers connect there (a cluster's\n"
"                        other node); producers to --port\n"
"      --other-pids PID,...  relay: report the CPU of these processes\n"
"                        (every thread) over the window too (oth_cpu)\n"
"      --ws            relay: consumers over WebSocket (GET /v1/consume/)\n"
"\n"
"The last line on stdout is \"RESULT mode=... key=value ...\".\n", f);
}

static int
parse_num(const char *name, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end != '\0' || !(v >= lo && v <= hi)) {
		fprintf(stderr, "ferry-bench: %s: '%s' is not a number in "
		    "[%g, %g]\n", name, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

enum {
	OPT_TLS = 256, OPT_CAFILE, OPT_SNI, OPT_TLS12, OPT_TLS13, OPT_GROUPS,
	OPT_CHUNK, OPT_PARALLEL, OPT_HOLD, OPT_TIMEOUT, OPT_PROGRESS,
	OPT_QUIET, OPT_SUITES, OPT_CIPHERS, OPT_TRACE, OPT_SERVER_PID,
	OPT_RESUME, OPT_CONSUMER_PORT, OPT_OTHER_PIDS, OPT_WS,
};

static const struct option longopts[] = {
	{ "host", required_argument, NULL, 'H' },
	{ "port", required_argument, NULL, 'p' },
	{ "tls", no_argument, NULL, OPT_TLS },
	{ "cafile", required_argument, NULL, OPT_CAFILE },
	{ "sni", required_argument, NULL, OPT_SNI },
	{ "tls12", no_argument, NULL, OPT_TLS12 },
	{ "tls13", no_argument, NULL, OPT_TLS13 },
	{ "groups", required_argument, NULL, OPT_GROUPS },
	{ "ciphersuites", required_argument, NULL, OPT_SUITES },
	{ "ciphers", required_argument, NULL, OPT_CIPHERS },
	{ "pairs", required_argument, NULL, 'P' },
	{ "keys", required_argument, NULL, 'k' },
	{ "rate", required_argument, NULL, 'r' },
	{ "duration", required_argument, NULL, 'd' },
	{ "warmup", required_argument, NULL, 'w' },
	{ "conns", required_argument, NULL, 'c' },
	{ "chunk", required_argument, NULL, OPT_CHUNK },
	{ "parallel", required_argument, NULL, OPT_PARALLEL },
	{ "hold", required_argument, NULL, OPT_HOLD },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "progress", no_argument, NULL, OPT_PROGRESS },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "trace", required_argument, NULL, OPT_TRACE },
	{ "server-pid", required_argument, NULL, OPT_SERVER_PID },
	{ "resume", no_argument, NULL, OPT_RESUME },
	{ "consumer-port", required_argument, NULL, OPT_CONSUMER_PORT },
	{ "other-pids", required_argument, NULL, OPT_OTHER_PIDS },
	{ "ws", no_argument, NULL, OPT_WS },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Parses argv into o; returns 0, 1 (help shown) or -1. */
static int
parse_args(int argc, char **argv, struct bench_opts *o)
{
	double v;
	int c, progress = -1;
	bool have_port = false, have_conns = false, have_timeout = false;
	bool have_duration = false;

	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->pairs = 10;
	o->keys = 52;
	o->duration = 5;
	o->warmup = 1;
	o->chunk = 16384;
	o->parallel = 64;
	while ((c = getopt_long(argc, argv, "H:p:P:k:r:d:w:c:h", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'H': o->host = optarg; break;
		case OPT_TLS: o->tls = true; break;
		case OPT_CAFILE: o->cafile = optarg; break;
		case OPT_SNI: o->sni = optarg; break;
		case OPT_TLS12: o->tls_version = TLS1_2_VERSION; break;
		case OPT_TLS13: o->tls_version = TLS1_3_VERSION; break;
		case OPT_GROUPS: o->groups = optarg; break;
		case OPT_SUITES: o->ciphersuites = optarg; break;
		case OPT_CIPHERS: o->ciphers = optarg; break;
		case OPT_PROGRESS: progress = 1; break;
		case OPT_QUIET: progress = 0; break;
		case OPT_TRACE: o->trace = optarg; break;
		case OPT_RESUME: o->resume = true; break;
		case OPT_WS: o->ws = true; break;
		case OPT_SERVER_PID:
			if (parse_num("--server-pid", optarg, 1, 1 << 30,
			    &v) < 0)
				return -1;
			o->server_pid = (int)v;
			break;
		case OPT_CONSUMER_PORT:
			if (parse_num("--consumer-port", optarg, 1, 65535,
			    &v) < 0)
				return -1;
			o->consumer_port = (int)v;
			break;
		case OPT_OTHER_PIDS: o->other_pids = optarg; break;
		case 'h': usage(stdout); return 1;
		case 'p':
			if (parse_num("--port", optarg, 0, 65535, &v) < 0)
				return -1;
			o->port = (int)v;
			have_port = true;
			break;
		case 'P':
			if (parse_num("--pairs", optarg, 1, 100000, &v) < 0)
				return -1;
			o->pairs = (int)v;
			break;
		case 'k':
			if (parse_num("--keys", optarg, 3, 16384, &v) < 0)
				return -1;
			o->keys = (int)v;
			break;
		case 'r':
			if (parse_num("--rate", optarg, 0, 1e6, &o->rate) < 0)
				return -1;
			break;
		case 'd':
			if (parse_num("--duration", optarg, 0, 86400,
			    &o->duration) < 0)
				return -1;
			have_duration = true;
			break;
		case 'w':
			if (parse_num("--warmup", optarg, 0, 3600,
			    &o->warmup) < 0)
				return -1;
			break;
		case 'c':
			if (parse_num("--conns", optarg, 1, 1000000, &v) < 0)
				return -1;
			o->conns = (int)v;
			have_conns = true;
			break;
		case OPT_CHUNK:
			if (parse_num("--chunk", optarg, 1, 16 << 20, &v) < 0)
				return -1;
			o->chunk = (size_t)v;
			break;
		case OPT_PARALLEL:
			if (parse_num("--parallel", optarg, 1, 100000, &v) < 0)
				return -1;
			o->parallel = (int)v;
			break;
		case OPT_HOLD:
			if (parse_num("--hold", optarg, 0, 86400, &o->hold) < 0)
				return -1;
			break;
		case OPT_TIMEOUT:
			if (parse_num("--timeout", optarg, 0.1, 86400,
			    &o->timeout) < 0)
				return -1;
			have_timeout = true;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return -1;
	}
	o->mode = argv[optind];
	bool sink = strcmp(o->mode, "sink") == 0;
	if (!have_port && !sink) {
		fprintf(stderr, "ferry-bench: %s needs --port\n", o->mode);
		return -1;
	}
	if (sink && !have_duration)
		o->duration = 0;
	if (!sink && o->duration <= 0) {
		fprintf(stderr, "ferry-bench: --duration must be positive\n");
		return -1;
	}
	if (!have_conns)
		o->conns = strcmp(o->mode, "handshake") == 0 ? 64 :
		    strcmp(o->mode, "bulk") == 0 ? 8 : 1000;
	if (!have_timeout)
		o->timeout = strcmp(o->mode, "handshake") == 0 ? 10 : 60;
	if ((o->cafile || o->sni || o->tls_version || o->groups ||
	    o->ciphersuites || o->ciphers) && !o->tls) {
		fprintf(stderr, "ferry-bench: TLS options need --tls\n");
		return -1;
	}
	o->progress = progress >= 0 ? progress == 1 : isatty(STDOUT_FILENO);
	return 0;
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	int r = parse_args(argc, argv, &o);

	if (r != 0)
		return r > 0 ? 0 : 64;
	/* OpenSSL writes with write(): a closed peer must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	bench_raise_nofile();
	if (strcmp(o.mode, "relay") == 0)
		return bench_relay(&o);
	if (strcmp(o.mode, "handshake") == 0)
		return bench_handshake(&o);
	if (strcmp(o.mode, "bulk") == 0)
		return bench_bulk(&o);
	if (strcmp(o.mode, "sink") == 0)
		return bench_sink(&o);
	if (strcmp(o.mode, "idle") == 0)
		return bench_idle(&o);
	fprintf(stderr, "ferry-bench: unknown mode '%s'\n", o.mode);
	usage(stderr);
	return 64;
}
