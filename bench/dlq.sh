#!/usr/bin/env bash
# Measures the `dlq` commands of the release binary on a big dead-letter queue:
# wall time, rate and peak RSS (/usr/bin/time -v) of stats, list, a replay of
# one source (half the letters: the other half is put back in order) and a
# replay of the rest.
#
#   bench/dlq.sh                 # 100,000 letters of ~1 KiB, two sources
#   N=20000 bench/dlq.sh         # smaller
#
# Needs RabbitMQ on 127.0.0.1:5672 (make services). The namespace is fresh
# (bench-dlq-<time>); with rabbitmqctl at hand the script checks that no letter
# was lost or duplicated (DLQ empty, N jobs) and deletes the namespace's queues,
# which otherwise expire an hour after last use.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
NS=${NS:-bench-dlq-$(date +%s)}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
BIN=target/release/hookfleet-worker

if [ ! -x /usr/bin/time ]; then   # GNU time, for peak RSS
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq time >/dev/null
fi
cargo build --quiet --release -p hookfleet-worker
echo "Filling ${NS}.dead with ${N} letters…" >&2
DLQ_BENCH_NAMESPACE=$NS DLQ_BENCH_AMQP_URL=$AMQP_URL DLQ_SCALE_COUNT=$N \
  cargo test --quiet -p hookfleet-tests --test dlq -- \
  --ignored --exact scale::fill_a_dead_letter_queue_for_the_bench --nocapture >&2

export HOOKFLEET__NAMESPACE=$NS HOOKFLEET__AMQP__URL=$AMQP_URL
export HOOKFLEET__TELEMETRY__LOG_LEVEL=warn

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '| command | letters scanned | replayed | put back | wall time | letters/s | peak RSS |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
run() {
  local label=$1; shift
  /usr/bin/time -v "$BIN" dlq "$@" >"$tmp/out" 2>"$tmp/time" || {
    cat "$tmp/time" >&2; exit 1; }
  local rss secs summary scanned replayed requeued
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tmp/time" \
    | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  if [[ $label == *list* ]]; then
    scanned=$(wc -l <"$tmp/out"); replayed=0; requeued='—'
  else
    summary=$(tail -n 1 "$tmp/out")
    scanned=$(sed -E 's/.*"scanned":([0-9]+).*/\1/' <<<"$summary")
    replayed=$(sed -E 's/.*"replayed":([0-9]+).*/\1/' <<<"$summary")
    requeued=$(sed -E 's/.*"requeued":([0-9]+).*/\1/' <<<"$summary")
    [[ $scanned =~ ^[0-9]+$ ]] || scanned='—'
    [[ $replayed =~ ^[0-9]+$ ]] || replayed=0
    [[ $requeued =~ ^[0-9]+$ ]] || requeued='—'
  fi
  local rate
  rate=$(awk -v n="$scanned" -v s="$secs" 'BEGIN { if (s > 0 && n ~ /^[0-9]+$/) printf "%.0f", n / s; else print "—" }')
  printf '| `%s` | %s | %s | %s | %.1f s | %s | %d MiB |\n' \
    "$label" "$scanned" "$replayed" "$requeued" "$secs" "$rate" "$((rss / 1024))"
}
# stats prints one JSON object, not a summary line: count from it.
run "dlq list (first 100)" list --json
run "dlq stats" stats --json
run "dlq list --limit 0 --json" list --limit 0 --json
run "dlq replay --source github" replay --source github --json
run "dlq replay (the rest)" replay --all --json

if command -v rabbitmqctl >/dev/null 2>&1; then
  # list_queues reports quorum queues from periodic metrics: read until two
  # readings 3 s apart agree.
  counts=; previous=x
  for _ in $(seq 1 20); do
    counts=$(rabbitmqctl -q list_queues name messages 2>/dev/null | awk -v ns="$NS" '$1 == ns".dead" || $1 == ns".jobs"' | sort)
    [[ $counts == "$previous" ]] && break
    previous=$counts
    sleep 3
  done
  dead=$(awk -v q="$NS.dead" '$1 == q {print $2}' <<<"$counts")
  jobs=$(awk -v q="$NS.jobs" '$1 == q {print $2}' <<<"$counts")
  echo "after the runs: ${NS}.dead holds ${dead:-?}, ${NS}.jobs holds ${jobs:-?} (expected 0 and $N)" >&2
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep -E "^${NS}\."); do
    rabbitmqctl -q delete_queue "$q" >/dev/null
  done
fi
