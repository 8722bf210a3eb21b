#!/bin/sh
# Prints the Debian/Ubuntu packages that own the shared libraries the given
# binaries load, one per line: the runtime stage installs exactly those.
# A library that no package owns is reported on stderr and fails the script.
set -eu
status=0
pkgs=""
for lib in $(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
  owner="$(dpkg -S "${lib}" 2>/dev/null || dpkg -S "$(readlink -f "${lib}")" 2>/dev/null || true)"
  if [ -z "${owner}" ]; then
    echo "runtime_packages: no package owns ${lib}" >&2
    status=1
  else
    pkgs="${pkgs} ${owner%%:*}"
  fi
done
printf '%s\n' ${pkgs} | sort -u
exit "${status}"
