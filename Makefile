# Ferry: a plain Makefile.  Everything is built into build/.
#
#   make            build build/ferry, the man pages (build/man/) and the
#                   development certificates
#   make run        install missing packages, build, run on the default
#   make test       install missing packages, build, run every test
#   make test-package  build the Debian package, check it, install it in a
#                   throwaway Debian root (a few minutes; root for that)
#   make bench      install missing packages (and the peers), run the
#                   side-by-side benchmarks (BENCH_ARGS=... for the runner)
#   make fuzz       install clang if missing, build the libFuzzer targets
#                   and run each for FUZZ_SECONDS (30)
#   make soak       1000 relay pairs at 60 Hz for 5 minutes: no frame lost,
#                   memory flat (SOAK_SECONDS, SOAK_PAIRS, SOAK_TLS=1)
#   make install    PREFIX=/usr/local DESTDIR= (make uninstall: the same)
#   make SANITIZE=1 ...   AddressSanitizer + UndefinedBehaviorSanitizer

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKG_CONFIG ?= pkg-config
PYTHON  ?= python3
BUILD   ?= build

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

# pkg-config where a .pc file exists; plain -l flags otherwise (Debian ships
# libev without one).
pc_cflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pc_libs   = $(shell $(PKG_CONFIG) --exists $(1) 2>/dev/null && $(PKG_CONFIG) --libs $(1) || echo $(2))

SSL_LIBS   := $(call pc_libs,libssl libcrypto,-lssl -lcrypto)
EV_LIBS    := $(call pc_libs,libev,-lev)
INIH_LIBS  := $(call pc_libs,inih,-linih)
CRIT_LIBS  := $(call pc_libs,criterion,-lcriterion)
NATS_LIBS  := $(call pc_libs,libnats,-lnats)
DEP_CFLAGS := $(call pc_cflags,libssl libcrypto inih libnats)
CRIT_CFLAGS := $(call pc_cflags,criterion)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith -Wformat=2
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -fno-strict-aliasing $(DEP_CFLAGS) \
	   -DFERRY_VERSION='"$(VERSION)"' -MMD -MP
LDFLAGS ?=
# wslay and http-parser ship no .pc file.
WEB_LIBS := -lwslay -lhttp_parser
LIBS    := $(SSL_LIBS) $(EV_LIBS) $(INIH_LIBS) $(NATS_LIBS) $(WEB_LIBS) -lpthread -lm

# As given, for the make that tests/test_install.py runs.
BUILD_ARG := $(BUILD)

ifeq ($(SANITIZE),1)
# Sanitized objects never mix with plain ones, whatever BUILD is.
override BUILD := $(BUILD)/sanitize
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=undefined -O1
LDFLAGS += -fsanitize=address,undefined
endif

# The library: every module but main.c, shared by ferry and the tests.
LIB_SRC  := $(filter-out proxy/main.c,$(wildcard proxy/*.c))
# The status page's files, built into the binary (proxy/assets.h).
ASSETS   := $(sort $(wildcard proxy/assets/*))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/assets.o
MAIN_OBJ := $(BUILD)/proxy/main.o
TEST_SRC := $(wildcard tests/test_*.c)
# The suites' shared modules: every other .c in tests/ (helpers, ferryproc,
# relayclient, metrics_read, relaycheck, ...).
TEST_LIB := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o) $(TEST_LIB:%.c=$(BUILD)/%.o)
# The load generator: its own sources over the library's lower layers.
# floor_relay.c is a program of its own: the benchmark's minimal relay.
FLOOR_SRC := tests/bench/floor_relay.c
BENCH_SRC := $(filter-out $(FLOOR_SRC),$(wildcard tests/bench/*.c))
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/%.o)
FLOOR_OBJ := $(FLOOR_SRC:%.c=$(BUILD)/%.o)

# Man pages: scdoc sources in man/, roff in $(BUILD)/man/ (man -l to read).
MAN_SRC := $(wildcard man/*.scd)
MAN     := $(MAN_SRC:man/%.scd=$(BUILD)/man/%)

CERTS := certs/ca.pem certs/server.pem certs/server.key certs/client.pem \
	 certs/client.key certs/other.pem certs/other.key

.PHONY: all programs deps certs man run test test-c test-py check install \
	uninstall clean bench fuzz soak test-package FORCE

all: programs $(BUILD)/floor-relay certs

man: $(MAN)

$(BUILD)/man/%: man/%.scd
	@command -v scdoc >/dev/null || { echo "make: the man pages need scdoc" \
	    "(scripts/install-deps.sh installs it)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	scdoc < $< > $@.tmp && mv $@.tmp $@

certs: $(CERTS)
$(CERTS) &: scripts/gen-certs.sh
	@scripts/gen-certs.sh certs

deps:
	@scripts/install-deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Iproxy -c -o $@ $<

$(BUILD)/gen/assets.c: $(ASSETS) scripts/embed_assets.py
	@mkdir -p $(dir $@)
	$(PYTHON) scripts/embed_assets.py $@ $(ASSETS)

$(BUILD)/gen/assets.o: $(BUILD)/gen/assets.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -Iproxy -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(CRIT_CFLAGS) -Iproxy -Itests -DFERRY_SRCDIR='"$(CURDIR)"' -c -o $@ $<

$(BUILD)/ferry: $(MAIN_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/test_ferry: $(TEST_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(CRIT_LIBS)

$(BUILD)/ferry-bench: $(BENCH_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The floor of the relay benchmark: epoll, one read and one write per
# frame, nothing else (no library).
$(BUILD)/floor-relay: $(FLOOR_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^

# The two commands of the README.  The package check runs first, in its
# own make, so that the flags above are computed with the packages present.
run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/ferry $(ARGS)

test: deps
	@$(MAKE) --no-print-directory all $(BUILD)/test_ferry
	@$(MAKE) --no-print-directory test-c test-py

# Criterion runs the suites in parallel, each test in its own process.
# Sanitized, a leak in a test's own process is reported as that process
# exits, after its result: abort_on_error turns the report into a crash,
# which fails the run (a plain exit code would not).
test-c: $(BUILD)/test_ferry certs
	FERRY_BIN=$(BUILD)/ferry ASAN_OPTIONS=abort_on_error=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    $(BUILD)/test_ferry --jobs 2 $(TEST_ARGS)

# Sanitized, the server the Python runner starts writes any sanitizer
# report to a file (the runner does not show its stderr): one fails the run.
# The man page test reads the pages built here, and ferry's --help; the
# install test runs make install into temporary directories.
PY_SAN_LOG := $(CURDIR)/$(BUILD)/py-sanitizer
PY_ENV := FERRY_MAN_DIR=$(CURDIR)/$(BUILD)/man FERRY_BIN=$(CURDIR)/$(BUILD)/ferry \
	  FERRY_MAKE_VARS='BUILD=$(BUILD_ARG) SANITIZE=$(SANITIZE)'
test-py: programs certs
ifeq ($(SANITIZE),1)
	@rm -f $(PY_SAN_LOG).*
	ASAN_OPTIONS=log_path=$(PY_SAN_LOG) UBSAN_OPTIONS=log_path=$(PY_SAN_LOG) \
	    $(PY_ENV) $(PYTHON) tests/run_py_tests.py $(BUILD)/ferry
	@if ls $(PY_SAN_LOG).* >/dev/null 2>&1; then cat $(PY_SAN_LOG).* >&2; \
	    echo "test-py: ferry logged a sanitizer report" >&2; exit 1; fi
else
	$(PY_ENV) $(PYTHON) tests/run_py_tests.py $(BUILD)/ferry
endif

# Side by side with the Tornado reference, hitch and HAProxy (installed
# here when missing); takes about 15 minutes.  Results and their figures
# (gnuplot, SVG: tests/bench/plot.py) in $(BUILD)/bench.  See
# docs/benchmarks.md.
bench:
	@scripts/install-deps.sh hitch haproxy python3-tornado gnuplot-nox
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/bench/run.py --build $(BUILD) $(BENCH_ARGS)

# The Debian package (debian/): built from a copy of the tree, its contents
# and lintian checked, then installed, run and purged in a throwaway Debian
# root (debootstrap, kept in $(BUILD)/package/base; root only).  A few
# minutes, so not part of `make test`; .ci/run runs it.
test-package:
	@scripts/install-deps.sh debhelper lintian debootstrap
	$(PYTHON) tests/package/test_package.py --build $(BUILD)

# libFuzzer targets (tests/fuzz/), built with clang and ASan+UBSan into
# $(BUILD)/libfuzzer; `make test` needs none of it.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := relay config stream cluster http ws proxy_in
FUZZ_BUILD   := $(BUILD)/libfuzzer
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer -std=gnu11 $(WARN) \
		-fno-strict-aliasing $(DEP_CFLAGS) \
		-DFERRY_VERSION='"$(VERSION)"' -MMD -MP $(FUZZ_SAN) \
		-fsanitize=fuzzer-no-link
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o) $(FUZZ_BUILD)/gen/assets.o
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iproxy -c -o $@ $<

$(FUZZ_BUILD)/gen/assets.o: $(BUILD)/gen/assets.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iproxy -c -o $@ $<

# Made through a pattern chain: keep them for the next build.
.SECONDARY: $(FUZZ_LIB_OBJ) $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/tests/fuzz/fuzz_%.o)

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LIBS)

# The protocol parser alone: no other module, no library but libc.
$(FUZZ_BUILD)/fuzz_relay: $(FUZZ_BUILD)/tests/fuzz/fuzz_relay.o \
		$(FUZZ_BUILD)/proxy/relay_proto.o
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^

# The PROXY protocol parser alone, likewise.
$(FUZZ_BUILD)/fuzz_proxy_in: $(FUZZ_BUILD)/tests/fuzz/fuzz_proxy_in.o \
		$(FUZZ_BUILD)/proxy/proxy_in.o
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^

# The HTTP head parser alone (and http-parser).
$(FUZZ_BUILD)/fuzz_http: $(FUZZ_BUILD)/tests/fuzz/fuzz_http.o \
		$(FUZZ_BUILD)/proxy/http.o $(FUZZ_BUILD)/proxy/buffer.o
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ -lhttp_parser

# The cluster's message codec alone (it checks uuids and keys with the
# relay protocol's pure checks): no libev, OpenSSL or NATS.
$(FUZZ_BUILD)/fuzz_cluster: $(FUZZ_BUILD)/tests/fuzz/fuzz_cluster.o \
		$(FUZZ_BUILD)/proxy/cluster_proto.o $(FUZZ_BUILD)/proxy/relay_proto.o
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^

fuzz:
	@scripts/install-deps.sh clang libclang-rt-14-dev
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The relay under a steady load for minutes (not part of `make test`):
# ferry-bench's pairs through slow_consumer = block, every frame checked,
# ferry's RSS sampled every 10 s.  See docs/reliability.md.
soak: $(BUILD)/ferry $(BUILD)/ferry-bench certs
	$(PYTHON) tests/soak/soak.py --build $(BUILD)

# Where `make install` puts things.  SYSCONFDIR is /etc for PREFIX=/usr
# (the Debian package), else PREFIX/etc.  systemd reads units, sysusers.d
# and tmpfiles.d under /usr/local/lib as well as /usr/lib.
SBINDIR    ?= $(PREFIX)/sbin
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/ferry
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d

# The unit, the default configuration and the tmpfiles.d snippet name
# installed paths: made from scripts/*.in for these directories, every
# time (PREFIX may differ from the last run).
DIST := $(BUILD)/dist
DIST_FILES := $(DIST)/ferry.service $(DIST)/ferry.conf $(DIST)/ferry.tmpfiles
$(DIST)/%: scripts/%.in FORCE
	@mkdir -p $(dir $@)
	@sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    -e 's|@DOCDIR@|$(DOCDIR)|g' $< > $@.tmp && mv $@.tmp $@
FORCE:

# The programs and pages, without the development certificates or the
# benchmark's floor relay (what the Debian package builds).
programs: $(BUILD)/ferry $(BUILD)/ferry-bench man

# The configuration is installed only where there is none, and uninstalled
# only as it was installed: an operator's edits are never lost.
CONF := $(DESTDIR)$(SYSCONFDIR)/ferry/ferry.conf

install: programs $(DIST_FILES)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)/examples \
	    $(DESTDIR)$(SYSCONFDIR)/ferry $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	install -m 0755 $(BUILD)/ferry $(DESTDIR)$(SBINDIR)/ferry
	install -m 0755 scripts/ferry_client.py $(DESTDIR)$(BINDIR)/ferry-client
	install -m 0755 $(BUILD)/ferry-bench $(DESTDIR)$(BINDIR)/ferry-bench
	install -m 0644 $(BUILD)/man/ferry-client.1 $(BUILD)/man/ferry-bench.1 \
	    $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BUILD)/man/ferry.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(BUILD)/man/ferry.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 ferry.conf.example $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 $(DIST)/ferry.service $(DESTDIR)$(UNITDIR)/ferry.service
	install -m 0644 scripts/ferry.sysusers $(DESTDIR)$(SYSUSERSDIR)/ferry.conf
	install -m 0644 $(DIST)/ferry.tmpfiles $(DESTDIR)$(TMPFILESDIR)/ferry.conf
	install -m 0644 scripts/ferry.logrotate \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d/ferry
	@if [ -e $(CONF) ]; then echo "install: keeping $(CONF)"; \
	else echo "install -m 0644 $(DIST)/ferry.conf $(CONF)"; \
	    install -m 0644 $(DIST)/ferry.conf $(CONF); fi

uninstall: $(DIST)/ferry.conf
	rm -f $(DESTDIR)$(SBINDIR)/ferry $(DESTDIR)$(BINDIR)/ferry-client \
	    $(DESTDIR)$(BINDIR)/ferry-bench \
	    $(DESTDIR)$(MANDIR)/man1/ferry-client.1 \
	    $(DESTDIR)$(MANDIR)/man1/ferry-bench.1 \
	    $(DESTDIR)$(MANDIR)/man5/ferry.conf.5 $(DESTDIR)$(MANDIR)/man8/ferry.8 \
	    $(DESTDIR)$(DOCDIR)/examples/ferry.conf.example \
	    $(DESTDIR)$(UNITDIR)/ferry.service \
	    $(DESTDIR)$(SYSUSERSDIR)/ferry.conf $(DESTDIR)$(TMPFILESDIR)/ferry.conf \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d/ferry
	@if cmp -s $(DIST)/ferry.conf $(CONF); then echo "rm -f $(CONF)"; \
	    rm -f $(CONF); \
	elif [ -e $(CONF) ]; then echo "uninstall: keeping $(CONF) (changed)"; fi
	@for d in $(DESTDIR)$(SYSCONFDIR)/ferry \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d $(DESTDIR)$(DOCDIR)/examples \
	    $(DESTDIR)$(DOCDIR); do [ ! -d $$d ] || rmdir --ignore-fail-on-non-empty $$d; done

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_OBJ:.o=.d) \
	$(BENCH_OBJ:.o=.d) $(FLOOR_OBJ:.o=.d) $(FUZZ_LIB_OBJ:.o=.d) \
	$(FUZZ_TARGETS:%=$(FUZZ_BUILD)/tests/fuzz/fuzz_%.d)
