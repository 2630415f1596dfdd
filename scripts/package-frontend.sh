#!/usr/bin/env bash
# Packs the frontend for a server without npm or a Rust toolchain: its binary,
# the pages and the socket.io-client browser bundle, laid out as the frontend
# looks for them when no setting names them (share/iocluster/ beside the
# binary's directory). Run it on a build machine (same CPU architecture and a
# glibc no newer than the server's); on the server:
#
#   sudo tar -xzf iocluster-frontend-VERSION-ARCH.tar.gz -C /usr/local
#
# gives /usr/local/bin/iocluster-frontend, /usr/local/share/iocluster/static/
# and /usr/local/share/iocluster/socket.io.min.js.
#
# Usage: scripts/package-frontend.sh [--debug] [--no-build] [--out DIR]
#   --debug      package the debug build instead of the release build
#   --no-build   do not run cargo build first (the binary must exist)
#   --out DIR    where the archive goes (default target/package)
# The binary is built with IOCLUSTER_GIT_COMMIT set, so its
# iocluster_build_info metric names the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

profile=release build=1 out=target/package
while [ $# -gt 0 ]; do
  case $1 in
    --debug) profile=debug; shift ;;
    --no-build) build=0; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

if [ "$build" = 1 ]; then
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  step "cargo build -p iocluster-frontend ($profile, commit $commit)"
  flags=()
  [ "$profile" = release ] && flags+=(--release)
  IOCLUSTER_GIT_COMMIT=$commit cargo build -p iocluster-frontend "${flags[@]}"
  npm_install frontend
fi

binary=${CARGO_TARGET_DIR:-target}/$profile/iocluster-frontend
bundle=frontend/node_modules/socket.io-client/dist/socket.io.min.js
[ -x "$binary" ] || { echo "$binary is missing: build it, or leave out --no-build" >&2; exit 1; }
[ -f "$bundle" ] || { echo "$bundle is missing: run npm ci in frontend/" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
name=iocluster-frontend-$version-$(uname -m)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -d "$stage/bin" "$stage/share/iocluster"
install -m 755 "$binary" "$stage/bin/iocluster-frontend"
cp -r frontend/static "$stage/share/iocluster/static"
install -m 644 "$bundle" "$stage/share/iocluster/socket.io.min.js"
install -m 644 config/frontend.toml "$stage/share/iocluster/frontend.toml.sample"
mkdir -p "$out"
tar -czf "$out/$name.tar.gz" -C "$stage" bin share
echo "$out/$name.tar.gz"
