#!/usr/bin/env bash
# The full soak (not part of the test run): the suite's long checks at full length, then
# a million queries per algorithm through pdns while readings are written. Arguments go to soak.py
# (`--queries N`). Installs and builds like bench/run.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PDNS_HA_BUILD_ONLY=1 bash "$repo/bench/run.sh"
# The long-running checks of the test suite, at full length: three monitors voting for a
# minute of digs.
(cd "$repo" && PDNS_HA_SOAK=1 cargo test --locked --test pipe-abi three_monitors_one_cut_off)
exec python3 "$repo/bench/soak.py" "$@"
