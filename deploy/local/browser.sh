#!/usr/bin/env bash
# Installs what the console's browser tests drive: Debian's Chromium and its
# chromedriver. Idempotent: a no-op when both are on the PATH.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "deploy/local: installing chromium and chromium-driver from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
