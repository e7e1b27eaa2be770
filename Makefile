# wsgate build. `make` builds build/wsgate; `make test` installs what is
# missing, builds and runs every suite; `make asan` does the same under
# AddressSanitizer + UndefinedBehaviorSanitizer.

CXX      ?= g++
BUILD    ?= build
PKGS     := libevent_core libevent_openssl libevent_pthreads openssl fmt libxxhash tomlplusplus
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
LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/%.o)
UNIT_OBJS := $(UNIT_SRCS:%.cpp=$(BUILD)/%.o)

.PHONY: all unit test check asan clean deps demo fuzz fuzz-build
all: $(BUILD)/wsgate

$(BUILD)/libwsgate.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/wsgate: $(BUILD)/proxy/main.o $(BUILD)/libwsgate.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit_tests: $(UNIT_OBJS) $(BUILD)/libwsgate.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(BUILD)/unit_tests

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
	$(MAKE) check

asan: deps
	$(MAKE) check BUILD=build-asan OPTFLAGS="-O1 -g -fno-omit-frame-pointer" \
		SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

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
	$(CXX) -std=c++20 -O1 -g -Iproxy $(PKG_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) \
		-o $@ $< $(FUZZ_BUILD)/libwsgate.a $(LDLIBS)

# Runs every target for FUZZ_SECONDS; any crash fails.
fuzz: fuzz-build
	scripts/fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

clean:
	rm -rf build build-*

-include $(LIB_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(BUILD)/proxy/main.d

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
# are rewritten to name PREFIX/sbin/wsgate.
PREFIX  ?= /usr/local
UNITDIR ?= /lib/systemd/system
SBIN     = $(PREFIX)/sbin/wsgate
.PHONY: install deb
install: $(BUILD)/wsgate
	install -d -m 755 $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/logrotate.d $(DESTDIR)/etc/wsgate
	install -m 755 $(BUILD)/wsgate $(DESTDIR)$(SBIN)
	sed 's|/usr/sbin/wsgate|$(SBIN)|g' packaging/systemd/wsgate.service > $(DESTDIR)$(UNITDIR)/wsgate.service
	sed 's|/usr/sbin/wsgate|$(SBIN)|g' packaging/logrotate/wsgate > $(DESTDIR)/etc/logrotate.d/wsgate
	chmod 644 $(DESTDIR)$(UNITDIR)/wsgate.service $(DESTDIR)/etc/logrotate.d/wsgate
	gzip -9n < packaging/man/wsgate.8 > $(DESTDIR)$(PREFIX)/share/man/man8/wsgate.8.gz
	gzip -9n < packaging/man/wsgate.toml.5 > $(DESTDIR)$(PREFIX)/share/man/man5/wsgate.toml.5.gz
	chmod 644 $(DESTDIR)$(PREFIX)/share/man/man8/wsgate.8.gz $(DESTDIR)$(PREFIX)/share/man/man5/wsgate.toml.5.gz
	test -e $(DESTDIR)/etc/wsgate/wsgate.toml || install -m 644 packaging/wsgate.toml $(DESTDIR)/etc/wsgate/wsgate.toml

# `make deb`: BUILD/wsgate_VERSION_ARCH.deb, staged in BUILD/deb-root.
deb: $(BUILD)/wsgate
	rm -rf $(BUILD)/deb-root
	$(MAKE) install BUILD=$(BUILD) PREFIX=/usr DESTDIR=$(abspath $(BUILD)/deb-root)
	packaging/debian/build-deb $(BUILD)/deb-root $(VERSION) $(BUILD)
