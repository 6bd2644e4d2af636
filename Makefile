# mod_client_proxy: build, install and test the Prosody module.
#
#   make                          build the native library (Lua 5.4)
#   make LUA=5.3                  ... for another Lua: 5.4 5.3 5.2 5.1 jit
#   make install [PLUGIN_DIR=dir] install into dir/mod_client_proxy/
#   make deps                     install missing Debian packages (root)
#   make test                     fmt, clippy, unit tests, Lua specs (every Lua), the rock,
#                                 make dist deb, end-to-end tests on Prosody 0.12 and 13
#   make test-memcheck            the hostile-Lua spec under valgrind memcheck (5.4, 5.3)
#   make test-e2e-repeat N=5      the end-to-end suite N times (Prosody 0.12; PROSODY=13 for
#                                 13), stopping at the first failure (docs/TESTING.md)
#   make rock                     a binary rock for prosodyctl install, in target/rock/
#   make dist                     release artifacts in dist/: the source tarball, a binary
#                                 rock per Lua (DIST_LUAS) and the library's debug info
#   make deb                      the Debian package, in dist/ (after make dist)
#   make demo                     run the demo against a throwaway local Prosody
#   make bench                    proxied vs direct, per-stanza and route-cost figures
#   make bench-callgrind          the in-process cost per request+reply, counted (valgrind)
#   make clean
#
# GNU make. Written for Debian 12 (bookworm) with Prosody 0.12 and cargo.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all
# Steps share cargo's target directory and print in order: never run in parallel.
.NOTPARALLEL:

CARGO ?= cargo
BUSTED ?= busted

# Lua version the library is built for. Debian's Prosody 0.12 runs Lua 5.4.
LUA ?= 5.4
FEATURE_5.4 := lua54
FEATURE_5.3 := lua53
FEATURE_5.2 := lua52
FEATURE_5.1 := lua51
FEATURE_jit := luajit
FEATURE := $(FEATURE_$(LUA))
ifeq ($(FEATURE),)
$(error LUA=$(LUA) is not supported; use one of 5.4 5.3 5.2 5.1 jit)
endif
CARGO_FEATURES := --no-default-features --features $(FEATURE)

# Each Lua gets its own target directory, so that builds for several Luas (the spec
# matrix, `make LUA=5.1`) never overwrite each other's library: target/ for 5.4,
# target/lua5.1/, target/lua5.2/, target/lua5.3/, target/luajit/ for the others.
TARGET_SUBDIR_5.4 :=
TARGET_SUBDIR_5.3 := /lua5.3
TARGET_SUBDIR_5.2 := /lua5.2
TARGET_SUBDIR_5.1 := /lua5.1
TARGET_SUBDIR_jit := /luajit
# TARGET_BASE is exported so that sub-makes do not append the subdirectory twice.
# Expanded once, here: CARGO_TARGET_DIR is set to the per-Lua directory just below.
ifndef TARGET_BASE
TARGET_BASE := $(abspath $(or $(CARGO_TARGET_DIR),target))
endif
export TARGET_BASE
TARGET_DIR := $(TARGET_BASE)$(TARGET_SUBDIR_$(LUA))
export CARGO_TARGET_DIR := $(TARGET_DIR)
SO := $(TARGET_DIR)/release/libclient_proxy.so
# What is shipped (make install, the rocks, the Debian package): SO stripped, with a
# .gnu_debuglink to its debug info in STRIPPED.debug (the release profile keeps debug
# info, for profiling; the stripped library is about a tenth of the size).
STRIPPED := $(TARGET_DIR)/release/client_proxy.so
OBJCOPY ?= objcopy

# The release: version from Cargo.toml (the library's `version` export reports it).
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)

# The Lua specs and the end-to-end tests load the library from here.
export CLIENT_PROXY_SO ?= $(SO)

# Where `make install` puts mod_client_proxy/. Debian's /etc/prosody/prosody.cfg.lua
# lists this directory in plugin_paths; any directory in plugin_paths works, and so
# does <data_path>/custom_plugins (/var/lib/prosody/custom_plugins on Debian), where
# `prosodyctl install` puts modules.
PLUGIN_DIR ?= /usr/local/lib/prosody/modules
MODULE_DIR := $(DESTDIR)$(PLUGIN_DIR)/mod_client_proxy

# prosody, lua5.4, lua-busted: the module, its Lua and the specs. lua5.1, lua5.2, lua5.3,
# luajit: the spec matrix. luarocks and liblua5.4-dev (luarocks refuses to build without
# Lua's headers): the rock and its install test. valgrind: test-memcheck.
DEB_PACKAGES := prosody lua5.4 lua-busted lua5.1 lua5.2 lua5.3 luajit luarocks liblua5.4-dev valgrind

# A section header before each step ($(1) must contain no comma).
section = @printf '\n==== %s ====\n' "$(1)"

# test runs build once; its sub-makes for the steps skip it (BUILD_DEP=).
BUILD_DEP := build

.PHONY: all build deps install test test-fmt test-clippy test-unit test-lua test-lua-matrix test-rock test-e2e test-e2e-13 test-e2e-repeat demo bench bench-callgrind rock rock-build print-so stripped print-stripped dist deb test-dist clean

all: build

build:
	$(call section,build: cargo build --release ($(FEATURE)))
	$(CARGO) build --release $(CARGO_FEATURES)

# SO without its debug info (STRIPPED) and the debug info alone (STRIPPED.debug), from
# the library as built (run `build` first). Both written to temp names and renamed.
stripped:
	@set -eu; so='$(SO)'; out='$(STRIPPED)'; \
	[ -f "$$so" ] || { echo "stripped: $$so not built: run 'make build LUA=$(LUA)' first" >&2; exit 1; }; \
	$(OBJCOPY) --only-keep-debug "$$so" "$$out.debug.tmp"; \
	mv -f "$$out.debug.tmp" "$$out.debug"; \
	$(OBJCOPY) --strip-unneeded --add-gnu-debuglink="$$out.debug" "$$so" "$$out.tmp"; \
	mv -f "$$out.tmp" "$$out"; \
	echo "stripped: $$out ($$(stat -c %s "$$out") bytes; debug info in $$out.debug, $$(stat -c %s "$$out.debug") bytes)"

print-stripped:
	@echo '$(STRIPPED)'

# Installs the Debian packages the tests and the demo need, only those missing.
# Debian's prosody package starts the system service on install; it is stopped
# and disabled again so that it holds no ports (5222, 5269, 5280).
deps:
	$(call section,deps: $(DEB_PACKAGES))
	@if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then \
		for c in prosody lua5.4 lua5.3 lua5.2 lua5.1 luajit busted luarocks; do \
			command -v $$c >/dev/null 2>&1 || { echo "deps: $$c not found, and this is not a Debian system: install Prosody, Lua 5.1-5.4, LuaJIT, busted and luarocks by hand" >&2; exit 1; }; \
		done; \
		echo "deps: not Debian, but prosody, the Luas, busted and luarocks are present"; \
		exit 0; \
	fi; \
	missing=""; \
	for p in $(DEB_PACKAGES); do \
		[ "$$(dpkg-query -W -f='$${db:Status-Status}' "$$p" 2>/dev/null)" = installed ] || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all present"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "deps: missing Debian packages:$$missing (run 'make deps' as root)" >&2; exit 1; fi; \
	echo "deps: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get -q update; \
	apt-get -q install -y $$missing; \
	case " $$missing " in *" prosody "*) \
		echo "deps: stopping and disabling the system prosody service"; \
		if command -v service >/dev/null 2>&1; then service prosody stop || true; \
		elif command -v invoke-rc.d >/dev/null 2>&1; then invoke-rc.d prosody stop || true; fi; \
		if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then systemctl disable --now prosody || true; \
		elif command -v update-rc.d >/dev/null 2>&1; then update-rc.d prosody disable || true; fi ;; \
	esac

# Copies the shim, its libraries (lua/*.lib.lua, loaded with module:require) and the
# native library, each to a temporary name in the target directory and renames it:
# overwriting a .so that a running Prosody has loaded crashes that Prosody.
# Builds first when cargo is at hand (so `sudo make install` after `make` works), and
# installs the library stripped (see `stripped`).
install:
	@if command -v $(CARGO) >/dev/null 2>&1; then $(MAKE) --no-print-directory build; \
	elif [ ! -f '$(SO)' ]; then echo "install: $(SO) not built and cargo not found: run 'make' first" >&2; exit 1; fi
	@$(MAKE) --no-print-directory stripped
	$(call section,install: $(MODULE_DIR))
	@set -eu; dir='$(MODULE_DIR)'; \
	install -d -m 0755 "$$dir"; \
	put() { \
		tmp=$$(mktemp "$$dir/.$$2.XXXXXX"); \
		if cp "$$1" "$$tmp" && chmod 0644 "$$tmp" && mv -f "$$tmp" "$$dir/$$2"; then \
			echo "installed $$dir/$$2"; \
		else rm -f "$$tmp"; echo "install: could not install $$dir/$$2" >&2; exit 1; fi; \
	}; \
	put lua/mod_client_proxy.lua mod_client_proxy.lua; \
	for lib in native compat outbox resources affinity roster shell hibernation; do put "lua/$$lib.lib.lua" "$$lib.lib.lua"; done; \
	put '$(STRIPPED)' client_proxy.so
	@echo "Restart Prosody to load a new client_proxy.so (a module reload keeps the old library)."

# Runs every step, then fails if any step failed.
TEST_STEPS := fmt clippy unit lua-matrix lua rock dist e2e e2e-13
test: deps build
	@failed=""; \
	for s in $(TEST_STEPS); do \
		$(MAKE) --no-print-directory BUILD_DEP= test-$$s || failed="$$failed $$s"; \
	done; \
	if [ -n "$$failed" ]; then printf '\n==== test: FAILED:%s ====\n' "$$failed"; exit 1; fi; \
	printf '\n==== test: all steps passed (%s) ====\n' '$(TEST_STEPS)'

test-fmt:
	$(call section,test: cargo fmt --check)
	$(CARGO) fmt --check

test-clippy:
	$(call section,test: cargo clippy --all-targets -- -D warnings)
	$(CARGO) clippy $(CARGO_FEATURES) --all-targets -- -D warnings

test-unit:
	$(call section,test: cargo test --release --lib (core unit tests))
	$(CARGO) test --release $(CARGO_FEATURES) --lib

# The specs run under the interpreter of LUA (lua5.4 by default) against the library
# built for it, with Debian's Prosody libraries (see .busted).
LUA_BIN_5.4 := lua5.4
LUA_BIN_5.3 := lua5.3
LUA_BIN_5.2 := lua5.2
LUA_BIN_5.1 := lua5.1
LUA_BIN_jit := luajit
LUA_BIN := $(LUA_BIN_$(LUA))
# A build for another Lua, for the spec of the shim's load error: the 5.4 one under the
# other Luas, the 5.1 one under 5.4 (when the matrix built it).
FOREIGN_SO := $(if $(filter 5.4,$(LUA)),$(TARGET_BASE)/lua5.1/release/libclient_proxy.so,$(TARGET_BASE)/release/libclient_proxy.so)
test-lua: $(BUILD_DEP)
	$(call section,test: busted --lua=$(LUA_BIN) (Lua specs in spec/; CLIENT_PROXY_SO=$(SO)))
	CLIENT_PROXY_SO='$(SO)' CLIENT_PROXY_FOREIGN_SO='$(wildcard $(FOREIGN_SO))' $(BUSTED) --lua=$(LUA_BIN)

# The specs under every other Debian Lua, each against the library built for it
# (target/lua5.3/, target/lua5.2/, target/lua5.1/, target/luajit/).
LUA_MATRIX := 5.3 5.2 5.1 jit
test-lua-matrix:
	@failed=""; \
	for v in $(LUA_MATRIX); do \
		$(MAKE) --no-print-directory build test-lua LUA=$$v || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-lua-matrix: failed under Lua$$failed" >&2; exit 1; fi

# The hostile-Lua spec (spec/hostile_spec.lua) under valgrind memcheck, with Lua 5.4 and
# 5.3 against the library built for each: busted's runner run by that Lua directly under
# valgrind (--ignore-lua: no re-exec). Any invalid read or write, any use of uninitialised
# memory, anything definitely lost, or a crash fails it (so does a failing test). About 7
# minutes (5.4 ~165 s, 5.3 ~240 s on 2 cores), so not one of TEST_STEPS: CI runs it on its
# own. `make test-memcheck BUILD_DEP=` runs it against the libraries already built. No
# suppressions: lua5.4 and lua5.3
# running busted alone are memcheck clean (busted's os.exit closes the state).
MEMCHECK_LUAS := 5.4 5.3
MEMCHECK_SPEC ?= spec/hostile_spec.lua
VALGRIND_MEMCHECK := valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --num-callers=40
.PHONY: test-memcheck
test-memcheck:
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get -q install -y valgrind; }
	@failed=""; \
	for v in $(MEMCHECK_LUAS); do \
		$(if $(BUILD_DEP),$(MAKE) --no-print-directory build LUA=$$v || { failed="$$failed $$v"; continue; };) \
		so=$$($(MAKE) --no-print-directory -s print-so LUA=$$v); \
		printf '\n==== %s ====\n' "test: valgrind memcheck lua$$v busted $(MEMCHECK_SPEC) (CLIENT_PROXY_SO=$$so)"; \
		start=$$(date +%s); \
		CLIENT_PROXY_SO="$$so" timeout 1200 $(VALGRIND_MEMCHECK) lua$$v "$$(command -v $(BUSTED))" --ignore-lua '$(MEMCHECK_SPEC)' \
			|| failed="$$failed $$v"; \
		echo "test-memcheck: lua$$v took $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-memcheck: failed under Lua$$failed" >&2; exit 1; fi

# The binary rock that the end-to-end install test installs (tests/e2e_install.rs).
test-rock:
	$(MAKE) --no-print-directory rock

# The release rock and the Debian package that tests/e2e_install.rs installs: built from
# the tarball of HEAD, in their own target directory (about a minute).
test-dist:
	$(MAKE) --no-print-directory dist deb

# End-to-end tests against a real Prosody; release profile, so compiled
# artifacts are shared with `make build`.
test-e2e: $(BUILD_DEP)
	$(call section,test: cargo test --release --test '*' (end-to-end; CLIENT_PROXY_SO=$(CLIENT_PROXY_SO)))
	$(CARGO) test --release $(CARGO_FEATURES) --test '*'

# The same end-to-end suite against Prosody 13 from bookworm-backports, unpacked into
# target/prosody13/ beside the system's 0.12 (scripts/prosody13.sh) and first on PATH.
P13_DIR := $(TARGET_BASE)/prosody13
test-e2e-13: $(BUILD_DEP)
	@bin=$$(scripts/prosody13.sh '$(P13_DIR)' | tail -n 1); \
	printf '\n==== %s ====\n' "test: cargo test --release --test '*' against Prosody $$(scripts/prosody13.sh --version '$(P13_DIR)') ($$bin first on PATH)"; \
	PATH="$$bin:$$PATH" $(CARGO) test --release $(CARGO_FEATURES) --test '*'

# The end-to-end suite of test-e2e N times in a row, stopping at the first failed run:
# a race that fails one run in a few shows up here, not in CI.
N ?= 5
test-e2e-repeat: $(BUILD_DEP)
	@if [ '$(PROSODY)' = 13 ]; then bin=$$(scripts/prosody13.sh '$(P13_DIR)' | tail -n 1); export PATH="$$bin:$$PATH"; fi; \
	for i in $$(seq 1 $(N)); do \
		printf '\n==== %s ====\n' "test: cargo test --release --test '*' (end-to-end, Prosody $(or $(PROSODY),0.12)), run $$i of $(N)"; \
		$(CARGO) test --release $(CARGO_FEATURES) --test '*' \
			|| { printf '\n==== test-e2e-repeat: run %s of %s FAILED ====\n' $$i $(N); exit 1; }; \
	done; \
	printf '\n==== test-e2e-repeat: %s of %s runs passed ====\n' $(N) $(N)

demo: deps build
	$(call section,demo: cargo run --release --example demo)
	$(CARGO) run --release $(CARGO_FEATURES) --example demo

# Benchmarks, release build, about 2 minutes (bench/run.sh): on a throwaway Prosody
# (pinned to CPU 0, load on CPU 1) CPU per round trip proxied/floor (a readdress-only
# component) and memory per held request; in process, ns per forward and reply through
# the shim against the floor handler with 200,000 outstanding; the core's route cost.
# Prints a summary with the ratios against their targets, the machine and the date.
bench: deps build
	$(call section,bench: cargo build --release --example bench --example route_cost)
	$(CARGO) build --release $(CARGO_FEATURES) --example bench --example route_cost
	@TARGET_DIR='$(TARGET_DIR)' LUA_VERSION='$(LUA)' bench/run.sh

# The in-process cost per request and reply counted, not timed (about 4 minutes):
# callgrind with a cache model over the shim, the floor handler and the call floor
# (bench/callgrind_cost.sh).
bench-callgrind: deps build
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get -q install -y valgrind; }
	@CLIENT_PROXY_SO='$(TARGET_DIR)/release/libclient_proxy.so' bench/callgrind_cost.sh

# For the rockspecs (luarocks make, luarocks build): builds for the Lua of
# LUA_INTERPRETER (the one luarocks runs for) and puts the stripped library where the
# rockspec's install table takes it: target/rock/ of the source directory luarocks runs
# in (the checkout, or the unpacked release tarball), whatever TARGET_BASE is.
ROCK_DIR := $(TARGET_BASE)/rock
ROCK_LIB_DIR := $(CURDIR)/target/rock
rock-build:
	@set -eu; lua='$(or $(LUA_INTERPRETER),lua5.4)'; \
	v=$$("$$lua" -e 'print(rawget(_G, "jit") and "jit" or _VERSION:match("%d+%.%d+"))'); \
	echo "rock-build: $$lua is Lua $$v"; \
	$(MAKE) --no-print-directory build stripped LUA=$$v; \
	so=$$($(MAKE) --no-print-directory -s print-stripped LUA=$$v); \
	mkdir -p '$(ROCK_LIB_DIR)'; cp "$$so" '$(ROCK_LIB_DIR)/client_proxy.so.tmp'; \
	mv -f '$(ROCK_LIB_DIR)/client_proxy.so.tmp' '$(ROCK_LIB_DIR)/client_proxy.so'

print-so:
	@echo '$(SO)'

# A binary rock for `prosodyctl install ./mod_client_proxy-dev-1.<arch>.rock` (or a local
# rocks server: luarocks-admin make-manifest on a directory of rocks), in target/rock/.
# Made as the README says to install with luarocks (`luarocks make --tree`, into
# target/rock/tree/), then packed from that tree.
ROCK_LUA := $(if $(filter jit,$(LUA)),5.1,$(LUA))
rock:
	$(call section,rock: luarocks make --tree $(ROCK_DIR)/tree + luarocks pack (Lua $(LUA)))
	rm -rf '$(ROCK_DIR)/tree' '$(ROCK_DIR)'/*.rock
	luarocks --lua-version=$(ROCK_LUA) --tree='$(ROCK_DIR)/tree' make mod_client_proxy-dev-1.rockspec
	cd '$(ROCK_DIR)' && luarocks --lua-version=$(ROCK_LUA) --tree='$(ROCK_DIR)/tree' pack mod_client_proxy
	@ls '$(ROCK_DIR)'/*.rock

# ---- Releases: make dist, make deb ------------------------------------------------------
#
# make dist writes into dist/:
#   mod_client_proxy-$(VERSION).tar.gz    git archive of HEAD, prefix mod_client_proxy-$(VERSION)/
#                                         (committed files only: uncommitted changes are not in it)
#   lua5.x/mod_client_proxy-$(VERSION)-1.<arch>.rock
#                                         a binary rock per Lua in DIST_LUAS: `luarocks build` of
#                                         mod_client_proxy-$(VERSION)-1.rockspec from the tarball
#                                         into a tree, then `luarocks pack` from that tree
#   lua5.x/client_proxy.so.debug          the debug info of that rock's (stripped) library
# The rocks are built in their own target directory, target/dist/, from the tarball
# (luarocks unpacks a local source where it runs: a copy in target/dist/src-5.x/), never
# from the working tree, never into the development build.
# Binary rocks do not name their Lua (…linux-x86_64.rock for each), hence lua5.x/. More
# Luas: make dist DIST_LUAS="5.4 5.3 5.1", with their headers installed (liblua5.x-dev).
DIST_DIR := dist
DIST_LUAS ?= 5.4
DIST_TARGET := $(TARGET_BASE)/dist
DIST_NAME := mod_client_proxy-$(VERSION)
DIST_TARBALL := $(DIST_DIR)/$(DIST_NAME).tar.gz
DIST_ROCKSPEC := mod_client_proxy-$(VERSION)-1.rockspec
# A shipped library of this size or more fails the build (the unstripped one is ~12 MB).
MAX_LIB_BYTES := 2000000
dist:
	$(call section,dist: $(DIST_TARBALL) and binary rocks for Lua $(DIST_LUAS))
	@set -eu; \
	[ -f '$(DIST_ROCKSPEC)' ] || { echo "dist: no $(DIST_ROCKSPEC) for version $(VERSION) (Cargo.toml)" >&2; exit 1; }; \
	git diff --quiet HEAD -- 2>/dev/null || echo "dist: warning: uncommitted changes are not released (the tarball is HEAD, $$(git rev-parse --short HEAD))" >&2; \
	mkdir -p '$(DIST_DIR)'; \
	git archive --format=tar.gz --prefix='$(DIST_NAME)/' -o '$(DIST_TARBALL).tmp' HEAD; \
	mv -f '$(DIST_TARBALL).tmp' '$(DIST_TARBALL)'; \
	echo "dist: $(DIST_TARBALL) ($$(git rev-parse --short HEAD))"; \
	for v in $(DIST_LUAS); do \
		case "$$v" in 5.1|5.2|5.3|5.4) ;; *) echo "dist: DIST_LUAS: $$v is not one of 5.4 5.3 5.2 5.1 (luarocks has no separate LuaJIT rock)" >&2; exit 1 ;; esac; \
		tree='$(DIST_TARGET)'/tree-$$v; out='$(DIST_DIR)'/lua$$v; scratch='$(DIST_TARGET)'/src-$$v; \
		rm -rf "$$tree" "$$out" "$$scratch"; mkdir -p "$$out" "$$scratch"; \
		printf '\n==== %s ====\n' "dist: luarocks build $(DIST_ROCKSPEC) (Lua $$v, from $(DIST_TARBALL)) + luarocks pack"; \
		cp '$(DIST_TARBALL)' "$$scratch/"; \
		( cd "$$scratch" && TARGET_BASE='$(DIST_TARGET)' luarocks --lua-version=$$v --tree="$$tree" build '$(CURDIR)/$(DIST_ROCKSPEC)' ); \
		( cd "$$out" && luarocks --lua-version=$$v --tree="$$tree" pack mod_client_proxy $(VERSION)-1 ); \
		lib="$$tree/lib/lua/$$v/client_proxy.so"; \
		debug="$$($(MAKE) --no-print-directory -s print-stripped LUA=$$v TARGET_BASE='$(DIST_TARGET)').debug"; \
		id() { readelf -n "$$1" | sed -n 's/.*Build ID: *//p'; }; \
		[ -n "$$(id "$$lib")" ] && [ "$$(id "$$lib")" = "$$(id "$$debug")" ] \
			|| { echo "dist: $$debug is not the debug info of $$lib (build ids differ)" >&2; exit 1; }; \
		cp "$$debug" "$$out/client_proxy.so.debug"; \
		size=$$(stat -c %s "$$lib"); \
		[ "$$size" -lt $(MAX_LIB_BYTES) ] || { echo "dist: $$lib is $$size bytes, not under $(MAX_LIB_BYTES)" >&2; exit 1; }; \
	done; \
	printf '\n==== %s ====\n' "dist: sizes (bytes)"; \
	for v in $(DIST_LUAS); do \
		printf '%10s  %s\n' "$$(stat -c %s '$(DIST_TARGET)'/tree-$$v/lib/lua/$$v/client_proxy.so)" "client_proxy.so in the Lua $$v rock"; \
	done; \
	find '$(DIST_DIR)' -maxdepth 2 -type f \( -name '*.tar.gz' -o -name '*.rock' -o -name '*.debug' \) -printf '%10s  %p\n' | sort -k2

# make deb: dist/prosody-mod-client-proxy_$(VERSION)-$(DEB_REVISION)_<arch>.deb, with dpkg-deb
# alone (no debian/ source package, debhelper or network): the shim and its libraries from
# the release tarball, and the stripped library of the Lua 5.4 rock (Debian's Prosody runs
# Lua 5.4), into /usr/lib/prosody/modules/mod_client_proxy/: the plugin directory built into
# Debian's prosody (CFG_PLUGINDIR in /usr/bin/prosody), searched after plugin_paths, so no
# configuration names it. Docs under /usr/share/doc/$(DEB_PACKAGE)/ as Debian policy asks.
# Depends: prosody (>= 0.12) and the shared libraries dpkg-shlibdeps finds (else libc6 at the
# newest GLIBC_ symbol version the library uses). Files: packaging/deb/.
DEB_PACKAGE := prosody-mod-client-proxy
DEB_REVISION := 1
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_FILE := $(DIST_DIR)/$(DEB_PACKAGE)_$(VERSION)-$(DEB_REVISION)_$(DEB_ARCH).deb
DEB_WORK := $(TARGET_BASE)/deb
deb: dist
	$(call section,deb: $(DEB_FILE) (dpkg-deb))
	@set -eu; \
	work='$(DEB_WORK)'; root="$$work/debian/$(DEB_PACKAGE)"; \
	rm -rf "$$work"; mkdir -p "$$work/src" "$$root/DEBIAN"; \
	tar -xzf '$(DIST_TARBALL)' -C "$$work/src" --strip-components=1; \
	src="$$work/src"; pkg="$$src/packaging/deb"; \
	first=$$(head -n 1 "$$pkg/changelog"); \
	case "$$first" in "$(DEB_PACKAGE) ($(VERSION)-$(DEB_REVISION)) "*) ;; \
		*) echo "deb: packaging/deb/changelog starts with '$$first', not version $(VERSION)-$(DEB_REVISION)" >&2; exit 1 ;; esac; \
	lib='$(DIST_TARGET)/tree-5.4/lib/lua/5.4/client_proxy.so'; \
	[ -f "$$lib" ] || { echo "deb: $$lib missing: DIST_LUAS must include 5.4" >&2; exit 1; }; \
	mod="$$root/usr/lib/prosody/modules/mod_client_proxy"; doc="$$root/usr/share/doc/$(DEB_PACKAGE)"; \
	install -d -m 0755 "$$mod" "$$doc"; \
	install -m 0644 "$$src/lua/mod_client_proxy.lua" "$$mod/"; \
	for l in native compat outbox resources affinity roster shell hibernation; do install -m 0644 "$$src/lua/$$l.lib.lua" "$$mod/"; done; \
	install -m 0644 "$$lib" "$$mod/client_proxy.so"; \
	gzip -9n < "$$src/CHANGELOG.md" > "$$doc/changelog.gz"; \
	gzip -9n < "$$pkg/changelog" > "$$doc/changelog.Debian.gz"; \
	gzip -9n < "$$src/README.markdown" > "$$doc/README.md.gz"; \
	install -m 0644 "$$pkg/copyright" "$$doc/copyright"; \
	chmod 0644 "$$doc"/*.gz; \
	if command -v dpkg-shlibdeps >/dev/null 2>&1; then \
		printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' '$(DEB_PACKAGE)' '$(DEB_PACKAGE)' > "$$work/debian/control"; \
		shlibs=$$(cd "$$work" && dpkg-shlibdeps -O "debian/$(DEB_PACKAGE)/usr/lib/prosody/modules/mod_client_proxy/client_proxy.so" | sed -n 's/^shlibs:Depends=//p'); \
		rm -f "$$work/debian/control"; \
	else \
		glibc=$$(objdump -T "$$lib" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1); \
		shlibs="libc6 (>= $${glibc:-2.34})"; \
		if objdump -p "$$lib" | grep -q 'NEEDED *libgcc_s'; then shlibs="$$shlibs, libgcc-s1"; fi; \
	fi; \
	depends="prosody (>= 0.12)$${shlibs:+, $$shlibs}"; \
	maintainer=$$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$$pkg/changelog" | head -n 1); \
	size=$$(du -sk --exclude=DEBIAN "$$root" | cut -f 1); \
	sed -e 's/@VERSION@/$(VERSION)-$(DEB_REVISION)/' -e 's/@ARCH@/$(DEB_ARCH)/' \
		-e "s/@INSTALLED_SIZE@/$$size/" -e "s/@DEPENDS@/$$depends/" -e "s|@MAINTAINER@|$$maintainer|" \
		"$$pkg/control.in" > "$$root/DEBIAN/control"; \
	(cd "$$root" && find usr -type f | LC_ALL=C sort | xargs md5sum) > "$$root/DEBIAN/md5sums"; \
	chmod 0644 "$$root/DEBIAN/control" "$$root/DEBIAN/md5sums"; \
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) \
		dpkg-deb --root-owner-group -Zxz --build "$$root" '$(DEB_FILE).tmp' >/dev/null; \
	mv -f '$(DEB_FILE).tmp' '$(DEB_FILE)'; \
	dpkg-deb --field '$(DEB_FILE)' Package Version Architecture Depends Installed-Size; \
	dpkg-deb --contents '$(DEB_FILE)'; \
	printf '%10s  %s\n' "$$(stat -c %s "$$mod/client_proxy.so")" "client_proxy.so in the package" "$$(stat -c %s '$(DEB_FILE)')" '$(DEB_FILE)'

clean:
	$(CARGO) clean
	rm -rf '$(DIST_DIR)'
