#!/bin/sh
# Compose's one-shot `init` service: on the first `docker compose up`, generate the Redis
# password and the Grafana admin password into their volumes; afterwards keep them (so a
# restart doesn't lock running replicas out). No password has a default anyone knows, and
# none is ever on a command line: each reaches its consumer as a file.
#   /run/secrets/modelgate/redis/password    the replicas and the Redis exporter
#   /run/secrets/modelgate/redis/auth.conf   `requirepass …`, included by infra/redis/redis.conf
#   /run/secrets/modelgate/grafana/admin-password   GF_SECURITY_ADMIN_PASSWORD__FILE
# Rotate: `docker compose down -v` (drops the volumes), then `docker compose up`.
set -eu
# Overridable so that the tests can run this script on temporary directories.
REDIS_DIR=${REDIS_SECRETS_DIR:-/run/secrets/modelgate/redis}
GRAFANA_DIR=${GRAFANA_SECRETS_DIR:-/run/secrets/modelgate/grafana}

# 32 characters from [A-Za-z0-9]: ~190 bits; no character that needs quoting in a URL
# or in redis.conf.
generate() {
  pw=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
  [ "${#pw}" -eq 32 ] || { echo "init: could not read /dev/urandom" >&2; exit 1; }
}

# Write via a temporary file and rename, so a reader never sees half a file. 0444: the
# consumers run as other (non-root) users; only the services that mount a volume see it.
put() {  # put FILE  (content on stdin)
  cat >"$1.tmp"
  chmod 0444 "$1.tmp"
  mv -f "$1.tmp" "$1"
}

if [ ! -s "$REDIS_DIR/password" ]; then
  generate
  printf '%s' "$pw" | put "$REDIS_DIR/password"
  echo "init: generated the Redis password" >&2
fi
# auth.conf always follows the password file (printf is a shell builtin: no argv).
pw=$(cat "$REDIS_DIR/password")
printf 'requirepass %s\n' "$pw" | put "$REDIS_DIR/auth.conf"

if [ ! -s "$GRAFANA_DIR/admin-password" ]; then
  generate
  printf '%s' "$pw" | put "$GRAFANA_DIR/admin-password"
  echo "init: generated the Grafana admin password;" \
    "read it with: docker compose exec grafana cat $GRAFANA_DIR/admin-password" >&2
fi
