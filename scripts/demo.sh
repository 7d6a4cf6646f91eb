#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install PowerDNS if missing,
# build pdns-ha, seed a database from sql/example.sql, start pdns_server on
# 127.0.0.1 with pdns-ha as its pipe backend, and dig the SIP SRV record.
# pdns is left running; the last lines say how to stop it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
demo=${PDNS_HA_DEMO_DIR:-/tmp/pdns-ha-demo}
port=${PDNS_HA_DEMO_PORT:-5300}
algorithm=${PDNS_HA_ALGORITHM:-static}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pdns_server >/dev/null || ! command -v dig >/dev/null ||
   ! ls /usr/lib/*/pdns/libpipebackend.so >/dev/null 2>&1; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    pdns-server pdns-backend-pipe dnsutils
fi

cd "$repo"
cargo build --release --locked

mkdir -p "$demo"
if [ -f "$demo/pdns.pid" ] && kill -0 "$(cat "$demo/pdns.pid")" 2>/dev/null; then
  kill "$(cat "$demo/pdns.pid")"
  sleep 1
fi
# pdns runs the binary by absolute path without a shell, so it gets its own copy.
install -m 0755 target/release/pdns-ha "$demo/pdns-ha"
rm -f "$demo/ha.db" "$demo/ha.db-wal" "$demo/ha.db-shm"
"$demo/pdns-ha" init --db "$demo/ha.db" sql/example.sql

mkdir -p "$demo/run"
cat > "$demo/pdns.conf" <<CONF
launch=pipe
pipe-command=$demo/pdns-ha --db $demo/ha.db --algorithm $algorithm
pipe-abi-version=5
pipe-timeout=2000
# The pipe backend cannot list zones; pdns 4.5+ refuses to start without this.
zone-cache-refresh-interval=0
# Answers may differ per client; see docs/deployment.md.
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
edns-subnet-processing=yes
local-address=127.0.0.1
local-port=$port
daemon=no
guardian=no
disable-syslog=yes
socket-dir=$demo/run
security-poll-suffix=
CONF

nohup pdns_server --config-dir="$demo" >"$demo/pdns.log" 2>&1 &
echo $! > "$demo/pdns.pid"
for _ in $(seq 50); do
  if dig @127.0.0.1 -p "$port" +time=1 +tries=1 example.com SOA >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$demo/pdns.pid")" 2>/dev/null; then cat "$demo/pdns.log"; exit 1; fi
  sleep 0.2
done

dig @127.0.0.1 -p "$port" _sip._udp.example.com SRV

cat <<MSG

pdns_server is running on 127.0.0.1:$port with pdns-ha ($algorithm), pid $(cat "$demo/pdns.pid").
  log:   $demo/pdns.log
  try:   dig @127.0.0.1 -p $port sip1.example.com A
  stop:  kill \$(cat $demo/pdns.pid)
MSG
