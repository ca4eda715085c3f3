#!/usr/bin/env bash
# Starts RabbitMQ and Redis on this machine for the demo and the tests.
# Idempotent: returns at once when both already answer; installs the Debian
# packages rabbitmq-server and redis-server when they are missing.
set -euo pipefail

answers() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

if answers 5672 && answers 6379; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy/local: installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! answers 6379; then
  echo "deploy/local: starting Redis" >&2
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/hookfleet.log
fi

if ! answers 5672; then
  echo "deploy/local: starting RabbitMQ" >&2
  # The package's postinst may have started it under systemd; otherwise start it here.
  PATH="$PATH:/usr/sbin" $SUDO rabbitmq-server -detached || true
fi

for _ in $(seq 1 120); do
  if answers 5672 && answers 6379; then
    # The AMQP port opens before the node finishes booting; wait for it to be ready.
    PATH="$PATH:/usr/sbin" $SUDO rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true
    echo "deploy/local: RabbitMQ (5672) and Redis (6379) are up" >&2
    exit 0
  fi
  sleep 1
done
echo "deploy/local: RabbitMQ or Redis did not come up within 120 s" >&2
exit 1
