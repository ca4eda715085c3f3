#!/usr/bin/env bash
# The main job: ingest, two workers and (without an API key) the local mock AI;
# sends a signed sample support-ticket webhook and prints the AI result read back
# from the results queue. Set KEEP=1 to leave the services running afterwards.
#
# Provider: OPENAI_API_KEY → OpenAI gpt-4o-mini; else ANTHROPIC_API_KEY → Claude;
# else mock-ai on this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/start.sh
cargo build --quiet --workspace --bins
BIN=target/debug
DIR=.hookfleet/demo
# A namespace per run: queues expire 30 min after the run, and an earlier run's
# result can never be mistaken for this one's.
NS=${HOOKFLEET_DEMO_NAMESPACE:-hookfleet-demo-$(date +%s)}
INGEST_PORT=${INGEST_PORT:-18080}
INGEST_ADMIN_PORT=${INGEST_ADMIN_PORT:-18081}
MOCK_PORT=${MOCK_PORT:-18090}
mkdir -p "$DIR"
umask 077

# A fresh signing secret for this run; never committed, never printed.
SUPPORT_WEBHOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
export SUPPORT_WEBHOOK_SECRET
# The status API's bearer token, kept in $DIR/status-token (mode 0600).
STATUS_TOKEN="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
printf %s "$STATUS_TOKEN" >"$DIR/status-token"
export STATUS_TOKEN

pids=()
cleanup() {
  if [ "${KEEP:-0}" != "1" ]; then
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ -n "${OPENAI_API_KEY:-}" ]; then
  provider="openai"; model="gpt-4o-mini"
  provider_toml='[worker.providers.openai]
kind = "openai"
api_key = { secret_env = "OPENAI_API_KEY" }'
elif [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  provider="claude"; model="claude-3-5-haiku-latest"
  provider_toml='[worker.providers.claude]
kind = "anthropic"
api_key = { secret_env = "ANTHROPIC_API_KEY" }'
else
  provider="mock"; model="gpt-4o-mini"
  provider_toml="[worker.providers.mock]
kind = \"openai\"
base_url = \"http://127.0.0.1:${MOCK_PORT}/v1\"
api_key = { secret_env = \"MOCK_AI_KEY\" }"
  export MOCK_AI_KEY="sk-local-mock"
  "$BIN/mock-ai" --listen "127.0.0.1:${MOCK_PORT}" --latency-ms 150 >"$DIR/mock-ai.log" 2>&1 &
  pids+=($!)
fi
echo "demo: AI provider = $provider ($model)"

cat >"$DIR/hookfleet.toml" <<TOML
namespace = "$NS"
[amqp]
queue_expires = "30m"
[telemetry]
log_format = "json"
[ingest]
listen = "127.0.0.1:${INGEST_PORT}"
admin_listen = "127.0.0.1:${INGEST_ADMIN_PORT}"
status_token = { secret_env = "STATUS_TOKEN" }
drain_delay = "0s"
[ingest.sources.support]
scheme = "standard"
secrets = [{ secret_env = "SUPPORT_WEBHOOK_SECRET" }]
[worker]
concurrency = 8
$provider_toml

[[worker.pipelines]]
name = "support-triage"
sources = ["support"]
event_types = ["ticket.*"]
provider = "$provider"
model = "$model"
temperature = 0.0
max_tokens = 300
response_format = "json"
system = "You triage support tickets. Answer only with a JSON object with keys summary, sentiment (positive, neutral or negative) and category."
user = """
Customer: {{ payload.customer.name }} (plan {{ payload.customer.plan }})
Subject: {{ payload.ticket.subject }}
{{ payload.ticket.body }}
"""
TOML
export HOOKFLEET_CONFIG="$DIR/hookfleet.toml"

"$BIN/hookfleet-ingest" >"$DIR/ingest.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  HOOKFLEET__WORKER__ADMIN_LISTEN="127.0.0.1:$((19090 + i))" \
    "$BIN/hookfleet-worker" run >"$DIR/worker-$i.log" 2>&1 &
  pids+=($!)
done

ready() { curl -fsS -o /dev/null "$1" 2>/dev/null; }
for _ in $(seq 1 100); do
  if ready "http://127.0.0.1:${INGEST_PORT}/readyz" \
     && ready "http://127.0.0.1:19091/readyz" && ready "http://127.0.0.1:19092/readyz"; then
    break
  fi
  sleep 0.2
done
ready "http://127.0.0.1:${INGEST_PORT}/readyz" || { echo "ingest not ready; see $DIR/ingest.log" >&2; exit 1; }

echo "demo: ingest on :${INGEST_PORT}, workers on :19091 and :19092 (logs in $DIR/)"
echo "demo: POST /hooks/support with a signed sample ticket:"
"$BIN/loadgen" send --url "http://127.0.0.1:${INGEST_PORT}/hooks/support" \
  --scheme standard --secret-env SUPPORT_WEBHOOK_SECRET \
  --body-file deploy/local/sample-ticket.json --event-id "tkt_1001-$(date +%s%N)"
echo "demo: the AI result, read back from ${NS}.results:"
"$BIN/loadgen" take --queue "${NS}.results" --count 1 --timeout 60s

if [ "${KEEP:-0}" = "1" ]; then
  echo "demo: services keep running (KEEP=1): ingest http://127.0.0.1:${INGEST_PORT}; admin http://127.0.0.1:${INGEST_ADMIN_PORT} (/metrics; /events/{id} with -H \"Authorization: Bearer \$(cat $DIR/status-token)\"); stop with: kill ${pids[*]}"
fi
