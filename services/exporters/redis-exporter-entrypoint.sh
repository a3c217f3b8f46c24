#!/bin/sh
# redis_exporter reads REDIS_PASSWORD from its environment. Compose and Kubernetes hand
# the password over as a file (REDIS_PASSWORD_FILE); exporting it here keeps it off every
# command line (`ps` shows arguments to anyone in the container's PID namespace).
set -eu
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDIS_PASSWORD="$(cat "$REDIS_PASSWORD_FILE")"
  export REDIS_PASSWORD
fi
exec /usr/bin/redis_exporter "$@"
