#!/usr/bin/env bash
# What the quota check on Redis costs: one replica with one worker pinned to
# core 1, wrk pinned to core 0, the same prediction with quotas off and then on (Redis on
# core 0 too). Writes bench/RATELIMIT.md. Not part of `make test`.
# usage: bench/ratelimit_cost.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
MG=.venv/bin/modelgate
out=$(mktemp -d)
port=18100; rport=16400
redis-server --port $rport --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
taskset -pc 0 $redis_pid >/dev/null

run() {  # $1 = label, $2 = quotas on (true/false)
  MODELGATE_REDIS_URL=redis://127.0.0.1:$rport/0 MODELGATE_RATE_LIMIT__ENABLED=$2 \
  MODELGATE_RATE_LIMIT__PREDICT="100000000/minute" \
    taskset -c 1 $MG serve --model-repository models --port $port --workers 1 \
    >"$out/$1.log" 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.2; done
  taskset -c 0 wrk -t1 -c64 -d5s -s bench/predict.lua "http://127.0.0.1:$port/predict" >/dev/null
  taskset -c 0 wrk -t1 -c64 -d"${DURATION}s" --latency -s bench/predict.lua \
    "http://127.0.0.1:$port/predict" >"$out/$1.wrk"
  kill -TERM $pid; wait $pid || true
}
run off false
run on true

rps() { awk '/Requests\/sec/ {print $2}' "$out/$1.wrk"; }
pct() { awk -v p="$2" '$1 == p {print $2}' "$out/$1.wrk"; }
non2xx() { awk '/Non-2xx/ {print $5} END {}' "$out/$1.wrk" | head -1; }
off=$(rps off); on=$(rps on)
{
  echo "# Cost of the shared rate limiter"
  echo
  echo "Command: \`bench/ratelimit_cost.sh $DURATION\` on $(date -u +%F)."
  echo "Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $(uname -r)."
  echo "One replica, one worker on core 1 (\`taskset -c 1\`); wrk (1 thread, 64 connections, ${DURATION} s after 5 s of warm-up) and redis-server on core 0. POST /predict, churn v2, cache off."
  echo
  echo "| quotas | req/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|"
  for k in off on; do
    echo "| $k | $(rps $k) | $(pct $k 50%) | $(pct $k 99%) | $(non2xx $k || true) |"
  done
  echo
  echo "Throughput with quotas on: $(python3 -c "print(f'{$on / $off:.2f}')") × with quotas off."
} > bench/RATELIMIT.md
cat bench/RATELIMIT.md
