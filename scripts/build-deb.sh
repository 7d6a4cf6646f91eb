#!/usr/bin/env bash
# Builds target/debian/pdns-ha_<version>_<arch>.deb with plain dpkg-deb (no cargo-deb,
# no debhelper): the release binaries, the SQL files, the man pages, the docs, the systemd
# units, the pdns.d snippet (as an example, not enabled), the Prometheus rules and
# Grafana dashboard, and the maintainer scripts from packaging/. Checks the units
# with systemd-analyze verify when it is installed. Usage: bash scripts/build-deb.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
out=target/debian
stage=$out/pdns-ha_${version}_${arch}
deb=$out/pdns-ha_${version}_${arch}.deb

cargo build --release --locked
bin=target/release/pdns-ha
daemon=target/release/pdns-ha-daemon

rm -rf "$stage"
# Modes are set explicitly below; a restrictive umask must not leak into the package.
umask 022
install -d "$stage/DEBIAN"
install -D -m 0755 "$bin" "$stage/usr/bin/pdns-ha"
# Beside pdns-ha, where `pdns-ha monitor|observe` looks for it first.
install -D -m 0755 "$daemon" "$stage/usr/bin/pdns-ha-daemon"
for sql in sql/*.sql; do
  install -D -m 0644 "$sql" "$stage/usr/share/pdns-ha/$(basename "$sql")"
done
# Generated from the command-line definitions (pipe-abi-tests/manpage.rs checks them).
for page in packaging/man/*.1; do
  install -D -m 0644 "$page" "$stage/usr/share/man/man1/$(basename "$page")"
  gzip -9n "$stage/usr/share/man/man1/$(basename "$page")"
done
doc=$stage/usr/share/doc/pdns-ha
install -D -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
for page in docs/*.md; do
  install -D -m 0644 "$page" "$doc/docs/$(basename "$page")"
  gzip -9n "$doc/docs/$(basename "$page")"
done
install -m 0644 packaging/debian/copyright "$doc/copyright"
install -D -m 0644 packaging/pdns-ha-observe.default "$doc/examples/pdns-ha-observe.default"
# Debian wants a changelog in every package; this one points at the project's history.
printf 'pdns-ha (%s) unstable; urgency=medium\n\n  * Built from git %s.\n\n -- pdns-ha maintainers <pdns-ha@example.com>  %s\n' \
  "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -R)" \
  | gzip -9n > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -D -m 0644 packaging/pdns-ha-monitor.service "$stage/lib/systemd/system/pdns-ha-monitor.service"
install -D -m 0644 packaging/pdns-ha-observe@.service "$stage/lib/systemd/system/pdns-ha-observe@.service"
# Not in /etc/powerdns/pdns.d: installing must change nothing pdns serves; the operator
# copies it there to enable pdns-ha (docs/operations.md, "Enabling the pipe").
install -D -m 0644 packaging/pdns-ha.conf "$doc/examples/pdns-ha.conf"
# Alert rules and dashboard for the monitor's and observe's --metrics-listen.
install -D -m 0644 packaging/prometheus/pdns-ha-alerts.yml \
  "$stage/usr/share/pdns-ha/prometheus/pdns-ha-alerts.yml"
install -D -m 0644 packaging/grafana/pdns-ha-dashboard.json \
  "$stage/usr/share/pdns-ha/grafana/pdns-ha-dashboard.json"
install -D -m 0644 packaging/pdns-ha-monitor.default "$stage/etc/default/pdns-ha-monitor"

for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$stage/DEBIAN/$script"
done
install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"

# The libc the binary really needs: the newest GLIBC_x.y symbol version it references.
glibc=$(objdump -T "$bin" "$daemon" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@LIBC@/libc6 (>= $glibc)/" packaging/debian/control.in > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort | xargs md5sum) \
  > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"

if command -v systemd-analyze >/dev/null; then
  # verify checks that ExecStart's program exists, so the copies checked point at the
  # staged binary; the template is checked as an instance.
  check=$(mktemp -d)
  trap 'rm -rf "$check"' EXIT
  cp packaging/pdns-ha-monitor.service "$check/"
  cp packaging/pdns-ha-observe@.service "$check/pdns-ha-observe@sip1.example.com.service"
  sed -i "s#/usr/bin/pdns-ha#$repo/$stage/usr/bin/pdns-ha#" "$check"/*.service
  # Documentation=man:pdns-ha(1) is checked too: against the staged man page.
  MANPATH="$repo/$stage/usr/share/man:" systemd-analyze verify "$check"/*.service
  echo "systemd-analyze verify: units ok"
elif [ -n "${CI:-}" ] && [ "${CI}" != false ] && [ "${CI}" != 0 ]; then
  echo "systemd-analyze not found (apt-get install systemd): cannot verify the units" >&2
  exit 1
else
  echo "systemd-analyze not found (apt-get install systemd): units not verified" >&2
fi

dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
