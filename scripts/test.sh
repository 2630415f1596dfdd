#!/usr/bin/env bash
# Sets up and runs every test, on a fresh Debian machine with the Rust
# toolchain: installs redis-server, Node.js, Chromium (for the headless
# browser tests) and php-cli (for an API example) when missing, the npm packages of tests/js and frontend/,
# python-socketio in a venv (tests/py/.venv, for the python client tests),
# builds the binaries, then runs `cargo test --workspace`.
# Tests start their own Redis servers on free ports; the system Redis, if any,
# is not touched. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis
ensure_node
ensure_chromium
ensure_php
npm_install tests/js
npm_install frontend
ensure_python

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace "$@"
