# Ferry: a plain Makefile.  Everything is built into build/.
#
#   make            build build/ferry (and development certificates)
#   make run        install missing packages, build, run on the default
#   make test       install missing packages, build, run every test
#   make bench      install missing packages (and the peers), run the
#                   side-by-side benchmarks (BENCH_ARGS=... for the runner)
#   make install    PREFIX=/usr/local DESTDIR=
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
DEP_CFLAGS := $(call pc_cflags,libssl libcrypto inih)
CRIT_CFLAGS := $(call pc_cflags,criterion)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith -Wformat=2
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -fno-strict-aliasing $(DEP_CFLAGS) \
	   -DFERRY_VERSION='"$(VERSION)"' -MMD -MP
LDFLAGS ?=
LIBS    := $(SSL_LIBS) $(EV_LIBS) $(INIH_LIBS) -lm

ifeq ($(SANITIZE),1)
# Sanitized objects never mix with plain ones, whatever BUILD is.
override BUILD := $(BUILD)/sanitize
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=undefined -O1
LDFLAGS += -fsanitize=address,undefined
endif

# The library: every module but main.c, shared by ferry and the tests.
LIB_SRC  := $(filter-out proxy/main.c,$(wildcard proxy/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/proxy/main.o
TEST_SRC := $(wildcard tests/test_*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tests/helpers.o \
	    $(BUILD)/tests/ferryproc.o $(BUILD)/tests/relayclient.o
# The load generator: its own sources over the library's lower layers.
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/%.o)

CERTS := certs/ca.pem certs/server.pem certs/server.key certs/client.pem \
	 certs/client.key certs/other.pem certs/other.key

.PHONY: all deps certs run test test-c test-py check install uninstall clean \
	bench

all: $(BUILD)/ferry $(BUILD)/ferry-bench certs

certs: $(CERTS)
$(CERTS) &: scripts/gen-certs.sh
	@scripts/gen-certs.sh certs

deps:
	@scripts/install-deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iproxy -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CRIT_CFLAGS) -Iproxy -Itests -DFERRY_SRCDIR='"$(CURDIR)"' -c -o $@ $<

$(BUILD)/ferry: $(MAIN_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/test_ferry: $(TEST_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(CRIT_LIBS)

$(BUILD)/ferry-bench: $(BENCH_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The two commands of the README.  The package check runs first, in its
# own make, so that the flags above are computed with the packages present.
run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/ferry $(ARGS)

test: deps
	@$(MAKE) --no-print-directory all $(BUILD)/test_ferry
	@$(MAKE) --no-print-directory test-c test-py

# Criterion runs the suites in parallel, each test in its own process.
test-c: $(BUILD)/test_ferry certs
	FERRY_BIN=$(BUILD)/ferry LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    $(BUILD)/test_ferry --jobs 2 $(TEST_ARGS)

test-py: $(BUILD)/ferry certs
	$(PYTHON) tests/run_py_tests.py $(BUILD)/ferry

# Side by side with the Tornado reference, hitch and HAProxy (installed
# here when missing); takes about 15 minutes.  See README "Benchmarks".
bench:
	@scripts/install-deps.sh hitch haproxy python3-tornado
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/bench/run.py --build $(BUILD) $(BENCH_ARGS)

install: $(BUILD)/ferry
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ferry
	install -m 0755 $(BUILD)/ferry $(DESTDIR)$(PREFIX)/bin/ferry
	install -m 0755 scripts/ferry_client.py $(DESTDIR)$(PREFIX)/bin/ferry-client
	install -m 0644 ferry.conf.example $(DESTDIR)$(PREFIX)/share/ferry/ 2>/dev/null || true

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ferry $(DESTDIR)$(PREFIX)/bin/ferry-client
	rm -rf $(DESTDIR)$(PREFIX)/share/ferry

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_OBJ:.o=.d) \
	$(BENCH_OBJ:.o=.d)
