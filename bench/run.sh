#!/usr/bin/env bash
# `make bench`: release build, every measurement against the local RabbitMQ and
# Redis, then BENCHMARKS.md (medians of RUNS runs, default 3; about three minutes
# of measuring after the build, the sweeps of how cost grows in GROWTH_RUNS
# rounds, default RUNS, about 2½ minutes each (GROWTH_RUNS=0 skips them), then one
# run of the limiter's accuracy, three and a half minutes paced by its 600
# requests a minute; then the floors, FLOOR_RUNS rounds (default RUNS) of
# about a minute; DLQ_LETTERS=0 skips the dlq commands' minute). One figure on its own:
# `target/release/bench --help` (e.g. `bench limiter`); each section of
# BENCHMARKS.md quotes the command that reproduces it.
#
# The numbers are only as quiet as the machine: run it with nothing else busy.
# HOOKFLEET__… variables pass through to the services (they are listed in the
# report), e.g. HOOKFLEET__AMQP__PUBLISHER_CHANNELS=8 make bench.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/local/start.sh
echo "bench: building the release binaries" >&2
cargo build --release --quiet \
  --bin hookfleet-ingest --bin hookfleet-worker --bin mock-ai --bin bench

read -r load1 _ < /proc/loadavg
echo "bench: load average before starting: ${load1} on $(nproc) cores" >&2
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
  echo "bench: warning: the machine is busy; the figures will be low and noisy" >&2
fi

target/release/bench --bin-dir target/release --work-dir target/bench \
  --runs "${RUNS:-3}" all --growth-runs "${GROWTH_RUNS:-${RUNS:-3}}" --out BENCHMARKS.md --notes bench/NOTES.md \
  --results target/bench/results.json

# The floors: what the required crates alone spend per webhook and per job, each
# right after its ceiling (about a minute a round); FLOOR_RUNS=0 skips them.
floor_runs=${FLOOR_RUNS:-${RUNS:-3}}
if [ "$floor_runs" != 0 ]; then
  echo "bench: the floors, ${floor_runs} rounds" >&2
  section=$(target/release/bench --runs "$floor_runs" floor)
  {
    printf '\n## h. Floors: the required crates alone\n\n'
    printf 'What a webhook and a job cost with nothing of hookfleet but its topology and\n'
    printf 'the serde types of its records:\n'
    printf 'the least an implementation of the same promise on the same crates can spend\n'
    printf 'here (`tests/src/bench/floor/`). The ingest floor is an axum server in its own\n'
    printf 'process under the same closed loop as ingest: read the body, check its Standard\n'
    printf 'Webhooks HMAC, claim the id in Redis, publish with confirm (lapin), answer 202.\n'
    printf 'The worker floor, in the bench process: consume, one pipelined Redis round trip,\n'
    printf 'the AI call (reqwest, mock-ai at 0 ms, the answer decoded with serde), one round\n'
    printf 'trip after it, the result published with confirm, the ack. "Bare" keeps only the\n'
    printf 'claim and the markers; "shipped" also keeps what the services keep with their\n'
    printf 'shipped defaults (event status and history, the dedup record, the response cache\n'
    printf 'and its lock, the limiter read, the full result record) as plain commands, which\n'
    printf 'cost Redis less than the scripts that make the same writes safe. Each runs in the\n'
    printf 'same round as the ceiling it is divided by; CPU columns are per message.\n\n'
    printf '%s\n' "$section"
  } >> BENCHMARKS.md
fi

# The dlq commands on a big dead-letter queue (issue 5): DLQ_LETTERS=0 skips it.
letters=${DLQ_LETTERS:-100000}
if [ "$letters" != 0 ]; then
  echo "bench: dlq commands on ${letters} dead letters" >&2
  table=$(N=$letters bash bench/dlq.sh)
  {
    printf '\n## DLQ commands at scale\n\n'
    printf '```sh\nN=%s bash bench/dlq.sh\n```\n\n' "$letters"
    printf 'The release `hookfleet-worker dlq` on %s dead letters of about 1 KiB from two\n' "$letters"
    printf 'sources, one run each, timed and measured with `/usr/bin/time -v`. Memory stays\n'
    printf 'bounded because a pass holds at most a window of unacked letters and puts the\n'
    printf 'non-matching ones back at the tail, in order.\n\n'
    printf '%s\n' "$table"
  } >> BENCHMARKS.md
fi
