# wsgate build. `make` builds build/wsgate; `make test` installs what is
# missing, builds and runs every suite; `make asan` does the same under
# AddressSanitizer + UndefinedBehaviorSanitizer.

CXX      ?= g++
BUILD    ?= build
PKGS     := libevent_core libevent_extra libevent_openssl libevent_pthreads openssl fmt libxxhash tomlplusplus libcares nlohmann_json libnghttp2 liburing
OPTFLAGS ?= -O2 -g
SANFLAGS ?=

# Recursive assignment: pkg-config runs when a recipe needs it, i.e. after
# `make test` has run scripts/install-deps.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CXXFLAGS   = -std=c++20 $(OPTFLAGS) $(SANFLAGS) -Wall -Wextra -Werror -MMD -MP -Iproxy $(PKG_CFLAGS)
LDFLAGS    = $(SANFLAGS)
LDLIBS     = $(PKG_LIBS) -lpthread

LIB_SRCS  := $(filter-out proxy/main.cpp,$(shell find proxy -name '*.cpp' | sort))
UNIT_SRCS := $(sort $(wildcard tests/unit/*.cpp))
# The admin dashboard's files, compiled into the binary (see
# proxy/runtime/dashboard_assets.h for why they are not installed files).
DASHBOARD_FILES := $(sort $(wildcard proxy/runtime/dashboard/*))
DASHBOARD_OBJ   := $(BUILD)/gen/dashboard_assets.o
LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/%.o) $(DASHBOARD_OBJ)
UNIT_OBJS := $(UNIT_SRCS:%.cpp=$(BUILD)/%.o)

.PHONY: all unit test check asan clean deps demo fuzz fuzz-build bench-hash bench-uring
all: $(BUILD)/wsgate

# A machine without the libraries gets one line naming the fix instead of a
# page of pkg-config and compiler errors. Goals that install first (deps,
# test, asan, fuzz, bench, demo) or compile nothing are not checked here;
# their sub-makes are, after the install.
NO_DEPS_GOALS := deps test asan fuzz fuzz-build bench demo clean
ifneq ($(filter-out $(NO_DEPS_GOALS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(shell pkg-config --exists $(PKGS) 2>/dev/null && echo ok),ok)
$(error missing build libraries (pkg-config: $(PKGS)): run scripts/install-deps (or make deps) first)
endif
endif

$(BUILD)/gen/dashboard_assets.cpp: $(DASHBOARD_FILES) scripts/embed-files
	@mkdir -p $(dir $@)
	scripts/embed-files $@ $(DASHBOARD_FILES)

$(DASHBOARD_OBJ): $(BUILD)/gen/dashboard_assets.cpp
	$(CXX) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/libwsgate.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/wsgate: $(BUILD)/proxy/main.o $(BUILD)/libwsgate.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit_tests: $(UNIT_OBJS) $(BUILD)/libwsgate.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(BUILD)/unit_tests

bench-hash: $(BUILD)/bench_hash
	$(BUILD)/bench_hash
$(BUILD)/bench_hash: $(BUILD)/tests/bench/bench_hash.o $(BUILD)/libwsgate.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The io_uring transport against plain epoll, as an echo server (scenarios
# (a) and (b) of scripts/bench without the proxy); see its header for the
# arguments and for counting system calls.
bench-uring: $(BUILD)/bench_uring
	for mode in epoll uring; do $(BUILD)/bench_uring $$mode 64 1 128 3; $(BUILD)/bench_uring $$mode 64 16 128 3; done
$(BUILD)/bench_uring: $(BUILD)/tests/bench/bench_uring.o $(BUILD)/libwsgate.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c -o $@ $<

deps:
	scripts/install-deps

# scripts/demo installs what is missing and builds before it starts.
demo:
	scripts/demo

# Builds and runs every suite; prints one final `N passed, N failed` line.
check: all unit
	scripts/run-tests $(BUILD)

test: deps
	$(MAKE) --no-print-directory check

asan: deps
	$(MAKE) --no-print-directory check BUILD=build-asan OPTFLAGS="-O1 -g -fno-omit-frame-pointer" \
		SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

# Benchmark tools (tests/bench/, standalone: they share no code with proxy/)
# and the on-demand side-by-side benchmark; not part of `make test`.
BENCH_TOOLS := $(BUILD)/ws_loadgen $(BUILD)/ws_echo $(BUILD)/tcp_relay_floor

$(BUILD)/ws_%: $(BUILD)/tests/bench/ws_%.o
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The plain-epoll reference relay (scripts/bench target "floor"): no libraries.
$(BUILD)/tcp_relay_floor: $(BUILD)/tests/bench/tcp_relay_floor.o
	$(CXX) $(LDFLAGS) -o $@ $^

# Keep the objects (make would delete them as intermediates of the pattern rule).
.PRECIOUS: $(BUILD)/tests/bench/%.o

bench-tools: $(BENCH_TOOLS)

# scripts/bench installs nginx, HAProxy and gnuplot when missing; see its header
# for ROUNDS, DURATION, QUICK=1 and FULL=1.
bench: deps
	$(MAKE) bench-tools
	$(MAKE) all || echo "bench: $(BUILD)/wsgate did not build; scripts/bench skips it"
	BUILD=$(BUILD) scripts/bench

# libFuzzer targets: tests/fuzz/fuzz_NAME.cpp defines LLVMFuzzerTestOneInput
# and links the library built by clang with ASan + UBSan; seeds live in
# tests/fuzz/corpus/NAME/ and an optional dictionary in tests/fuzz/NAME.dict.
FUZZ_SECONDS ?= 20
FUZZ_SRCS    := $(sort $(wildcard tests/fuzz/fuzz_*.cpp))
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.cpp=$(FUZZ_BUILD)/%)

fuzz-build: deps
	scripts/install-deps clang libclang-rt-14-dev
	$(MAKE) $(FUZZ_BUILD)/libwsgate.a BUILD=$(FUZZ_BUILD) CXX=clang++ \
		SANFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)"
	$(MAKE) $(FUZZ_BINS) BUILD=$(FUZZ_BUILD) CXX=clang++

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.cpp $(FUZZ_BUILD)/libwsgate.a
	$(CXX) -std=c++20 -O1 -g -Wall -Wextra -Werror -Iproxy $(PKG_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) \
		-o $@ $< $(FUZZ_BUILD)/libwsgate.a $(LDLIBS)

# Runs every target for FUZZ_SECONDS; any crash fails.
fuzz: fuzz-build
	scripts/fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

clean:
	rm -rf build build-*

-include $(LIB_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(BUILD)/proxy/main.d $(BENCH_TOOLS:$(BUILD)/%=$(BUILD)/tests/bench/%.d)

# The version lives in VERSION only: compiled into the binary (`--version`)
# and used to name the Debian package.
VERSION := $(shell cat VERSION)
$(BUILD)/proxy/main.o: CXXFLAGS += -DWSGATE_VERSION='"$(VERSION)"'
$(BUILD)/proxy/main.o: VERSION

# `make install [PREFIX=/usr/local] [DESTDIR=]`: the binary to PREFIX/sbin,
# man pages to PREFIX/share/man, the systemd unit to UNITDIR, the logrotate
# file to /etc/logrotate.d and the configuration to /etc/wsgate/wsgate.toml
# only when that file does not exist yet (an edited config is never
# overwritten; a fresh DESTDIR always gets one). The unit and logrotate file
# are rewritten to name PREFIX/sbin/wsgate, the man pages to carry VERSION.
PREFIX  ?= /usr/local
UNITDIR ?= /lib/systemd/system
DEBDIR  ?= $(BUILD)

# $(call install-files,DESTDIR,PREFIX)
define install-files
	install -d -m 755 $(1)$(2)/sbin $(1)$(2)/share/man/man8 $(1)$(2)/share/man/man5 \
		$(1)$(UNITDIR) $(1)/etc/logrotate.d $(1)/etc/wsgate
	install -m 755 $(BUILD)/wsgate $(1)$(2)/sbin/wsgate
	sed 's|/usr/sbin/wsgate|$(2)/sbin/wsgate|g' packaging/systemd/wsgate.service > $(1)$(UNITDIR)/wsgate.service
	sed 's|/usr/sbin/wsgate|$(2)/sbin/wsgate|g' packaging/logrotate/wsgate > $(1)/etc/logrotate.d/wsgate
	sed 's|@VERSION@|$(VERSION)|' packaging/man/wsgate.8 | gzip -9n > $(1)$(2)/share/man/man8/wsgate.8.gz
	sed 's|@VERSION@|$(VERSION)|' packaging/man/wsgate.toml.5 | gzip -9n > $(1)$(2)/share/man/man5/wsgate.toml.5.gz
	chmod 644 $(1)$(UNITDIR)/wsgate.service $(1)/etc/logrotate.d/wsgate \
		$(1)$(2)/share/man/man8/wsgate.8.gz $(1)$(2)/share/man/man5/wsgate.toml.5.gz
	test -e $(1)/etc/wsgate/wsgate.toml || install -m 644 packaging/wsgate.toml $(1)/etc/wsgate/wsgate.toml
endef

.PHONY: install deb
install: $(BUILD)/wsgate
	$(call install-files,$(DESTDIR),$(PREFIX))

# `make deb`: DEBDIR/wsgate_VERSION_ARCH.deb, staged in DEBDIR/deb-root
# (PREFIX=/usr) by the same steps as `make install`.
deb: $(BUILD)/wsgate
	rm -rf $(DEBDIR)/deb-root
	$(call install-files,$(DEBDIR)/deb-root,/usr)
	packaging/debian/build-deb $(DEBDIR)/deb-root $(VERSION) $(DEBDIR)
