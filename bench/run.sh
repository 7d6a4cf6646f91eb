#!/usr/bin/env bash
# The benchmark in one command (not part of the test run): installs what is
# missing (Debian 12, root or sudo), builds release binaries and the C
# responder, then runs bench/run.py, which writes bench/results.md.
# Arguments go to run.py, e.g. `bash bench/run.sh --duration 5 --only pipe`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pair in pdns_server:pdns-server dig:dnsutils dnsperf:dnsperf dnsdist:dnsdist valgrind:valgrind gcc:gcc /usr/bin/time:time; do
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
exec python3 bench/run.py "$@"
