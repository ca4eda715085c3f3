#!/usr/bin/env bash
# Instructions per job (worker) or per accepted request (ingest), counted by
# valgrind's callgrind: unlike timings, the count barely moves when other
# processes share the cores, so two builds can be compared on a busy machine.
#
#   bash bench/callgrind.sh worker   # or: ingest
#   BIN_DIR=/other/build/target/release bash bench/callgrind.sh worker
#
# The service under test runs under callgrind (about 50 times slower), the rest
# (mock-ai, RabbitMQ, Redis, the load) natively, driven by `bench worker` or
# `bench ingest`. Two runs of different lengths are subtracted, so start-up and
# shutdown cancel out: (instructions of the long run − of the short one) ÷ (its
# extra jobs or requests). The long run's costliest functions (self cost,
# start-up included) are printed below the figure.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-worker}
case "$what" in
  worker | ingest) ;;
  *) echo "usage: $0 worker|ingest" >&2; exit 2 ;;
esac
bin=$(realpath "${BIN_DIR:-target/release}")
bench=$(realpath target/release/bench)
out=$(realpath -m target/callgrind)
mkdir -p "$out/bin"
rm -f "$out/$what".*.out
for b in hookfleet-ingest hookfleet-worker mock-ai; do
  ln -sf "$bin/$b" "$out/bin/$b"
done
rm -f "$out/bin/hookfleet-$what"
cat > "$out/bin/hookfleet-$what" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$out/$what.%p.out "$bin/hookfleet-$what" "\$@"
EOF
chmod +x "$out/bin/hookfleet-$what"

# One run of `size` (jobs, or seconds of load); prints "units instructions file".
measure() {
  local size=$1 units before file
  before=$(ls "$out/$what".*.out 2>/dev/null || true)
  if [ "$what" = worker ]; then
    "$bench" --bin-dir "$out/bin" --work-dir "$out/work" --runs 1 --json \
      worker --jobs "$size" --concurrency 64 --latency-ms 0 >"$out/run.txt"
    units=$(grep '^{' "$out/run.txt" | jq '.jobs')
  else
    "$bench" --bin-dir "$out/bin" --work-dir "$out/work" --runs 1 --json \
      ingest --concurrency 16 --duration "${size}s" >"$out/run.txt"
    units=$(grep '^{' "$out/run.txt" | jq '.load.accepted')
  fi
  file=$(ls -t "$out/$what".*.out | head -1)
  if [ -n "$before" ] && grep -qxF "$file" <<<"$before"; then
    echo "callgrind wrote no new profile" >&2
    exit 1
  fi
  echo "$units $(callgrind_annotate "$file" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }') $file"
}

if [ "$what" = worker ]; then sizes=(${SHORT:-300} ${LONG:-1300}); else sizes=(${SHORT:-4} ${LONG:-12}); fi
read -r u1 i1 _ < <(measure "${sizes[0]}")
read -r u2 i2 f2 < <(measure "${sizes[1]}")
unit=$([ "$what" = worker ] && echo job || echo request)
echo "$what: $u1 ${unit}s: $i1 instructions; $u2 ${unit}s: $i2 instructions"
awk -v u1="$u1" -v u2="$u2" -v i1="$i1" -v i2="$i2" -v unit="$unit" \
  'BEGIN { printf "instructions per %s: %.0f\n", unit, (i2 - i1) / (u2 - u1) }'
echo "costliest functions of the $u2-${unit} run (self, start-up included):"
callgrind_annotate --inclusive=no "$f2" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -"${TOP:-25}"
