#!/usr/bin/env bash
# Install test of the Debian package, as root on Debian 12 (made for a container, where no
# systemd runs): builds the .deb; checks that postinst refuses a state directory that is a
# link or someone else's, and a link at the database path; installs it with apt-get and
# checks that nothing pdns serves changed; seeds the database with the shipped example,
# enables pdns-ha by the one documented step (copying the example snippet into pdns.d),
# starts pdns_server as user pdns on a
# free loopback port, checks that a key file made as documented serves the pipe (pdns)
# and the monitor (pdns-ha) while an Event Socket password file stays the monitor's, runs the monitor unit's own ExecStart line as the unit's user, digs
# the live answer, runs the observe unit's ExecStart line for one instance (its source:
# the kernel's TCP round trip of a connection this script holds to pdns's TCP port), then
# purges the package and checks that nothing it created is left but the database.
# Called by .ci/run; locally a missing prerequisite skips with a message (fails under CI).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=/var/lib/pdns-ha
unit=/lib/systemd/system/pdns-ha-monitor.service
observe_unit=/lib/systemd/system/pdns-ha-observe@.service
# The observe instance: pdns_server's TCP listener stands in for this SIP server.
instance=sip6.example.com
observe_env=/etc/default/pdns-ha-observe-$instance
# A copy of the SIP SRV RRset under a non-SIP owner, made below: ranked by row health.
srv=_stun._udp.example.com
# Marks a state directory this test created, so a rerun may remove what an earlier,
# interrupted run left; anything else in /var/lib/pdns-ha is someone's data.
marker=$state/.pdns-ha-test-deb

me=test-deb
. "$repo/scripts/test-lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (it installs a package and creates a system user)"
for tool in apt-get dpkg-deb pdns_server dig setpriv systemd-analyze sqlite3 ss; do
  command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null ||
    skip "$tool not found (apt-get install pdns-server pdns-backend-pipe dnsutils sqlite3 iproute2 systemd)"
done
if [ -d /run/systemd/system ]; then
  # Then postinst starts pdns-ha-monitor.service (unless policy-rc.d forbids it, as .ci/run
  # arranges) and prerm stops it; the checks below hold either way.
  step "note: systemd is running here; the packaged monitor may run beside this test's"
fi

# Leftovers of an interrupted earlier run (never someone else's data or user).
if dpkg-query -W -f='${Status}' pdns-ha 2>/dev/null | grep -q 'installed\|config-files'; then
  [ -e "$marker" ] || fail "pdns-ha is installed here and not by this test; purge it first"
  apt-get purge -y -q pdns-ha >/dev/null
fi
if [ -e "$state" ]; then
  [ -e "$marker" ] || fail "$state exists and was not made by this test; move it away first"
  rm -rf "$state" "$observe_env"
  getent passwd pdns-ha >/dev/null && userdel pdns-ha
fi
if [ -e "$observe_env" ]; then
  fail "$observe_env exists and was not made by this test; move it away first"
fi
if getent passwd pdns-ha >/dev/null; then
  fail "a pdns-ha user exists and this test did not make it (no $marker); remove it first"
fi

step "building the package"
bash "$repo/scripts/build-deb.sh" >/dev/null
deb=$(ls "$repo"/target/debian/pdns-ha_*.deb | head -n1)

# Dependencies first, so that the before/after comparison sees only pdns-ha's own files.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  pdns-server pdns-backend-pipe adduser dnsutils sqlite3 iproute2 >/dev/null

work=$(mktemp -d /tmp/pdns-ha-test-deb.XXXXXX)
pdns_pid=
made_env=
snippet=/etc/powerdns/pdns.d/pdns-ha.conf
made_snippet=
cleanup() {
  [ -n "$pdns_pid" ] && kill "$pdns_pid" 2>/dev/null && wait "$pdns_pid" 2>/dev/null
  [ -n "$made_env" ] && rm -f "$observe_env"
  [ -n "$made_snippet" ] && rm -f "$snippet"
  rm -f /etc/pdns-ha/test-deb-*
  rm -rf "$work"
}
trap cleanup EXIT

# Every path outside scratch, package-manager and log areas.
snapshot() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
    -o -path /var/tmp -o -path /var/cache -o -path /var/log -o -path /var/lib/dpkg \
    -o -path /var/lib/apt -o -path /var/lib/ucf -o -path /root -o -path /home -o -path /work \
    -o -path /var/backups -o -path /var/mail \) -prune -o -print 2>/dev/null | sort
}
snapshot > "$work/before"

[ -e "$snippet" ] && fail "$snippet exists before the install; move it away first"

# Issue 19: postinst runs as root in a directory pdns and pdns-ha write. It must refuse a
# state directory that is a link or belongs to someone else, and a link at the database
# path, rather than follow them. Each refusal names the fix, and dpkg --configure then
# finishes once it is applied.
step "installing $deb over a state directory that is a symbolic link: refused"
install -d -m 0755 "$work/elsewhere"
ln -s "$work/elsewhere" "$state"
if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" \
  > "$work/apt-install.log" 2>&1; then
  fail "postinst accepted $state as a symbolic link"
fi
grep -q "$state is a symbolic link" "$work/apt-install.log" ||
  { cat "$work/apt-install.log"; fail "no message naming the link"; }
[ -z "$(ls -A "$work/elsewhere")" ] || fail "postinst wrote through the link"
rm "$state"

step "configuring over a state directory another user owns: refused"
install -d -o nobody -m 0770 "$state"
touch "$marker"
if dpkg --configure pdns-ha > "$work/configure.log" 2>&1; then
  fail "postinst accepted $state owned by nobody"
fi
grep -q "$state belongs to nobody" "$work/configure.log" ||
  { cat "$work/configure.log"; fail "no message naming the owner"; }

step "configuring with a link at the database path: the link left alone, not followed"
chown pdns-ha:pdns "$state"
ln -s "$work/target.db" "$state/ha.db"
dpkg --configure pdns-ha > "$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; fail "dpkg --configure with a link at the database path"; }
grep -q "$state/ha.db is a symbolic link; left alone" "$work/configure.log" ||
  { cat "$work/configure.log"; fail "no message naming the link at the database path"; }
[ ! -e "$work/target.db" ] || fail "postinst created the link's target"
[ -L "$state/ha.db" ] || fail "postinst replaced the link"
rm "$state/ha.db"
# The package is configured now; what a first install does with a clean path:
dpkg-reconfigure -fnoninteractive pdns-ha > "$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; fail "dpkg-reconfigure after the link went"; }
[ -f "$state/ha.db" ] || fail "no database after configure"
chmod 0770 "$state"

step "checking that installing changed nothing pdns serves"
grep -rl pdns-ha /etc/powerdns && fail "the install put pdns-ha into pdns's configuration"
[ -f /usr/share/doc/pdns-ha/examples/pdns-ha.conf ] ||
  fail "no example snippet in /usr/share/doc/pdns-ha/examples"
for f in prometheus/pdns-ha-alerts.yml grafana/pdns-ha-dashboard.json; do
  [ -f "/usr/share/pdns-ha/$f" ] || fail "no /usr/share/pdns-ha/$f in the package"
done

step "checking what postinst made"
[ "$(id -gn pdns-ha)" = pdns ] || fail "user pdns-ha is not in primary group pdns"
[ "$(stat -c '%U:%G %a' "$state")" = "pdns-ha:pdns 770" ] ||
  fail "$state is $(stat -c '%U:%G %a' "$state"), want pdns-ha:pdns 770"
[ "$(stat -c '%U:%G %a' "$state/ha.db")" = "pdns-ha:pdns 660" ] ||
  fail "$state/ha.db is $(stat -c '%U:%G %a' "$state/ha.db"), want pdns-ha:pdns 660"
[ "$(stat -c '%U:%G %a' /etc/pdns-ha)" = "root:pdns 750" ] ||
  fail "/etc/pdns-ha is $(stat -c '%U:%G %a' /etc/pdns-ha), want root:pdns 750"
MANPATH=/usr/share/man: systemd-analyze verify "$unit" ||
  fail "systemd-analyze verify $unit"
# A template is verified as an instance, under its instance's name.
cp "$observe_unit" "$work/pdns-ha-observe@$instance.service"
MANPATH=/usr/share/man: systemd-analyze verify "$work/pdns-ha-observe@$instance.service" ||
  fail "systemd-analyze verify $observe_unit (as pdns-ha-observe@$instance)"
zcat /usr/share/man/man1/pdns-ha.1.gz | grep -q '^\.TH PDNS-HA 1' || fail "man page"
# Every command --help lists has its page, and answers --help itself (monitor and observe
# through the daemon binary installed beside pdns-ha).
for cmd in $(pdns-ha --help | sed -n '/^Commands:/,/^$/s/^  \([a-z]\+\) .*/\1/p'); do
  [ -e "/usr/share/man/man1/pdns-ha-$cmd.1.gz" ] ||
    fail "no man page pdns-ha-$cmd(1) for the command $cmd that --help lists"
  pdns-ha "$cmd" --help >/dev/null || fail "pdns-ha $cmd --help"
done
[ -e /usr/share/man/man1/pdns-ha-monitor.1.gz ] || fail "no man page pdns-ha-monitor(1)"
# Two binaries: what pdns runs holds none of the daemons' code (probes, HTTP, JSON, TLS,
# netlink), which pdns would otherwise load once per thread.
[ -x /usr/bin/pdns-ha-daemon ] || fail "no /usr/bin/pdns-ha-daemon beside pdns-ha"
for code in 'OPTIONS sip:' ul.dump dlg.stats_active 'HTTP/1.1' rustls serde_json sock_diag; do
  ! grep -q -a -F "$code" /usr/bin/pdns-ha || fail "the pipe binary links daemon code ($code)"
  grep -q -a -F "$code" /usr/bin/pdns-ha-daemon || fail "the daemon binary lacks $code"
done

step "seeding the database with the shipped example as pdns-ha"
runuser -u pdns-ha -- pdns-ha init --db "$state/ha.db" /usr/share/pdns-ha/example.sql >/dev/null
# The example names /etc/pdns-ha/esl-password for its FreeSWITCH boxes; made as the
# docs say, check finds nothing to flag.
(umask 077 && printf 'ClueCon\n' > /etc/pdns-ha/test-deb-esl)
chown pdns-ha /etc/pdns-ha/test-deb-esl
runuser -u pdns-ha -- sqlite3 "$state/ha.db" \
  "UPDATE ha_targets SET load_secret_file = '/etc/pdns-ha/test-deb-esl' WHERE load_secret_file IS NOT NULL;"
runuser -u pdns -- pdns-ha check --db "$state/ha.db" > "$work/check.log" 2>&1 ||
  { cat "$work/check.log"; fail "check on the shipped example"; }
runuser -u pdns -- cat /etc/pdns-ha/test-deb-esl >/dev/null 2>&1 &&
  fail "pdns can read the Event Socket password file"
runuser -u pdns-ha -- cat /etc/pdns-ha/test-deb-esl | grep -qx ClueCon ||
  fail "the monitor's user cannot read the Event Socket password file"

# A free port for pdns (UDP and TCP); the monitor will probe pdns's own TCP listener as
# sip6's SIP server, so one target is up with a measured latency. No python on a bare
# Debian: ss says what is taken.
port=
for _ in $(seq 100); do
  candidate=$((20000 + RANDOM % 40000))
  if [ -z "$(ss -Hlnut "sport = :$candidate")" ]; then port=$candidate; break; fi
done
[ -n "$port" ] || fail "no free loopback port"
# The answer dug is a copy of the example's SIP SRV RRset under an owner that is no SIP
# service (STUN): its records follow each target's own probe. The _sip._udp records follow
# the health of each server's SIP-over-UDP service, and no SIP server answers here.
runuser -u pdns-ha -- sqlite3 "$state/ha.db" \
  "UPDATE ha_targets SET probe = 'none', load_source = 'none';
   UPDATE ha_targets SET probe = 'tcp', probe_address = '127.0.0.1:$port' WHERE name = 'sip6.example.com';
   INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth)
     SELECT domain_id, '_stun._udp.example.com', type, content, ttl, prio, disabled, auth
     FROM records WHERE name = '_sip._udp.example.com' AND type = 'SRV';"

step "enabling pdns-ha as the docs say: the example snippet copied into pdns.d"
made_snippet=1
cp /usr/share/doc/pdns-ha/examples/pdns-ha.conf "$snippet"

step "starting pdns_server as pdns on 127.0.0.1:$port with /etc/powerdns (pdns.d/pdns-ha.conf)"
install -d -o pdns -g pdns "$work/run"
/usr/sbin/pdns_server --config-dir=/etc/powerdns --local-address=127.0.0.1 --local-port="$port" \
  --setuid=pdns --setgid=pdns --daemon=no --guardian=no --disable-syslog --write-pid=no \
  --socket-dir="$work/run" > "$work/pdns.log" 2>&1 &
pdns_pid=$!
ask() { dig @127.0.0.1 -p "$port" +time=2 +tries=1 "$@"; }
for i in $(seq 50); do
  ask example.com SOA 2>/dev/null | grep -q 'status: NOERROR' && break
  kill -0 "$pdns_pid" 2>/dev/null || { cat "$work/pdns.log"; fail "pdns_server exited"; }
  [ "$i" = 50 ] && { cat "$work/pdns.log"; fail "pdns_server not answering after 10 s"; }
  sleep 0.2
done
coprocs=$(pgrep -P "$pdns_pid" -x pdns-ha || true)
[ -n "$coprocs" ] || fail "no pdns-ha coprocess under pdns_server"
for pid in $coprocs; do
  [ "$(ps -o user= -p "$pid")" = pdns ] || fail "coprocess $pid runs as $(ps -o user= -p "$pid")"
done

first() { ask +subnet=198.51.100.0/24 +short "$srv" SRV | sort -n -k1,1 -k2,2r | head -n1; }
before=$(first)
[ "$before" = "10 50 5060 sip1.example.com." ] ||
  fail "before any reading, want the stored first record, got '$before'"

step "running the monitor unit's ExecStart as its user, one round"
run_unit "$unit" --once > "$work/monitor.log" 2>&1 || { cat "$work/monitor.log"; fail "monitor round"; }
grep -q 'polled 10 targets' "$work/monitor.log" || { cat "$work/monitor.log"; fail "monitor log"; }

step "digging the live answer"
# The pipe re-reads the database within a second; bounded wait.
live=
for _ in $(seq 50); do
  live=$(first)
  [ "$live" = "10 10 5060 sip6.example.com." ] && break
  sleep 0.1
done
[ "$live" = "10 10 5060 sip6.example.com." ] ||
  { tail -n 30 "$work/pdns.log"; fail "after the monitor, want sip6 first for site-b, got '$live'"; }
ask +subnet=198.51.100.0/24 "$srv" SRV | grep -q 'CLIENT-SUBNET: 198.51.100.0/24/24' ||
  fail "the live answer is not scoped to the network"
runuser -u pdns -- pdns-ha status --db "$state/ha.db" | grep -q '^sip6.example.com  *up' ||
  fail "status as pdns does not show sip6 up"

step "running the observe unit's ExecStart for $instance as its user, one round"
# Its source: the kernel's round trip of a TCP connection to pdns (sip6's stand-in) that
# this shell holds open; one DNS query over it gives the kernel a fresh acknowledgement.
# The caller is 127.0.0.1, so loopback becomes a known network, and one caller is enough.
runuser -u pdns-ha -- sqlite3 "$state/ha.db" \
  "INSERT INTO ha_networks (cidr, name) VALUES ('127.0.0.0/8', 'loopback');"
made_env=1
printf 'PDNS_HA_OBSERVE_ARGS="--tcp-ports %s --min-callers 1"\nRUST_LOG=info\n' "$port" \
  > "$observe_env"
exec 3<>"/dev/tcp/127.0.0.1/$port"
# Length 29, id 0x1234, RD, one question: example.com SOA IN.
printf '\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x06\x00\x01' >&3
# The answer's first bytes: the query was read and answered (and acknowledged).
head -c 2 <&3 >/dev/null
run_unit "$observe_unit" --once > "$work/observe.log" 2>&1 ||
  { cat "$work/observe.log"; fail "observe round"; }
exec 3>&-
grep -q "network 127.0.0.0/8: .* from 1 callers" "$work/observe.log" ||
  { cat "$work/observe.log"; fail "observe wrote no loopback reading"; }
written=$(runuser -u pdns -- sqlite3 "$state/ha.db" \
  "SELECT count(*) FROM ha_latency WHERE network = '127.0.0.0/8' AND target = '$instance'")
[ "$written" = 1 ] || fail "no ha_latency row from observe (got $written)"
rm -f "$observe_env"

step "a memcached key made as the docs say serves the pipe (pdns) and the monitor (pdns-ha)"
key=/etc/pdns-ha/test-deb-memcached.key
(umask 027 && head -c 32 /dev/urandom | base64 > "$key")
chgrp pdns "$key"
[ "$(stat -c '%U:%G %a' "$key")" = "root:pdns 640" ] || fail "key is $(stat -c '%U:%G %a' "$key")"
cache=(--memcached 127.0.0.1:1 --memcached-key-file "$key")
helo=$(printf 'HELO\t3\nQ\twww.example.com\tIN\tA\t-1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32\n' |
  runuser -u pdns -- pdns-ha --db "$state/ha.db" "${cache[@]}" 2> "$work/pipe-key.log")
echo "$helo" | grep -q '192.0.2.80' ||
  { cat "$work/pipe-key.log"; fail "the pipe as pdns does not serve with the key: $helo"; }
runuser -u pdns-ha -- pdns-ha metric health --db "$state/ha.db" --target sip8.example.com up \
  "${cache[@]}" > "$work/metric-key.log" 2>&1 ||
  { cat "$work/metric-key.log"; fail "the monitor's user cannot use the key"; }
chmod 0644 "$key"
printf 'HELO\t3\n' | runuser -u pdns -- pdns-ha --db "$state/ha.db" "${cache[@]}" \
  2> "$work/pipe-key.log" >/dev/null
grep -q "mode 644 lets other users read" "$work/pipe-key.log" ||
  { cat "$work/pipe-key.log"; fail "a world-readable key was not refused"; }
rm -f /etc/pdns-ha/test-deb-*

kill "$pdns_pid"
wait "$pdns_pid" 2>/dev/null || true
pdns_pid=
rm -f "$snippet"
made_snippet=

step "purging"
apt-get purge -y -q pdns-ha > "$work/apt-purge.log" 2>&1 || { cat "$work/apt-purge.log"; fail "purge"; }
snapshot > "$work/after"
# Kept on purge by design (docs/deployment.md, "Install the package"): the database and its directory.
left=$(comm -13 "$work/before" "$work/after" |
  grep -v -x -e "$state" -e "$state/ha.db" -e "$state/ha.db-wal" -e "$marker" || true)
[ -z "$left" ] || fail "left behind after purge: $left"
gone=$(comm -23 "$work/before" "$work/after" || true)
[ -z "$gone" ] || fail "gone after install and purge: $gone"
[ -f "$state/ha.db" ] || fail "purge removed the database, which the docs say it keeps"
pgrep -u pdns-ha >/dev/null && fail "pdns-ha processes still running"

# What purge keeps, the test removes: this machine should look as before.
rm -rf "$state"
userdel pdns-ha
step "ok: refused unsafe paths, installed without touching pdns, served live answers as pdns once enabled, one key for two users, monitor and observe units ran, purged cleanly"
