#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a fixed budget each and fails
# on any crash. Works with the stable toolchain: cargo-fuzz needs nightly
# flags (sanitizers), which RUSTC_BOOTSTRAP=1 unlocks on stable. Installs
# cargo-fuzz when missing. A crash leaves its input in fuzz/artifacts/<target>/;
# turn it into a regression test (docs/FUZZING.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=${1:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
step "cargo fuzz build"
cargo fuzz build -O
work=$(mktemp -d -t iocluster-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
  step "fuzzing $target for ${seconds}s"
  mkdir -p "$work/$target"
  # New inputs go to the scratch corpus; the committed seeds stay as they are.
  if ! cargo fuzz run -O "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$work/$target.log" 2>&1; then
    tail -n 60 "$work/$target.log"
    echo "fuzz target $target failed: its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/$target.log" || true
done
