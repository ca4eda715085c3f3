#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, from the Debian package, for
# trying and testing hookfleet against a cluster (docs/cluster.md).
#
#   deploy/local/cluster.sh up            start hf1, hf2, hf3 and join them (idempotent)
#   deploy/local/cluster.sh down          stop them and delete their data directory
#   deploy/local/cluster.sh kill NODE     kill -9 a node (hf1, hf2 or hf3)
#   deploy/local/cluster.sh start NODE    start a killed node again; returns once it rejoined
#                                         and every quorum queue has quorum + 1 replicas online
#   deploy/local/cluster.sh leader QUEUE  print the node leading a quorum queue (hf2)
#   deploy/local/cluster.sh urls          print the AMQP URLs, comma-separated
#   deploy/local/cluster.sh status        print the cluster status
#
# Nodes are hfN@localhost, AMQP on 5701-5703, Erlang distribution on 25701-25703,
# management (only with HOOKFLEET_CLUSTER_MANAGEMENT=1) on 15701-15703. Everything
# lives under $HOOKFLEET_CLUSTER_DIR (default /tmp/hookfleet-cluster), including
# the cluster's own Erlang cookie. The machine's broker (rabbit@localhost, 5672)
# is never touched: every rabbitmqctl call names its node with -n.
set -euo pipefail

DIR="${HOOKFLEET_CLUSTER_DIR:-/tmp/hookfleet-cluster}"
BIN=/usr/lib/rabbitmq/bin
NODES=(hf1 hf2 hf3)
AMQP_BASE=5700
DIST_BASE=25700
MGMT_BASE=15700

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

# hf2 → 2; anything else is refused.
index_of() {
  case "${1%@localhost}" in
    hf1) echo 1 ;; hf2) echo 2 ;; hf3) echo 3 ;;
    *) die "unknown node '$1' (hf1, hf2 or hf3)" ;;
  esac
}

# Runs a RabbitMQ CLI against one of our nodes, with the cluster's cookie.
ctl() {
  local tool=$1 node=$2; shift 2
  HOME="$DIR" RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
    "$BIN/$tool" -n "$node@localhost" "$@"
}

prepare() {
  [ -x "$BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed; run deploy/local/start.sh first"
  mkdir -p "$DIR"
  if [ ! -f "$DIR/.erlang.cookie" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/.erlang.cookie")
  fi
  chmod 400 "$DIR/.erlang.cookie"
  # Our own (empty) env file, so /etc/rabbitmq/rabbitmq-env.conf's NODENAME does not apply.
  : > "$DIR/rabbitmq-env.conf"
  local plugins="[]."
  if [ "${HOOKFLEET_CLUSTER_MANAGEMENT:-0}" = 1 ]; then plugins="[rabbitmq_management]."; fi
  for node in "${NODES[@]}"; do
    local i; i=$(index_of "$node")
    mkdir -p "$DIR/$node/mnesia" "$DIR/$node/log"
    echo "$plugins" > "$DIR/$node/enabled_plugins"
    cat > "$DIR/$node/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$((AMQP_BASE + i))
management.tcp.port = $((MGMT_BASE + i))
management.tcp.ip = 127.0.0.1
loopback_users.guest = true
log.file.level = warning
log.console = false
EOF
  done
}

running() { ctl rabbitmqctl "$1" -q --timeout 5 ping >/dev/null 2>&1; }

start_node() {
  local node=$1 i; i=$(index_of "$node")
  if running "$node"; then return 0; fi
  log "starting $node@localhost (AMQP 127.0.0.1:$((AMQP_BASE + i)))"
  HOME="$DIR" \
  RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
  RABBITMQ_NODENAME="$node@localhost" \
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$((AMQP_BASE + i)) \
  RABBITMQ_DIST_PORT=$((DIST_BASE + i)) \
  RABBITMQ_MNESIA_BASE="$DIR/$node/mnesia" \
  RABBITMQ_LOG_BASE="$DIR/$node/log" \
  RABBITMQ_CONFIG_FILE="$DIR/$node/rabbitmq.conf" \
  RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/$node/advanced.config" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/$node/enabled_plugins" \
  RABBITMQ_PID_FILE="$DIR/$node/pid" \
  ERL_EPMD_ADDRESS=127.0.0.1 \
    setsid "$BIN/rabbitmq-server" > "$DIR/$node/log/stdout" 2>&1 < /dev/null &
  ctl rabbitmqctl "$node" -q wait --timeout 120 "$DIR/$node/pid" >/dev/null \
    || die "$node did not start; see $DIR/$node/log"
}

# Joins a freshly started node to hf1 unless it is already a member.
join() {
  local node=$1
  if ctl rabbitmqctl hf1 -q cluster_status --formatter json 2>/dev/null | grep -q "\"$node@localhost\""; then
    return 0
  fi
  log "joining $node to hf1"
  ctl rabbitmqctl "$node" -q stop_app
  ctl rabbitmqctl "$node" -q join_cluster hf1@localhost
  ctl rabbitmqctl "$node" -q start_app
}

up() {
  prepare
  for node in "${NODES[@]}"; do start_node "$node"; done
  join hf2
  join hf3
  log "up: $(urls)"
}

# After a restart: waits until every quorum queue has a majority plus one member
# online again, so stopping another node keeps every queue available (what a
# rolling upgrade waits for).
await_quorum() {
  local node=${1%@localhost}
  ctl rabbitmq-upgrade "$node" -q await_online_quorum_plus_one -t 120 >/dev/null \
    || die "quorum queues did not get their replicas on $node back within 120 s"
}

kill_node() {
  local node=${1%@localhost}; index_of "$node" >/dev/null
  local pid
  pid=$(cat "$DIR/$node/pid" 2>/dev/null) || die "$node has no pid file (not started?)"
  kill -9 "$pid" 2>/dev/null || log "$node (pid $pid) was not running"
  log "killed $node (pid $pid)"
}

down() {
  for node in "${NODES[@]}"; do
    if [ -f "$DIR/$node/pid" ]; then
      local pid; pid=$(cat "$DIR/$node/pid")
      # Our node's own pid, from its own pid file: never anything else.
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  # epmd forgets a node when its connection closes; nothing else to stop.
  case "$DIR" in
    /|"") die "refusing to delete '$DIR'" ;;
  esac
  rm -rf "$DIR"
  log "down: $DIR removed"
}

# The node leading a quorum queue, asked of any running node.
leader() {
  local queue=$1 node
  for node in "${NODES[@]}"; do
    running "$node" || continue
    ctl rabbitmqctl "$node" -q --no-table-headers list_queues name leader 2>/dev/null \
      | awk -v q="$queue" '$1 == q { sub(/@.*/, "", $2); print $2; found = 1 } END { exit !found }' \
      && return 0
  done
  die "no running node knows a queue named '$queue'"
}

urls() {
  local out=() node
  for node in "${NODES[@]}"; do
    out+=("amqp://guest:guest@127.0.0.1:$((AMQP_BASE + $(index_of "$node")))/%2f")
  done
  (IFS=,; echo "${out[*]}")
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kill) kill_node "${2:?node}" ;;
  start) prepare; start_node "${2:?node}"; await_quorum "${2:?node}" ;;
  leader) leader "${2:?queue}" ;;
  urls) urls ;;
  status) ctl rabbitmqctl hf1 cluster_status ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
