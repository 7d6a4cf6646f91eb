#!/usr/bin/env bash
# The full soak (not part of the test run): a million queries per algorithm
# through pdns while readings are written. Arguments go to soak.py
# (`--queries N`). Installs and builds like bench/run.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PDNS_HA_BUILD_ONLY=1 bash "$repo/bench/run.sh"
exec python3 "$repo/bench/soak.py" "$@"
