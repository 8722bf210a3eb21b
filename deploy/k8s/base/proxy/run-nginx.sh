#!/bin/sh
# Runs nginx for the affinity proxy: writes one upstream `server` line per
# ready kvsession replica (the addresses of the headless Service), starts
# nginx, and reloads it whenever that set of addresses changes. nginx's
# consistent hash keeps sessions of unchanged replicas where they are.
#   KVSESSION_BACKENDS_HOST        headless Service name (kvsession-headless)
#   KVSESSION_BACKENDS_PORT        replica gRPC port (50051)
#   KVSESSION_PROXY_DIR            writable nginx prefix (/tmp/nginx)
#   KVSESSION_PROXY_CONF           nginx.conf (/etc/kvsession-proxy/nginx.conf)
#   KVSESSION_RESOLVE_INTERVAL_S   seconds between look-ups (5)
set -u
host="${KVSESSION_BACKENDS_HOST:-kvsession-headless}"
port="${KVSESSION_BACKENDS_PORT:-50051}"
dir="${KVSESSION_PROXY_DIR:-/tmp/nginx}"
conf="${KVSESSION_PROXY_CONF:-/etc/kvsession-proxy/nginx.conf}"
interval="${KVSESSION_RESOLVE_INTERVAL_S:-5}"

addresses() {
  getent ahostsv4 "${host}" | awk '{ print $1 }' | sort -u | tr '\n' ' '
}

write_backends() {
  for a in $1; do
    echo "server ${a}:${port} max_fails=1 fail_timeout=10s;"
  done > "${dir}/backends.conf.new"
  mv "${dir}/backends.conf.new" "${dir}/backends.conf"
}

mkdir -p "${dir}"
current="$(addresses)"
while [ -z "${current}" ]; do
  echo "run-nginx: waiting for ${host} to resolve" >&2
  sleep "${interval}"
  current="$(addresses)"
done
write_backends "${current}"
echo "run-nginx: replicas ${current}" >&2
nginx -p "${dir}" -c "${conf}" -g 'daemon off;' &
nginx_pid=$!
trap 'nginx -p "${dir}" -c "${conf}" -s quit; wait "${nginx_pid}"; exit 0' TERM INT

while kill -0 "${nginx_pid}" 2>/dev/null; do
  sleep "${interval}" &
  wait $!
  next="$(addresses)"
  # No address at all (every replica restarting): keep the last set rather
  # than an empty upstream, which nginx rejects.
  if [ -n "${next}" ] && [ "${next}" != "${current}" ]; then
    echo "run-nginx: replicas ${next}, reloading" >&2
    write_backends "${next}"
    nginx -p "${dir}" -c "${conf}" -s reload && current="${next}"
  fi
done
wait "${nginx_pid}"
