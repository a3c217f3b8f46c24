#!/usr/bin/env bash
# Install the OS packages that provide the given commands, when missing (Debian/apt).
# usage: scripts/os-deps.sh redis-server nginx prometheus promtool
set -euo pipefail

declare -A PACKAGE=(
  [redis-server]=redis-server
  [nginx]=nginx
  [prometheus]=prometheus
  [promtool]=prometheus
  [amtool]=prometheus-alertmanager
)

missing=()
for cmd in "$@"; do
  command -v "$cmd" >/dev/null 2>&1 && continue
  # Debian installs nginx in /usr/sbin, which may not be on a non-root PATH.
  [ -x "/usr/sbin/$cmd" ] && continue
  pkg="${PACKAGE[$cmd]:-$cmd}"
  [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing OS packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing OS packages: ${missing[*]}" >&2
# Keep apt from starting the packaged daemons (nginx on :80, redis on :6379): modelgate
# starts its own instances on its own ports, and a stray system daemon would outlive us.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
# Several make targets may run at once (CI, a second terminal): wait for dpkg's lock.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
