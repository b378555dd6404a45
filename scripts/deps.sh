#!/usr/bin/env bash
# Installs what Cairn's build, tests and benchmarks need on a Debian machine,
# skipping what is already there. Run as root (or with sudo available).
#   scripts/deps.sh          packages for `make run` (none beyond Go)
#   scripts/deps.sh test     real NBD clients, fio, nbdkit, FUSE, e2fsprogs
set -euo pipefail

need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }

if [ "${1:-}" = test ] || [ "${1:-}" = bench ]; then
	want nbdinfo libnbd-bin
	want nbdcopy libnbd-bin
	want nbdfuse libnbd-bin
	want nbdsh python3-libnbd
	want fio fio
	want nbdkit nbdkit
	want fusermount3 fuse3
	want nft nftables
	want mkfs.ext4 e2fsprogs
	want e2fsck e2fsprogs
	want losetup mount
	# libnbd's Python module (nbdsh) needs Debian's python3.
	[ -x /usr/bin/python3 ] || need+=(python3)
fi

if [ ${#need[@]} -gt 0 ]; then
	# shellcheck disable=SC2207
	pkgs=($(printf '%s\n' "${need[@]}" | sort -u))
	echo "deps: installing ${pkgs[*]}" >&2
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -q >&2
	$SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "deps: Go 1.26 is required (https://go.dev/dl/); /usr/local/go/bin/go not found" >&2; exit 1; }
go mod download
