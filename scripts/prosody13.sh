#!/usr/bin/env bash
# Prosody 13 from Debian bookworm-backports, unpacked beside the system's Prosody 0.12,
# so that the end-to-end tests can run against both.
#
#   scripts/prosody13.sh DIR            prepare DIR (e.g. target/prosody13); the last line
#                                       of stdout is the bin directory to put first on PATH:
#                                         bin=$(scripts/prosody13.sh target/prosody13 | tail -n1)
#                                         PATH="$bin:$PATH" cargo test --release --test '*'
#   scripts/prosody13.sh --version DIR  print the Prosody 13 prepared in DIR, e.g.
#                                         prosody 13.0.1 (Debian package 13.0.1-1~bpo12+1)
#
# What "prepare" does:
#   1. Downloads prosody/bookworm-backports with a private apt configuration: its own
#      sources list (only bookworm-backports), its own package lists and cache in a temp
#      dir. The system's sources, lists and cache are not touched; the system's apt.conf.d
#      (proxies) and keyrings are used.
#   2. Checks the package's Depends against the system with `apt-get satisfy -s` (normal
#      system sources, i.e. bookworm) and installs what is missing, printing what it
#      installed. Fails if something cannot be satisfied. Only this step needs root, and
#      only when something is missing: otherwise the script runs as any user.
#   3. Unpacks the .deb with `dpkg -x` into DIR/root (nothing is installed as a package: the
#      system's prosody 0.12 stays what `prosody` runs by default), points CFG_SOURCEDIR and
#      CFG_PLUGINDIR of its scripts into DIR/root/usr/lib/prosody, and writes the wrappers
#      DIR/bin/prosody and DIR/bin/prosodyctl (`exec lua5.4 DIR/root/usr/bin/... "$@"`).
#      The .deb is kept as DIR/prosody_<version>_<arch>.deb.
# Idempotent: if DIR already holds a Prosody 13 prepared by this script for this path, it is
# reused (the Depends are checked again if any package changed since). Delete DIR to fetch the newest backport.
# Everything but the bin directory is logged on stderr. The tree is built beside DIR and
# moved into place at the end, so an interrupted run leaves no half-prepared DIR.
#
# Never run `prosody --version` to find the version: Prosody ignores the flag and starts.

set -euo pipefail

SUITE=bookworm-backports
MIRROR=${PROSODY13_MIRROR:-http://deb.debian.org/debian}
STAMP=.prosody13-prepared
# Touched when the Depends were found satisfied; rechecked only if dpkg's status changed since.
DEPS_OK=.prosody13-depends-ok
DPKG_STATUS=/var/lib/dpkg/status

log() { printf 'prosody13: %s\n' "$*" >&2; }
die() { printf 'prosody13: error: %s\n' "$*" >&2; exit 1; }

usage() {
	sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2
	exit "${1:-2}"
}

need_cmd() {
	command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# Absolute path of $1 (which need not exist yet; its parent is created).
abs_path() {
	local parent base
	parent=$(dirname -- "$1")
	base=$(basename -- "$1")
	mkdir -p -- "$parent"
	parent=$(cd -- "$parent" && pwd -P)
	case "$base" in . | .. | /) die "bad DIR: $1" ;; esac
	printf '%s/%s\n' "${parent%/}" "$base"
}

# True if $1 holds a complete tree prepared by this script for exactly that path.
is_prepared() {
	local dir=$1
	[ -f "$dir/$STAMP" ] &&
		[ "$(sed -n 's/^dir=//p' "$dir/$STAMP")" = "$dir" ] &&
		[ -x "$dir/bin/prosody" ] && [ -x "$dir/bin/prosodyctl" ] &&
		[ -f "$dir/root/usr/bin/prosody" ] && [ -f "$dir/root/usr/bin/prosodyctl" ] &&
		[ -f "$dir/root/usr/lib/prosody/prosody.version" ] &&
		[ -f "$dir/$(sed -n 's/^deb=//p' "$dir/$STAMP")" ]
}

saved_deb() {
	printf '%s/%s\n' "$1" "$(sed -n 's/^deb=//p' "$1/$STAMP")"
}

print_version() {
	local dir=$1 deb
	is_prepared "$dir" || die "$dir does not hold a Prosody 13 prepared by $0 (run: $0 $dir)"
	deb=$(saved_deb "$dir")
	printf 'prosody %s (Debian package %s)\n' \
		"$(tr -d '[:space:]' <"$dir/root/usr/lib/prosody/prosody.version")" \
		"$(dpkg-deb -f "$deb" Version)"
}

# Makes sure the system satisfies the Depends of the .deb $1, installing what is missing
# from the system's normal apt sources (bookworm). Prints what it installed.
ensure_depends() {
	local deb=$1 depends sim need
	depends=$(dpkg-deb -f "$deb" Depends)
	[ -n "$depends" ] || return 0
	if ! sim=$(LC_ALL=C apt-get -q satisfy -s "$depends" 2>&1); then
		# A fresh machine may have no (or stale) system package lists: refresh them once.
		if [ "$(id -u)" = 0 ]; then
			log "Depends not satisfiable from the current package lists; running apt-get update"
			apt-get -q update >&2 || die "apt-get update failed"
			sim=$(LC_ALL=C apt-get -q satisfy -s "$depends" 2>&1) || {
				printf '%s\n' "$sim" >&2
				die "cannot satisfy the Depends of $(basename "$deb") from this system's apt sources: $depends"
			}
		else
			printf '%s\n' "$sim" >&2
			die "cannot satisfy the Depends of $(basename "$deb") (not root, so apt-get update was not tried): $depends"
		fi
	fi
	# "Inst <package> [<old version>] (<new version> <suite> [<arch>])": new or upgraded.
	need=$(printf '%s\n' "$sim" | sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\{0,1\}(\([^ ]*\).*/\1 \3/p')
	if [ -z "$need" ]; then
		log "Depends already satisfied: $depends"
		return 0
	fi
	if [ "$(id -u)" != 0 ]; then
		die "Prosody 13 needs packages this system lacks; run as root, or install them: $(printf '%s\n' "$need" | cut -d' ' -f1 | tr '\n' ' ')"
	fi
	log "installing missing dependencies: $(printf '%s\n' "$need" | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
	DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends satisfy "$depends" >&2 ||
		die "apt-get satisfy failed for: $depends"
	printf '%s\n' "$need" | while read -r pkg ver; do
		log "installed dependency: $pkg $ver"
	done
}

# Downloads the newest prosody from $SUITE into the directory $1 with a private apt
# configuration (own sources list, lists and cache in the temp dir $2).
download_deb() {
	local dest=$1 aptdir=$2 keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=""
	local -a apt_opts
	[ -f "$keyring" ] && signed=" [signed-by=$keyring]"
	mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/download"
	printf 'deb%s %s %s main\n' "$signed" "$MIRROR" "$SUITE" >"$aptdir/sources.list"
	# apt downloads as the unprivileged user _apt when run as root: let it in.
	chmod 755 "$aptdir"
	if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
		chown _apt "$aptdir/download"
	fi
	apt_opts=(
		-o "Dir::Etc::sourcelist=$aptdir/sources.list"
		-o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$aptdir/lists"
		-o "Dir::Cache=$aptdir/cache"
		-o "Acquire::Languages=none"
	)
	log "apt-get update (private sources list: $(cat "$aptdir/sources.list"))"
	apt-get -q "${apt_opts[@]}" update >&2 || die "apt-get update of $SUITE failed (network to ${MIRROR}?)"
	log "apt-get download prosody/$SUITE"
	(cd "$aptdir/download" && apt-get -q "${apt_opts[@]}" download "prosody/$SUITE" >&2) ||
		die "apt-get download prosody/$SUITE failed"
	local -a debs=("$aptdir"/download/prosody_*.deb)
	if [ "${#debs[@]}" != 1 ] || [ ! -f "${debs[0]}" ]; then
		die "apt-get download did not leave exactly one prosody_*.deb"
	fi
	mv "${debs[0]}" "$dest/"
}

prepare() {
	local dir=$1 parent stage aptdir deb name version arch f
	case "$dir" in
	*[!A-Za-z0-9._/+@:=,-]*) die "DIR must be a plain path (letters, digits, ._/+@:=,-): $dir" ;;
	esac

	if is_prepared "$dir"; then
		log "reusing $dir ($(print_version "$dir"))"
		if [ -f "$dir/$DEPS_OK" ] && [ "$dir/$DEPS_OK" -nt "$DPKG_STATUS" ]; then
			log "Depends were satisfied and no package changed since"
		else
			ensure_depends "$(saved_deb "$dir")"
			touch "$dir/$DEPS_OK"
		fi
		printf '%s/bin\n' "$dir"
		return 0
	fi
	if [ -e "$dir" ] && { [ ! -d "$dir" ] || { [ ! -f "$dir/$STAMP" ] && [ -n "$(ls -A "$dir")" ]; }; }; then
		die "$dir exists and was not prepared by $0: remove it or choose another DIR"
	fi

	need_cmd apt-get "this script needs Debian's apt"
	need_cmd dpkg-deb "this script needs Debian's dpkg"
	parent=$(dirname "$dir")
	# Cleaned up on exit; staged beside DIR so that the final move is a rename.
	stage=$(mktemp -d "$parent/.prosody13.XXXXXX")
	aptdir=$(mktemp -d "${TMPDIR:-/tmp}/prosody13-apt.XXXXXX")
	CLEANUP=("$stage" "$aptdir")

	local t0=$SECONDS
	download_deb "$stage" "$aptdir"
	deb=$(echo "$stage"/prosody_*.deb)
	name=$(basename "$deb")
	[ "$(dpkg-deb -f "$deb" Package)" = prosody ] || die "$name is not the prosody package"
	version=$(dpkg-deb -f "$deb" Version)
	arch=$(dpkg-deb -f "$deb" Architecture)
	dpkg --compare-versions "$version" ge 13~ || die "$SUITE has prosody $version, not 13 or newer"
	log "downloaded $name ($version, $arch) in $((SECONDS - t0))s"

	ensure_depends "$deb"
	touch "$stage/$DEPS_OK"
	need_cmd lua5.4 "Prosody 13 runs on Lua 5.4 (package lua5.4)"

	dpkg -x "$deb" "$stage/root"
	# The scripts look for Prosody's own code in CFG_SOURCEDIR and its modules in
	# CFG_PLUGINDIR; point both into the unpacked tree (at its final place, DIR).
	for f in prosody prosodyctl prosody-migrator; do
		[ -f "$stage/root/usr/bin/$f" ] || { [ "$f" = prosody-migrator ] && continue; die "$name has no usr/bin/$f"; }
		sed -i \
			-e "s|^CFG_SOURCEDIR=.*|CFG_SOURCEDIR='$dir/root/usr/lib/prosody';|" \
			-e "s|^CFG_PLUGINDIR=.*|CFG_PLUGINDIR='$dir/root/usr/lib/prosody/modules/';|" \
			"$stage/root/usr/bin/$f"
		if ! grep -qx "CFG_SOURCEDIR='$dir/root/usr/lib/prosody';" "$stage/root/usr/bin/$f" ||
			! grep -qx "CFG_PLUGINDIR='$dir/root/usr/lib/prosody/modules/';" "$stage/root/usr/bin/$f"; then
			die "could not set CFG_SOURCEDIR/CFG_PLUGINDIR in usr/bin/$f (package layout changed?)"
		fi
	done
	[ -f "$stage/root/usr/lib/prosody/prosody.version" ] || die "$name has no usr/lib/prosody/prosody.version"

	mkdir "$stage/bin"
	for f in prosody prosodyctl; do
		cat >"$stage/bin/$f" <<-EOF
			#!/bin/sh
			# Prosody $version (bookworm-backports), unpacked by scripts/prosody13.sh.
			exec lua5.4 '$dir/root/usr/bin/$f' "\$@"
		EOF
		chmod 755 "$stage/bin/$f"
	done
	printf 'version=%s\ndeb=%s\ndir=%s\n' "$version" "$name" "$dir" >"$stage/$STAMP"

	rm -rf -- "$dir"
	mv -- "$stage" "$dir"
	chmod 755 "$dir"
	log "prepared $dir: $(print_version "$dir") in $((SECONDS - t0))s"
	printf '%s/bin\n' "$dir"
}

CLEANUP=()
cleanup() {
	local d
	for d in "${CLEANUP[@]+"${CLEANUP[@]}"}"; do
		[ -e "$d" ] && rm -rf -- "$d"
	done
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case "${1:-}" in
-h | --help) usage 0 ;;
--version)
	[ $# = 2 ] || usage
	need_cmd dpkg-deb "this script needs Debian's dpkg"
	dir=$(cd -- "$2" 2>/dev/null && pwd -P) || die "$2 does not exist (run: $0 $2)"
	print_version "$dir"
	;;
-*) usage ;;
*)
	[ $# = 1 ] || usage
	prepare "$(abs_path "$1")"
	;;
esac
