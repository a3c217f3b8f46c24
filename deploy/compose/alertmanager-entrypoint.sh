#!/bin/sh
# Compose's Alertmanager: infra/alertmanager/alertmanager.yml with the webhook's URL
# (ALERTMANAGER_WEBHOOK_URL, from .env) appended as its receiver's integration, as
# modelgate.stack.launch does for the native stack; then the command given, with that config.
# Alertmanager expands no variables in its config, hence this step.
#   usage: alertmanager-entrypoint.sh /bin/alertmanager [flags...]
set -eu
template="${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}"
config="${ALERTMANAGER_CONFIG:-/tmp/alertmanager.yml}"
url="${ALERTMANAGER_WEBHOOK_URL:-}"
cp "$template" "$config"
if [ -n "$url" ]; then
  # Quoted into YAML below: refuse what would break out of the quotes or the line.
  case "$url" in
    http://*|https://*) ;;
    *) echo "ALERTMANAGER_WEBHOOK_URL must start with http:// or https://" >&2; exit 2 ;;
  esac
  case "$url" in
    *[[:space:]\"\\]*) echo "ALERTMANAGER_WEBHOOK_URL must not contain quotes, backslashes or spaces" >&2; exit 2 ;;
  esac
  # The receiver's `webhook_configs:` is the last line of the template.
  printf '      - url: "%s"\n        send_resolved: true\n' "$url" >> "$config"
fi
exec "$@" --config.file="$config"
