#!/usr/bin/env bash
# Walks docs/deployment.md's "Your own network, step by step" against the Debian package,
# as root on Debian 12: every `sh` block of that section runs in order, in one shell, and
# every output the guide shows (a ```text block after `<!-- output -->`) must be what its
# block printed; `<!-- file: NAME -->` gives a file the steps read (the operator's zone).
# The walk happens in a network namespace of its own: 192.0.2.11 and 192.0.2.12 answer SIP
# OPTIONS (sipp), 192.0.2.13 does not, and pdns_server has port 53 there to itself.
# Without systemd, `systemctl` starts what the unit would: the package's unit's ExecStart,
# as its user and with its environment file, and pdns_server as Debian's unit does.
# `BLESS=1` writes what the blocks printed into the guide instead of comparing (refused
# under CI). Called by .ci/run after scripts/test-deb.sh; locally a missing prerequisite
# skips with a message (fails under CI).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
guide=$repo/docs/deployment.md
section='## Your own network, step by step'
state=/var/lib/pdns-ha
snippet=/etc/powerdns/pdns.d/pdns-ha.conf
# Marks a state directory this walk created, so a rerun may remove an interrupted one's.
marker=$state/.pdns-ha-test-guide
ns=pdns-ha-guide

me=test-guide
. "$repo/scripts/test-lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (it installs a package and makes a network namespace)"
for tool in apt-get dpkg-deb pdns_server pdnsutil dig setpriv sipp memcached curl ip; do
  command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null ||
    skip "$tool not found (apt-get install pdns-server pdns-backend-pipe pdns-backend-sqlite3 dnsutils sip-tester memcached curl iproute2)"
done
if [ -n "${BLESS:-}" ] && ci; then fail "BLESS is refused under CI: the guide is checked there"; fi

# Leftovers of an interrupted earlier walk (never someone else's data or user).
if dpkg-query -W -f='${Status}' pdns-ha 2>/dev/null | grep -q 'installed\|config-files'; then
  [ -e "$marker" ] || fail "pdns-ha is installed here and not by this walk; purge it first"
  apt-get purge -y -q pdns-ha >/dev/null
fi
if [ -e "$state" ]; then
  [ -e "$marker" ] || fail "$state exists and was not made by this walk; move it away first"
  rm -rf "$state"
fi
if getent passwd pdns-ha >/dev/null; then
  fail "a pdns-ha user exists and this walk did not make it (no $marker); remove it first"
fi
[ -e "$snippet" ] && fail "$snippet exists; move it away first"
ip netns del "$ns" 2>/dev/null || true

# The guide installs ./target/debian/pdns-ha_*.deb: this tree's, built now (a no-op
# build after scripts/test-deb.sh).
step "building the package"
rm -f "$repo"/target/debian/pdns-ha_*.deb
bash "$repo/scripts/build-deb.sh" >/dev/null

work=$(mktemp -d /tmp/pdns-ha-test-guide.XXXXXX)
chmod 755 "$work"
marking=
cleanup() {
  if [ -n "$marking" ]; then kill "$marking" 2>/dev/null || true; fi
  if [ -f "$work/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$work/pids"
  fi
  sleep 0.3
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -f "$snippet" /etc/pdns-ha/memcached.key
  rm -rf /etc/pdns-ha/pdnsutil
  if dpkg-query -W -f='${Status}' pdns-ha 2>/dev/null | grep -q 'installed\|config-files'; then
    apt-get purge -y -q pdns-ha >/dev/null 2>&1 || true
  fi
  if [ -e "$marker" ]; then
    rm -rf "$state"
    getent passwd pdns-ha >/dev/null && userdel pdns-ha
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "reading the guide's section from $guide"
# One file per piece: block-N.sh, expect-N.txt (the output shown after block N), and the
# files the section gives by name.
awk -v section="$section" -v dir="$work" '
  $0 == section { inside = 1; next }
  inside && /^## / { exit }
  !inside { next }
  fence == "" && /^<!-- file: .* -->$/ { sub(/^<!-- file: /, ""); sub(/ -->$/, ""); next_file = $0; next }
  fence == "" && /^<!-- output -->$/ { next_output = 1; next }
  fence == "" && /^```/ {
    fence = substr($0, 4)
    if (next_file != "") { out = dir "/" next_file; next_file = "" }
    else if (next_output) { out = dir "/expect-" n ".txt"; next_output = 0 }
    else if (fence == "sh") { n++; out = dir "/block-" n ".sh" }
    else { out = "" }
    if (out != "") printf "" > out
    next
  }
  fence != "" && /^```$/ { fence = ""; if (out != "") close(out); out = ""; next }
  fence != "" && out != "" { print > out }
  END { print n > (dir "/count") }
' "$guide"
blocks=$(cat "$work/count")
[ "$blocks" -ge 10 ] || fail "found $blocks sh blocks in the guide's section"
[ -f "$work/example.net.zone" ] || fail "the guide gives no example.net.zone"

step "a network namespace with SIP servers at 192.0.2.11 and 192.0.2.12"
ip netns add "$ns"
ip -n "$ns" link set lo up
for a in 192.0.2.11 192.0.2.12 192.0.2.13; do ip -n "$ns" addr add "$a/32" dev lo; done
cat > "$work/options-uas.xml" <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="a SIP server's answer to OPTIONS">
  <recv request="OPTIONS" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Allow: INVITE, ACK, BYE, CANCEL, OPTIONS
      Content-Length: 0

    ]]>
  </send>
</scenario>
EOF
for a in 192.0.2.11 192.0.2.12; do
  ip netns exec "$ns" sipp -sf "$work/options-uas.xml" -i "$a" -p 5060 -nostdin \
    -timeout 600s > "$work/sipp-$a.log" 2>&1 &
  echo $! >> "$work/pids"
done

# What `systemctl` does in the walk: the unit's own command line, as its user. A restart
# returns once the service answers, as systemd's does for these units.
cat > "$work/walk.sh" <<EOF
set -euo pipefail
work=$work
me=walk
. "$repo/scripts/test-lib.sh"
EOF
cat >> "$work/walk.sh" <<'EOF'
started() { echo "$1" >> "$work/pids"; }
stop_started() {
  local f=$work/pid-$1
  if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; sleep 0.5; fi
}
start_unit() {
  stop_started "$1"
  run_unit "/lib/systemd/system/$1.service" > "$work/$1.log" 2>&1 &
  echo $! > "$work/pid-$1"
  started $!
}
start_pdns() {
  stop_started pdns
  install -d -o pdns -g pdns "$work/pdns-run"
  /usr/sbin/pdns_server --config-dir=/etc/powerdns --setuid=pdns --setgid=pdns --daemon=no \
    --guardian=no --disable-syslog --write-pid=no --socket-dir="$work/pdns-run" \
    > "$work/pdns.log" 2>&1 &
  echo $! > "$work/pid-pdns"
  started $!
  for _ in $(seq 100); do
    dig @127.0.0.1 +time=1 +tries=1 example.net SOA 2>/dev/null | grep -q 'status: ' && return 0
    sleep 0.1
  done
  cat "$work/pdns.log" >&2
  return 1
}
start_memcached() {
  stop_started memcached
  memcached -u memcache -l 127.0.0.1 -p 11211 -m 64 > "$work/memcached.log" 2>&1 &
  echo $! > "$work/pid-memcached"
  started $!
  sleep 0.3
}
systemctl() {
  local verb=$1
  shift
  [ "$verb" = enable ] && [ "${1:-}" = --now ] && shift && verb=restart
  [ "$verb" = restart ] || [ "$verb" = start ] || { echo "systemctl (walk): $verb?" >&2; return 1; }
  local unit
  for unit in "$@"; do
    case "${unit%.service}" in
      pdns) start_pdns ;;
      memcached) start_memcached ;;
      pdns-ha-monitor) start_unit pdns-ha-monitor ;;
      *) echo "systemctl (walk): $unit is not a unit the guide starts" >&2; return 1 ;;
    esac
  done
}
cd "$work"
EOF
ln -s "$repo/target" "$work/target"
for i in $(seq "$blocks"); do
  {
    echo "exec > \"\$work/out-$i.txt\" 2>&1"
    echo "echo $i > \"\$work/at\""
    cat "$work/block-$i.sh"
  } >> "$work/walk.sh"
done
echo 'echo done > "$work/at"' >> "$work/walk.sh"

step "walking $blocks blocks"
# The state directory is made by the package's postinst in the first block; mark it as
# this walk's as soon as it exists.
( for _ in $(seq 600); do [ -d "$state" ] && { touch "$marker" 2>/dev/null; break; }; sleep 0.2; done ) &
marking=$!
if ! ip netns exec "$ns" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  bash "$work/walk.sh"; then
  at=$(cat "$work/at" 2>/dev/null || echo 0)
  echo "--- block $at:" >&2
  cat "$work/block-$at.sh" >&2 || true
  echo "--- printed:" >&2
  cat "$work/out-$at.txt" >&2 || true
  for log in pdns pdns-ha-monitor memcached; do
    [ -f "$work/$log.log" ] && { echo "--- $log.log (last lines):" >&2; tail -n 15 "$work/$log.log" >&2; }
  done
  fail "block $at of the guide failed"
fi
wait "$marking" 2>/dev/null || true
marking=
[ "$(cat "$work/at")" = done ] || fail "the walk stopped at block $(cat "$work/at")"

step "comparing what each block printed with the output the guide shows"
bad=0
for i in $(seq "$blocks"); do
  [ -f "$work/expect-$i.txt" ] || continue
  if [ -n "${BLESS:-}" ]; then
    continue
  fi
  if ! diff -u "$work/expect-$i.txt" "$work/out-$i.txt" > "$work/diff-$i" 2>&1; then
    echo "--- block $i: the guide shows one output, the package printed another:" >&2
    cat "$work/block-$i.sh" >&2
    cat "$work/diff-$i" >&2
    bad=1
  fi
done
if [ -n "${BLESS:-}" ]; then
  # Each shown output replaced, in order, by what its block printed.
  awk -v section="$section" -v dir="$work" '
    $0 == section { inside = 1 }
    inside && /^## / && $0 != section { inside = 0 }
    inside && fence == "" && /^<!-- output -->$/ { print; pending = 1; next }
    inside && fence == "" && /^```/ {
      fence = substr($0, 4); print
      if (fence == "sh") n++
      if (pending) {
        pending = 0; skipping = 1
        f = dir "/out-" n ".txt"
        while ((getline line < f) > 0) print line
        close(f)
      }
      next
    }
    fence != "" && /^```$/ { fence = ""; skipping = 0; print; next }
    skipping { next }
    { print }
  ' "$guide" > "$work/blessed.md"
  cp "$work/blessed.md" "$guide"
  step "wrote what the blocks printed into $guide"
  exit 0
fi
[ "$bad" = 0 ] || fail "the guide's outputs differ from the package's (BLESS=1 bash scripts/test-guide.sh rewrites them)"
step "every block ran and printed what the guide shows"
