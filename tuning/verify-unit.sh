#!/bin/sh
# Check tuning/orderd.service with `systemd-analyze verify`.
#
# verify insists that ExecStart's binary exists, and the unit names the
# installed path /usr/local/bin/orderd. So this verifies a copy whose
# ExecStart points at a built binary (default: the release build, or the
# path given as $1), in a temporary directory removed on exit. Any output
# from systemd-analyze counts as a failure.
#
# Usage: tuning/verify-unit.sh [path/to/orderd]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-${CARGO_TARGET_DIR:-$here/../target}/release/orderd}
if [ ! -x "$binary" ]; then
    echo "verify-unit: no executable at $binary: build it (cargo build --release) or pass its path" >&2
    exit 2
fi
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
command -v systemd-analyze >/dev/null || {
    echo "verify-unit: systemd-analyze not found: apt-get install systemd" >&2
    exit 2
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/orderd|$binary|" "$here/orderd.service" >"$tmp/orderd.service"

out=$(systemd-analyze verify "$tmp/orderd.service" 2>&1) || {
    printf '%s\n' "$out"
    echo "verify-unit: FAILED (systemd-analyze exit code non-zero)"
    exit 1
}
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "verify-unit: FAILED (systemd-analyze printed warnings)"
    exit 1
fi
echo "verify-unit: OK ($(systemd-analyze --version | head -n 1); ExecStart=$binary)"
