#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install PowerDNS if missing,
# build pdns-ha, seed a database from sql/example.sql, start pdns_server on
# 127.0.0.1 with pdns-ha as its pipe backend, and dig the SIP SRV record; then
# show it live: latency readings for two networks give each its own first
# server (dig +subnet), and a drain takes a server out of the answers.
# pdns is left running; the last lines say how to stop it.
#
# Everything lives in a directory only this user can write: a fresh one
# from mktemp -d, or PDNS_HA_DEMO_DIR if it is a real directory (not a
# symbolic link) owned by this user and writable by no one else, or does
# not exist yet. In a directory that someone else can write, a planted
# symbolic link would have root overwrite any file, a planted pid file
# would have it kill any process, and pdns_server would run a binary that
# user swapped in (issue 19). PDNS_HA_DEMO_BIN uses a pdns-ha binary built
# already instead of `cargo build --release`.
set -euo pipefail
umask 077

repo=$(cd "$(dirname "$0")/.." && pwd)
port=${PDNS_HA_DEMO_PORT:-5300}
algorithm=${PDNS_HA_ALGORITHM:-least-latency}

refuse() { echo "demo.sh: $*" >&2; exit 1; }

if [ -n "${PDNS_HA_DEMO_DIR:-}" ]; then
  demo=$PDNS_HA_DEMO_DIR
  case $demo in /*) ;; *) refuse "PDNS_HA_DEMO_DIR must be an absolute path, got $demo";; esac
  # mkdir creates it only if nothing is there; it never follows a link.
  mkdir -m 0700 "$demo" 2>/dev/null || true
  [ -L "$demo" ] && refuse "$demo is a symbolic link; give a directory of your own"
  [ -d "$demo" ] || refuse "$demo is not a directory"
  [ "$(stat -c %u "$demo")" = "$(id -u)" ] ||
    refuse "$demo belongs to uid $(stat -c %u "$demo"), not to you ($(id -u)); give a directory of your own"
  case $(stat -c %A "$demo") in
    d????w????|d???????w?) refuse "$demo is writable by group or others (mode $(stat -c %a "$demo")); chmod 700 it";;
  esac
else
  demo=$(mktemp -d "${TMPDIR:-/tmp}/pdns-ha-demo.XXXXXXXX")
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pdns_server >/dev/null || ! command -v dig >/dev/null ||
   ! ls /usr/lib/*/pdns/libpipebackend.so >/dev/null 2>&1; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    pdns-server pdns-backend-pipe dnsutils
fi

cd "$repo"
bin=${PDNS_HA_DEMO_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=target/release/pdns-ha
fi

# A demo run earlier in this same directory: stop its pdns_server, but only
# if the pid file names one (a pid alone could be any process by now).
if [ -f "$demo/pdns.pid" ] && [ ! -L "$demo/pdns.pid" ]; then
  old=$(head -c 20 "$demo/pdns.pid" | tr -cd 0-9)
  if [ -n "$old" ] && [ "$(cat "/proc/$old/comm" 2>/dev/null)" = pdns_server ]; then
    kill "$old"
    for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  fi
fi
# What this script writes is removed first, so that nothing it did not
# make (a link, a FIFO) is ever opened: the directory is ours alone, so
# nobody can plant one again in between.
rm -rf "$demo/pdns-ha" "$demo/ha.db" "$demo/ha.db-wal" "$demo/ha.db-shm" \
  "$demo/pdns.conf" "$demo/pdns.log" "$demo/pdns.pid" "$demo/run"
# pdns runs the binary by absolute path without a shell, so it gets its own copy.
install -m 0755 "$bin" "$demo/pdns-ha"
"$demo/pdns-ha" init --db "$demo/ha.db" sql/example.sql

mkdir -m 0700 "$demo/run"
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

# Live: what a client of each network gets first, by priority.
first() {
  dig @127.0.0.1 -p "$port" +short +subnet="$1" _sip._udp.example.com SRV |
    sort -n | awk 'NR == 1 { p = $1 } $1 == p { printf "%s ", $4 }'
}
# Polls (the pipe sees a change within a second), 5 s at most.
until_first() {
  for _ in $(seq 50); do
    got=$(first "$1")
    case " $got" in *" $2"*) echo "  $3 $1: $got"; return 0;; esac
    sleep 0.1
  done
  echo "  $3 $1: $got (expected $2 first)"; return 1
}
if [ "$algorithm" = least-latency ]; then
  echo "== live: latency from two networks (site-b 198.51.100.0/24, site-c 203.0.113.0/24)"
  for reading in "198.51.100.0/24 sip7 4" "198.51.100.0/24 sip8 61" \
                 "203.0.113.0/24 sip8 3" "203.0.113.0/24 sip7 58"; do
    set -- $reading
    "$demo/pdns-ha" metric latency --db "$demo/ha.db" --network "$1" \
      --target "$2.example.com" --ms "$3"
    echo "  pdns-ha metric latency --network $1 --target $2.example.com --ms $3"
  done
  until_first 198.51.100.7/32 sip7.example.com "first for site-b"
  until_first 203.0.113.9/32 sip8.example.com "first for site-c"
  echo "== live: sip7 drained"
  "$demo/pdns-ha" drain --db "$demo/ha.db" --target sip7.example.com --reason "demo"
  until_first 198.51.100.7/32 sip8.example.com "first for site-b"
  "$demo/pdns-ha" explain --db "$demo/ha.db" --networks _sip._udp.example.com SRV
fi

cat <<MSG

pdns_server is running on 127.0.0.1:$port with pdns-ha ($algorithm), pid $(cat "$demo/pdns.pid").
  log:   $demo/pdns.log
  try:   dig @127.0.0.1 -p $port sip1.example.com A
  stop:  kill \$(cat $demo/pdns.pid)
MSG
