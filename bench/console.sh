#!/usr/bin/env bash
# Measures the web console's DLQ page on a queue of 100,000 dead letters (~1 KiB
# each): time to the first page, later pages and filtered pages, and how much
# the process's peak memory grows while one is read.
#
#   bench/console.sh               # 100,000 letters
#   DLQ_SCALE_COUNT=20000 bench/console.sh
#
# Needs RabbitMQ and Redis (make services). Runs in a fresh test namespace,
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p hookfleet-tests --test dlq -- --ignored --exact \
  scale::the_console_answers_the_first_dlq_page_of_100k_letters_within_a_second --nocapture
