#!/usr/bin/env bash
# Long fuzz runs (not in CI, which runs each target for 1 s as part of
# `cargo test`): every target in src/fuzz.rs for SECS seconds (default 300),
# release-optimised. A failure prints the input in hex.
set -euo pipefail
cd "$(dirname "$0")/.."
export PDNS_HA_FUZZ_SECS=${1:-300}
exec cargo test --release --locked --bin pdns-ha fuzz_ -- --nocapture --test-threads=1
