# Sourced by scripts/test-deb.sh and scripts/test-guide.sh: how a check that cannot run
# says so (skipped locally, failed under CI), and a package's systemd unit started by hand
# where no systemd runs. The caller sets `me`, the name its lines start with, and for a
# template unit `instance`, the %i.

ci() { [ -n "${CI:-}" ] && [ "$CI" != false ] && [ "$CI" != 0 ]; }
skip() {
  if ci; then echo "$me: FAIL: $*" >&2; exit 1; fi
  echo "$me: skipped: $*" >&2
  exit 0
}
fail() { echo "$me: FAIL: $*" >&2; exit 1; }
step() { echo "$me: $*"; }

# `field UNIT KEY`: the first KEY= line of UNIT, with the instance for %i.
field() { sed -n "s/^$2=//p" "$1" | head -n1 | sed "s/%i/${instance:-}/g"; }

# `run_unit UNIT [ARG...]`, as systemd starts it: the EnvironmentFile's variables, then
# $VAR in ExecStart split into words, as User:Group with the unit's UMask; extra
# arguments go last. The unit's command replaces the subshell (same process id).
run_unit() {
  local unit_file=$1 exec_start user group umask_ env_file
  shift
  exec_start=$(field "$unit_file" ExecStart)
  user=$(field "$unit_file" User)
  group=$(field "$unit_file" Group)
  umask_=$(field "$unit_file" UMask)
  env_file=$(field "$unit_file" EnvironmentFile)
  env_file=${env_file#-}
  [ -n "$exec_start" ] && [ -n "$user" ] && [ -n "$group" ] || fail "cannot read $unit_file"
  (
    set -a
    [ -f "$env_file" ] && . "$env_file"
    set +a
    umask "${umask_:-0022}"
    eval "exec setpriv --reuid=$user --regid=$group --init-groups -- $exec_start $*"
  )
}
