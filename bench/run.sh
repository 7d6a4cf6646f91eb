#!/usr/bin/env bash
# The benchmark in one command (not part of the test run): installs what is
# missing (Debian 12, root or sudo), builds release binaries and the C
# responder, then runs bench/run.py, which writes bench/results.md.
# Arguments go to run.py, e.g. `bash bench/run.sh --duration 5 --only pipe`.
# BASELINE_REV=<commit> also builds that commit (its tree exported under
# target/bench) and measures it beside this one (run.py --baseline), e.g.
# `BASELINE_REV=fc55c68 bash bench/run.sh --only large` for the figures of
# the design before large zones.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pair in memcached:memcached pdns_server:pdns-server dig:dnsutils dnsperf:dnsperf dnsdist:dnsdist valgrind:valgrind gcc:gcc /usr/bin/time:time; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
ls /usr/lib/*/pdns/libpipebackend.so >/dev/null 2>&1 || need+=(pdns-backend-pipe)
ls /usr/lib/*/pdns/libgsqlite3backend.so >/dev/null 2>&1 || need+=(pdns-backend-sqlite3)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

cd "$repo"
cargo build --release --locked
mkdir -p target/bench
gcc -O2 -Wall -o target/bench/c-responder bench/c-responder.c
# bench/soak.sh reuses this for the build alone.
[ -n "${PDNS_HA_BUILD_ONLY:-}" ] && exit 0
extra=()
if [ -n "${BASELINE_REV:-}" ]; then
  rev=$(git rev-parse --short "$BASELINE_REV")
  src="$repo/target/bench/baseline-$rev"
  if [ ! -d "$src" ]; then
    mkdir -p "$src"
    git archive "$rev" | tar -x -C "$src"
  fi
  (cd "$src" && CARGO_TARGET_DIR="$repo/target/bench/baseline-target" cargo build --release --locked)
  extra=(--baseline "$repo/target/bench/baseline-target/release/pdns-ha")
fi
exec python3 bench/run.py "${extra[@]}" "$@"
