#!/usr/bin/env python3
"""Offline checks of deploy/, run by deploy/validate.sh (one subcommand per step).

Every subcommand prints one line per thing it checked ("ok", "FAIL") and exits 1
when anything failed. Nothing is skipped: a check that cannot run fails.

  schemas      Kubernetes objects against the API schemas (kubernetes-validate,
               strict: unknown fields fail); KEDA and Prometheus Operator objects
               against models generated from their CRDs (cloudcoil-models-*).
  policy       What a schema cannot see: security context, probes, grace periods
               against hookfleet.toml, KEDA trigger and alert queue names against the
               config's namespace, references between objects, Secret keys.
  rules        Extract a PrometheusRule's groups to a Prometheus rule file (none
               found fails).
  alerts       Every alert has `for`, a severity, a namespace label, a runbook_url
               into docs/ whose section exists, and promtool tests firing and not.
  dashboard    The Grafana dashboard's structure; its queries as a rule file for
               `promtool check rules` (PromQL syntax).
  metrics      Every hookfleet_* metric (and its label matchers) used by the alerts
               and the dashboard is registered in the Rust sources.
  images       Binaries named by the Dockerfile exist in the workspace, and every
               command of the compose file and the manifests is in its image.
  compose      The compose stack's config references match its environment.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


class Report:
    def __init__(self, title: str):
        self.title = title
        self.failed = 0
        self.passed = 0

    def ok(self, msg: str) -> None:
        self.passed += 1
        print(f"  ok    {msg}")

    def fail(self, msg: str) -> None:
        self.failed += 1
        print(f"  FAIL  {msg}")

    def check(self, cond: bool, msg: str, why: str = "") -> bool:
        if cond:
            self.ok(msg)
        else:
            self.fail(f"{msg}{': ' + why if why else ''}")
        return cond

    def done(self) -> int:
        print(f"  -- {self.title}: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def load_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def rel(path: Path | str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(path)


def kn(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def duration_seconds(text: str) -> float:
    """humantime-style durations as used in hookfleet.toml ("5s", "1m", "2m30s", "250ms")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, rest = 0.0, text.replace(" ", "")
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", rest):
        total += float(number) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|s|m|h|d))+", rest):
        raise ValueError(f"not a duration: {text!r}")
    return total


# --------------------------------------------------------------------------- schemas

def crd_models():
    """(apiVersion, kind) -> pydantic model generated from the CRD, or an error text."""
    try:
        from cloudcoil.models.keda import v1alpha1 as keda
        from cloudcoil.models.prometheus_operator import v1 as monitoring
    except Exception as e:  # noqa: BLE001 - any import problem means "not available"
        return None, f"cloudcoil CRD models not importable ({e.__class__.__name__}: {e})"
    return {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
    }, None


# Custom resources without a published model here: validated against a JSON Schema
# written by hand into deploy/validate/schemas/ (each file says what it covers).
JSON_SCHEMAS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_v1beta1_rabbitmqcluster.json",
}


def check_json_schema(report: Report, name: str, key: tuple, doc: dict) -> None:
    import jsonschema

    path = ROOT / "deploy/validate/schemas" / JSON_SCHEMAS[key]
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        report.fail(f"{name}: cannot read the schema {rel(path)}: {e}")
        return
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        why = "; ".join(f"{'.'.join(str(p) for p in e.path) or '(top)'}: {e.message}" for e in errors)
        report.fail(f"{name}: does not match the {key[1]} schema ({rel(path)}): {why}")
    else:
        report.ok(f"{name} matches the {key[1]} schema ({rel(path)})")


def unknown_fields(given, parsed, path: str = "") -> list[str]:
    """Keys present in the manifest but dropped by the model (pydantic ignores extras)."""
    out: list[str] = []
    if isinstance(given, dict) and isinstance(parsed, dict):
        for key, value in given.items():
            if key not in parsed:
                out.append(f"{path}.{key}".lstrip("."))
            else:
                out += unknown_fields(value, parsed[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(parsed, list):
        for i, (g, p) in enumerate(zip(given, parsed)):
            out += unknown_fields(g, p, f"{path}[{i}]")
    return out


def cmd_schemas(args) -> int:
    import kubernetes_validate
    from kubernetes_validate import utils as kv

    report = Report("schemas")
    models, why_not = crd_models()
    if models is None:
        report.fail(f"custom resources cannot be validated: {why_not}")
    versions = args.k8s_version
    print(f"  Kubernetes schemas: kubernetes-validate {kubernetes_validate.__version__}, "
          f"strict, API versions {', '.join(versions)}")
    for file in args.files:
        for doc in load_docs(Path(file)):
            name = f"{Path(file).name}: {kn(doc)}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if "." in str(key[0]).split("/")[0] and not str(key[0]).split("/")[0].endswith("k8s.io"):
                # A custom resource (its group is a domain that is not Kubernetes').
                if key in JSON_SCHEMAS:
                    check_json_schema(report, name, key, doc)
                    continue
                if models is None:
                    report.fail(f"{name} ({key[0]}): not validated, no CRD schema available")
                    continue
                model = models.get(key)
                if model is None:
                    report.fail(f"{name}: no CRD schema known for {key[0]} {key[1]}")
                    continue
                try:
                    parsed = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
                except Exception as e:  # pydantic.ValidationError
                    lines = [ln.strip() for ln in str(e).splitlines()[1:] if "errors.pydantic.dev" not in ln]
                    report.fail(f"{name}: does not match the {key[1]} CRD schema: {' '.join(lines)}")
                    continue
                extra = unknown_fields(doc, parsed)
                report.check(not extra, f"{name} matches the {key[1]} CRD schema ({model.__module__})",
                             f"unknown fields {extra}")
                continue
            problems = []
            for version in versions:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    problems.append(f"[{version}] {path}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    problems.append(f"[{version}] {e.message}")
            report.check(not problems, f"{name} valid against Kubernetes {'/'.join(versions)}", "; ".join(problems))
    return report.done()


# --------------------------------------------------------------------------- policy

def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    if doc.get("kind") == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"].get("metadata", {}).get("labels", {})
    return doc["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_security(report: Report, name: str, spec: dict) -> None:
    pod_sc = spec.get("securityContext", {})
    report.check(spec.get("automountServiceAccountToken") is False,
                 f"{name}: no service account token mounted")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        cn = f"{name} container {c['name']}"
        problems = []
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            problems.append("runAsNonRoot")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append("readOnlyRootFilesystem")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation: false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append("capabilities.drop [ALL]")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp != "RuntimeDefault":
            problems.append("seccompProfile RuntimeDefault")
        report.check(not problems, f"{cn}: restricted security context", f"missing {', '.join(problems)}")
        res = c.get("resources", {})
        missing = [r for r in ("requests.cpu", "requests.memory", "limits.memory")
                   if r.split(".")[1] not in res.get(r.split(".")[0], {})]
        report.check(not missing, f"{cn}: resource requests and memory limit", f"missing {missing}")
        image = c.get("image", "")
        report.check(":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"),
                     f"{cn}: image {image} has an explicit tag")


def config_from_build(docs: list[dict]) -> tuple[dict, dict] | tuple[None, None]:
    for d in docs:
        if d.get("kind") == "ConfigMap" and "hookfleet.toml" in d.get("data", {}):
            return tomllib.loads(d["data"]["hookfleet.toml"]), d
    return None, None


def secret_refs_in_config(value, path="") -> list[tuple[str, str, str]]:
    """(field, kind, target) of every { secret_env | secret_file } in the config."""
    out = []
    if isinstance(value, dict):
        if "secret_env" in value:
            out.append((path, "env", value["secret_env"]))
        elif "secret_file" in value:
            out.append((path, "file", value["secret_file"]))
        else:
            for k, v in value.items():
                out += secret_refs_in_config(v, f"{path}.{k}".lstrip("."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += secret_refs_in_config(v, f"{path}[{i}]")
    return out


# The worker's model of a job's length, as WorkerConfig::longest_job in
# worker/src/config/section.rs has it (with its defaults); both are tested against
# the deploy configs, so the two agree on what these manifests need.
WORKER_SHUTDOWN_GRACE_DEFAULT = "90s"
CLOSE_SLACK = 10  # seconds after shutdown_grace to close channels and exit


def longest_job(wc: dict) -> float:
    """Seconds the slowest pipeline may run: every enrichment step in turn, each AI
    candidate in turn (limiter wait: fallback_wait, the last one limits.max_wait;
    plus its provider's timeout), then the slowest sink (sinks run concurrently)."""
    timeout = {n: duration_seconds(p.get("timeout", "60s")) for n, p in wc.get("providers", {}).items()}
    max_wait = duration_seconds(wc.get("limits", {}).get("max_wait", "30s"))
    longest = 0.0
    for p in wc.get("pipelines", []):
        candidates = [p["provider"]] + [f["provider"] for f in p.get("fallbacks", [])]
        fallback_wait = duration_seconds(p.get("fallback_wait", "250ms"))
        ai = sum((max_wait if i == len(candidates) - 1 else fallback_wait) + timeout.get(c, 0)
                 for i, c in enumerate(candidates))
        enrich = sum(duration_seconds(e.get("timeout", "10s")) for e in p.get("enrich", []))
        sinks = max([duration_seconds(k.get("timeout", "10s")) for k in p.get("sinks", [])
                     if k.get("kind") == "http"] or [0])
        longest = max(longest, enrich + ai + sinks)
    return longest


def check_keda(report: Report, label: str, so: dict, config: dict) -> None:
    """KEDA's fallback (replicas kept when the trigger fails) and an explicit vhost."""
    fallback = so["spec"].get("fallback", {})
    report.check(fallback.get("failureThreshold", 0) >= 1 and fallback.get("replicas", 0) >= 1,
                 f"{label}: {kn(so)} has a fallback (replicas while the broker's API cannot be read)",
                 f"fallback {fallback}")
    for t in so["spec"]["triggers"]:
        report.check(bool(t.get("metadata", {}).get("vhostName")),
                     f"{label}: {kn(so)} trigger names its vhostName explicitly")


def cmd_policy(args) -> int:
    report = Report("policy")
    examples = {d["metadata"]["name"]: d for d in load_docs(Path(args.secrets)) if d.get("kind") == "Secret"}
    documented_keys = {n: set(d.get("stringData", {})) | set(d.get("data", {})) for n, d in examples.items()}
    for build in args.builds:
        label, _, file = build.partition("=")
        print(f"  [{label}] {rel(file)}")
        docs = load_docs(Path(file))
        by_kind: dict[str, dict[str, dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        deployments = by_kind.get("Deployment", {})
        # The RabbitMQ Cluster Operator makes each RabbitmqCluster's pods (labelled
        # app.kubernetes.io/name: NAME) and its Secret NAME-default-user.
        brokers = by_kind.get("RabbitmqCluster", {})
        broker_pods = [{"app.kubernetes.io/name": n} for n in brokers]
        example_keys = {f"{n}-default-user": {"username", "password", "host", "port"} for n in brokers}
        example_keys.update(documented_keys)
        config, cm = config_from_build(docs)
        if not report.check(config is not None, f"{label}: ConfigMap with hookfleet.toml generated"):
            continue
        ns = config.get("namespace", "hookfleet")
        jobs_queue = f"{ns}.jobs"
        workloads = [d for d in docs if pod_spec(d) is not None]

        # Security, resources, images, references of every workload.
        for w in workloads:
            spec = pod_spec(w)
            check_security(report, f"{label}: {kn(w)}", spec)
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    report.check(v["configMap"]["name"] in by_kind.get("ConfigMap", {}),
                                 f"{label}: {kn(w)} volume {v['name']} -> ConfigMap {v['configMap']['name']} in the build")
                if "secret" in v:
                    sname = v["secret"]["secretName"]
                    report.check(sname in examples, f"{label}: {kn(w)} volume {v['name']} -> Secret {sname} "
                                 f"documented in {rel(args.secrets)}")
            for c in spec.get("containers", []):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        report.check(ref["key"] in example_keys.get(ref["name"], set()),
                                     f"{label}: {kn(w)} env {e['name']} -> Secret {ref['name']} key {ref['key']} "
                                     f"in {rel(args.secrets)}")

        # The hookfleet containers: config mount, secrets, probes, grace periods.
        for w in workloads:
            spec = pod_spec(w)
            for c in spec.get("containers", []):
                env = {e["name"]: e for e in c.get("env", [])}
                if "HOOKFLEET_CONFIG" not in env:
                    continue
                cname = f"{label}: {kn(w)}"
                mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
                vols = {v["name"]: v for v in spec.get("volumes", [])}
                cfg_path = env["HOOKFLEET_CONFIG"]["value"]
                cfg_ok = any(
                    "configMap" in vols.get(n, {}) and vols[n]["configMap"]["name"] == cm["metadata"]["name"]
                    and cfg_path == f"{p.rstrip('/')}/hookfleet.toml" for n, p in mounts.items())
                report.check(cfg_ok, f"{cname}: HOOKFLEET_CONFIG={cfg_path} is the mounted hookfleet.toml")
                for field, how, target in secret_refs_in_config(config):
                    if how == "env":
                        report.check(target in env, f"{cname}: secret {field} (env {target}) is set")
                        continue
                    found = None
                    for n, p in mounts.items():
                        if target.startswith(p.rstrip("/") + "/") and "secret" in vols.get(n, {}):
                            found = (vols[n]["secret"]["secretName"], target[len(p.rstrip("/")) + 1:])
                    ok = found is not None and found[1] in example_keys.get(found[0], set())
                    report.check(ok, f"{cname}: secret {field} ({target}) is a key of a mounted Secret",
                                 f"mounted as {found}" if found else "no secret volume mounted there")

        ingest = deployments.get("hookfleet-ingest")
        worker = deployments.get("hookfleet-worker")
        for dep, port_path in ((ingest, "http"), (worker, "admin")):
            if dep is None:
                report.fail(f"{label}: Deployment missing")
                continue
            c = pod_spec(dep)["containers"][0]
            ports = {p["name"] for p in c.get("ports", [])}
            live, ready = c.get("livenessProbe", {}).get("httpGet", {}), c.get("readinessProbe", {}).get("httpGet", {})
            report.check(live.get("path") == "/healthz" and live.get("port") in ports,
                         f"{label}: {kn(dep)} liveness probe GET /healthz on port {live.get('port')}")
            report.check(ready.get("path") == "/readyz" and ready.get("port") in ports,
                         f"{label}: {kn(dep)} readiness probe GET /readyz on port {ready.get('port')}")
            report.check(port_path in ports, f"{label}: {kn(dep)} names its port {port_path!r}")
        if ingest:
            ing = config.get("ingest", {})
            need = duration_seconds(ing.get("drain_delay", "5s")) + duration_seconds(ing.get("shutdown_grace", "20s"))
            have = pod_spec(ingest).get("terminationGracePeriodSeconds", 30)
            report.check(have > need, f"{label}: ingest terminationGracePeriodSeconds {have} > "
                         f"drain_delay + shutdown_grace ({need:g}s)")
            ports = pod_spec(ingest)["containers"][0]["ports"]
            port = int(ing.get("listen", "0.0.0.0:8080").rsplit(":", 1)[1])
            report.check(any(p["containerPort"] == port and p["name"] == "http" for p in ports),
                         f"{label}: ingest containerPort http matches ingest.listen ({port})")
            admin = int(ing.get("admin_listen", "0.0.0.0:9091").rsplit(":", 1)[1])
            report.check(any(p["containerPort"] == admin and p["name"] == "admin" for p in ports),
                         f"{label}: ingest containerPort admin matches ingest.admin_listen ({admin})")
            for pm in by_kind.get("PodMonitor", {}).values():
                if selects(pm["spec"]["selector"], pod_labels(ingest)):
                    scraped = [e.get("port") for e in pm["spec"]["podMetricsEndpoints"]]
                    report.check(scraped == ["admin"], f"{label}: {kn(pm)} scrapes ingest's admin port "
                                 f"(/metrics is not on the public one), not {scraped}")
            for svc in by_kind.get("Service", {}).values():
                if selects({"matchLabels": svc["spec"].get("selector", {})}, pod_labels(ingest)):
                    targets = {p.get("targetPort") for p in svc["spec"]["ports"]}
                    report.check(targets in ({"http"}, {"admin"}, {port}, {admin}),
                                 f"{label}: {kn(svc)} exposes one ingest listener, not both ({sorted(map(str, targets))})")
        if worker:
            wc = config.get("worker", {})
            grace = duration_seconds(wc.get("shutdown_grace", WORKER_SHUTDOWN_GRACE_DEFAULT))
            longest = longest_job(wc)
            report.check(grace >= longest, f"{label}: worker.shutdown_grace ({grace:g}s) >= the longest job "
                         f"({longest:g}s: enrichment + each AI candidate's limiter wait and timeout + slowest sink)")
            have = pod_spec(worker).get("terminationGracePeriodSeconds", 30)
            report.check(have >= grace + CLOSE_SLACK, f"{label}: worker terminationGracePeriodSeconds {have} >= "
                         f"worker.shutdown_grace + {CLOSE_SLACK}s to close ({grace + CLOSE_SLACK:g}s)")
            port = int(wc.get("admin_listen", "0.0.0.0:9090").rsplit(":", 1)[1])
            report.check(any(p["containerPort"] == port for p in pod_spec(worker)["containers"][0]["ports"]),
                         f"{label}: worker containerPort matches worker.admin_listen ({port})")

        # Autoscaling owns replicas, one autoscaler per Deployment (an HPA and a
        # KEDA ScaledObject, whose own HPA it is, would fight over replicas).
        scalers: dict[str, list[str]] = {}
        for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
            target = hpa["spec"]["scaleTargetRef"]["name"]
            scalers.setdefault(target, []).append(kn(hpa))
            report.check(target in deployments, f"{label}: {kn(hpa)} targets Deployment {target} in the build")
        for so in by_kind.get("ScaledObject", {}).values():
            target = so["spec"]["scaleTargetRef"]["name"]
            scalers.setdefault(target, []).append(kn(so))
            report.check(target in deployments, f"{label}: {kn(so)} targets Deployment {target} in the build")
            check_keda(report, label, so, config)
            for t in so["spec"]["triggers"]:
                md = t.get("metadata", {})
                report.check(t["type"] == "rabbitmq" and md.get("protocol") == "http" and md.get("mode") == "QueueLength",
                             f"{label}: {kn(so)} trigger is rabbitmq, protocol http, mode QueueLength")
                report.check(md.get("queueName") == jobs_queue,
                             f"{label}: {kn(so)} queueName {md.get('queueName')} is the config's jobs queue "
                             f"({jobs_queue})")
                concurrency = int(config.get("worker", {}).get("concurrency", 16))
                try:
                    value = float(md.get("value", "nan"))
                except ValueError:
                    value = float("nan")
                # KEDA counts ready + unacked: a busy worker alone holds `concurrency`
                # unacked messages, so a smaller target adds replicas with no backlog.
                report.check(value >= concurrency, f"{label}: {kn(so)} target value {md.get('value')} >= "
                             f"worker.concurrency ({concurrency}): idle capacity never triggers scale-up")
                auth = t.get("authenticationRef", {}).get("name")
                ta = by_kind.get("TriggerAuthentication", {}).get(auth)
                if report.check(ta is not None, f"{label}: {kn(so)} authenticationRef {auth} in the build"):
                    for ref in ta["spec"].get("secretTargetRef", []):
                        report.check(ref["key"] in example_keys.get(ref["name"], set()),
                                     f"{label}: {kn(ta)} {ref['parameter']} <- Secret {ref['name']} key "
                                     f"{ref['key']} in {rel(args.secrets)}")
        for target, names in sorted(scalers.items()):
            report.check(len(names) == 1, f"{label}: Deployment/{target} has one autoscaler",
                         f"two autoscalers on one Deployment: {names}")
        scaled = set(scalers)
        for name in scaled & set(deployments):
            report.check("replicas" not in deployments[name]["spec"],
                         f"{label}: Deployment/{name} leaves replicas to its autoscaler")
        for pdb in by_kind.get("PodDisruptionBudget", {}).values():
            report.check(any(selects(pdb["spec"]["selector"], pod_labels(d)) for d in deployments.values())
                         or any(selects(pdb["spec"]["selector"], labels) for labels in broker_pods),
                         f"{label}: {kn(pdb)} selects a Deployment's or a RabbitmqCluster's pods")
            # Otherwise a broker outage (every pod unready) blocks node drains.
            report.check(pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
                         f"{label}: {kn(pdb)} unhealthyPodEvictionPolicy AlwaysAllow")
        for svc in by_kind.get("Service", {}).values():
            sel = svc["spec"].get("selector", {})
            report.check(any(selects({"matchLabels": sel}, pod_labels(d)) for d in deployments.values()),
                         f"{label}: {kn(svc)} selects a Deployment's pods")
        for pm in by_kind.get("PodMonitor", {}).values():
            pods = [d for d in deployments.values() if selects(pm["spec"]["selector"], pod_labels(d))]
            ports = {p["name"] for d in pods for c in pod_spec(d)["containers"] for p in c.get("ports", [])}
            report.check(bool(pods) and all(e.get("port") in ports for e in pm["spec"]["podMetricsEndpoints"]),
                         f"{label}: {kn(pm)} selects pods exposing port(s) "
                         f"{[e.get('port') for e in pm['spec']['podMetricsEndpoints']]}")
            job_label = pm["spec"].get("jobLabel")
            report.check(all(job_label in pod_labels(d) for d in pods),
                         f"{label}: {kn(pm)} jobLabel {job_label} is set on its pods")

        # Alerts name the config's jobs queue and Deployments of the build.
        for rule in by_kind.get("PrometheusRule", {}).values():
            exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
            queues = {q for e in exprs for q in re.findall(r'queue="([^"]+)"', e)}
            report.check(queues <= {jobs_queue, f"{ns}.dead"}, f"{label}: {kn(rule)} queue matchers {sorted(queues)} "
                         f"are the config's jobs and dead-letter queues ({jobs_queue}, {ns}.dead)")
            k8s_ns = {n for e in exprs for n in re.findall(r'namespace="([^"]+)"', e)}
            report.check(k8s_ns <= {rule["metadata"].get("namespace")}, f"{label}: {kn(rule)} namespace "
                         f"matchers {sorted(k8s_ns)} are the build's namespace")
            hpas = {h for e in exprs for h in re.findall(r'horizontalpodautoscaler="([^"]+)"', e)}
            keda_hpas = {f"keda-hpa-{n}" for n in by_kind.get("ScaledObject", {})}
            report.check(hpas <= keda_hpas, f"{label}: {kn(rule)} HPA matchers {sorted(hpas)} are KEDA's "
                         f"HPAs of the build {sorted(keda_hpas)}")
            deps = {q for e in exprs for q in re.findall(r'deployment="([^"]+)"', e)}
            report.check(deps <= set(deployments), f"{label}: {kn(rule)} deployment matchers {sorted(deps)} "
                         f"exist in the build")

        # The DLQ replay Job (dlq-replay builds only).
        for job in by_kind.get("Job", {}).values():
            c = pod_spec(job)["containers"][0]
            report.check(job["spec"].get("suspend") is True, f"{label}: {kn(job)} is created suspended")
            report.check(c.get("args", [])[:2] == ["dlq", "replay"] and c.get("command") == [
                "/usr/local/bin/hookfleet-worker"], f"{label}: {kn(job)} runs hookfleet-worker dlq replay")
            if worker:
                wimage = pod_spec(worker)["containers"][0]["image"]
                report.check(c["image"] == wimage, f"{label}: {kn(job)} uses the worker's image ({wimage})")
                report.check(job["metadata"].get("namespace") == worker["metadata"].get("namespace"),
                             f"{label}: {kn(job)} is in the worker's namespace")
        if args.expect_job and label in args.expect_job:
            report.check("Job" in by_kind, f"{label}: contains the DLQ replay Job")
    return report.done()


# --------------------------------------------------------------------------- rules

def cmd_rules(args) -> int:
    docs = [d for d in load_docs(Path(args.file)) if d.get("kind") == "PrometheusRule"]
    groups = [g for d in docs for g in d["spec"]["groups"]]
    if args.strip_annotations:
        for g in groups:
            for r in g["rules"]:
                r.pop("annotations", None)
    count = sum(len(g.get("rules", [])) for g in groups)
    if count == 0:
        # promtool passes an empty rule file: an extraction that found nothing fails.
        print(f"  FAIL  no PrometheusRule rules found in {rel(args.file)}")
        return 1
    Path(args.out).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    print(f"  wrote {len(groups)} group(s), {count} rule(s) to {args.out}")
    return 0


# --------------------------------------------------------------------------- alerts

RUNBOOK_PREFIX = "https://github.com/example/hookfleet/blob/main/"


def markdown_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if m:
            anchor = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            out.add(anchor)
    return out


def cmd_alerts(args) -> int:
    """Every alert: `for`, severity, a namespace label, a runbook_url into docs/ whose
    section exists; and a promtool test of it firing and one of it not firing."""
    report = Report("alerts")
    alerts = [r for d in load_docs(Path(args.file)) if d.get("kind") == "PrometheusRule"
              for g in d["spec"]["groups"] for r in g["rules"] if "alert" in r]
    report.check(bool(alerts), f"{rel(args.file)} has alerts")
    tests = yaml.safe_load(Path(args.tests).read_text()).get("tests", [])
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for r in alerts:
        name = r["alert"]
        report.check(bool(r.get("for")), f"{name}: has `for:`", "no `for:` (fires on one bad scrape)")
        report.check(r.get("labels", {}).get("severity") in ("warning", "critical"),
                     f"{name}: severity warning or critical", f"severity {r.get('labels', {}).get('severity')!r}")
        expr = r.get("expr", "")
        keeps_ns = bool(re.search(r"by \([^)]*\bnamespace\b|\"namespace\", \"\$1\"|namespace=\"", expr))
        report.check(keeps_ns or "namespace" in r.get("labels", {}),
                     f"{name}: the alert carries a namespace label", "its expression drops `namespace`")
        url = r.get("annotations", {}).get("runbook_url", "")
        path, _, anchor = url.removeprefix(RUNBOOK_PREFIX).partition("#")
        doc = ROOT / path
        ok = (url.startswith(RUNBOOK_PREFIX) and path.startswith("docs/") and doc.is_file()
              and anchor in markdown_anchors(doc.read_text()))
        report.check(ok, f"{name}: runbook_url {url or '(none)'} is a section of docs/",
                     "no runbook_url" if not url else f"no heading #{anchor} in {path}")
        fires = any(c.get("alertname") == name and c.get("exp_alerts") for c in cases)
        quiet = any(c.get("alertname") == name and not c.get("exp_alerts") for c in cases)
        report.check(fires and quiet, f"{name}: {rel(args.tests)} tests it firing and not firing",
                     f"firing tested: {fires}, not firing tested: {quiet}")
    return report.done()


# --------------------------------------------------------------------------- dashboard

GRAFANA_VARS = [("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "6h"),
                ("${namespace}", "hookfleet"), ("$namespace", "hookfleet")]


DASHBOARD_REQUIRED = [
    (r"rabbitmq_queue_messages\{[^}]*dead", "the dead-letter queue's depth"),
    ("rabbitmq_queue_messages_unacked", "unacked messages"),
    ("rabbitmq_queue_consumers", "the jobs queue's consumers"),
    ("kube_deployment_status_replicas_available", "replicas"),
    ("process_cpu_seconds_total", "CPU"),
    ("process_resident_memory_bytes", "memory"),
]


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of the template variables' selectors."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p.get('id')} \"{p.get('title')}\" {t.get('refId')}", t.get("expr", "")))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
            out.append((f"variable ${v['name']}", m.group(1) if m else q))
    return out


def cmd_dashboard(args) -> int:
    report = Report("dashboard")
    try:
        dash = json.loads(Path(args.file).read_text())
    except json.JSONDecodeError as e:
        report.fail(f"{rel(args.file)} is not JSON: {e}")
        return report.done()
    report.ok(f"{rel(args.file)} parses as JSON")
    report.check(bool(dash.get("uid")) and bool(dash.get("title")), f"uid {dash.get('uid')!r}, title {dash.get('title')!r}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    report.check(variables.get("datasource", {}).get("type") == "datasource",
                 "a data source variable $datasource (no hard-coded data source uid)")
    panels, ids, cells = [], set(), {}

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for p in panels:
        name = f"panel {p.get('id')} \"{p.get('title')}\""
        report.check(p.get("id") not in ids, f"{name}: unique id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        inside = all(k in g for k in "hwxy") and g["x"] >= 0 and g["x"] + g["w"] <= 24
        overlap = [cells[(x, y)] for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0))
                   for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)) if (x, y) in cells]
        report.check(inside and not overlap, f"{name}: gridPos {g} inside the 24-column grid, no overlap",
                     f"overlaps {sorted(set(overlap))}" if overlap else "")
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                cells[(x, y)] = p.get("id")
        if p.get("type") == "row":
            continue
        ds = p.get("datasource", {})
        targets = p.get("targets", [])
        report.check(ds.get("uid") == "${datasource}" and targets
                     and all(t.get("datasource", ds).get("uid") == "${datasource}" and t.get("expr") for t in targets),
                     f"{name}: {len(targets)} quer{'y' if len(targets) == 1 else 'ies'} on $datasource")
    exprs = dashboard_exprs(dash)
    for where, expr in exprs:
        # $__interval is the step: with a step under the scrape interval a range
        # holds under two samples and rate/increase return nothing.
        report.check("$__interval" not in expr, f"{where}: no $__interval (use $__rate_interval)",
                     "uses $__interval")
        for m in re.finditer(r"\b(rabbitmq_\w+)\s*(\{[^}]*\})?", expr):
            report.check(re.search(r'queue=~?"[^"]*\$namespace', m.group(2) or "") is not None,
                         f"{where}: {m.group(1)} is filtered to the selected namespace's queue",
                         "no queue matcher on $namespace: it mixes every queue of the broker")
    used = " ".join(e for _, e in exprs)
    for metric, panel in DASHBOARD_REQUIRED:
        report.check(re.search(rf"\b{metric}\b", used) is not None, f"a panel shows {panel} ({metric})")
    rules = []
    for i, (where, expr) in enumerate(exprs):
        for var, value in GRAFANA_VARS:
            expr = expr.replace(var, value)
        leftover = re.findall(r"\$\{?\w+", expr)
        report.check(not leftover, f"{where}: only known Grafana variables", f"unknown {leftover}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    Path(args.rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    print(f"  wrote {len(rules)} dashboard queries to {args.rules_out} for promtool")
    return report.done()


# --------------------------------------------------------------------------- metrics

# A call of a registration helper: counter(&registry, "name", "help", &["label", …]),
# plain_counter(&registry, "name", "help"), histogram(…), gauge(…), int_gauge(…), …
REGISTRATION = re.compile(
    r"\b(\w*(?:counter|histogram|gauge)\w*)\s*\(\s*&?\s*[\w.]+\s*,\s*"
    r"\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"\s*,\s*\"(?:[^\"\\]|\\.)*\"\s*(?:,\s*&\[([^\]]*)\])?", re.S)
# A metric declared as a constant, `const JOBS: Spec = spec("jobs_total", "help", &["label"]);`,
# and registered by `JOBS.counter(&registry)` (or `.histogram`, `.gauge`, `.plain_counter`).
SPEC = re.compile(
    r"\bconst\s+(\w+)\s*:\s*Spec\s*=\s*spec\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"\s*,\s*"
    r"\"(?:[^\"\\]|\\.)*\"\s*,\s*&\[([^\]]*)\]", re.S)
SPEC_USE = re.compile(r"\b([A-Z][A-Z0-9_]*)\.(counter|histogram|gauge|plain_counter)\s*\(")
OPTS = re.compile(r"\b(HistogramOpts|Opts)::new\s*\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"", re.S)
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "endpoint", "service"}


def registered_metrics(src_dirs: list[Path]) -> dict[str, dict]:
    """name -> {kind, labels (None = unknown), where} for every metric in the Rust sources."""
    found: dict[str, dict] = {}
    for d in src_dirs:
        for f in sorted(d.rglob("*.rs")):
            text = f.read_text()
            for m in REGISTRATION.finditer(text):
                helper = m.group(1).lower()
                kind = next(k for k in ("histogram", "counter", "gauge") if k in helper)
                # No label list: a plain metric (no labels besides the target's).
                labels = set(re.findall(r"\"([^\"]+)\"", m.group(3))) if m.group(3) is not None else set()
                line = text[: m.start()].count("\n") + 1
                found[m.group(2)] = {"kind": kind, "labels": labels, "where": f"{rel(f)}:{line}"}
            uses = {u.group(1): u.group(2) for u in SPEC_USE.finditer(text)}
            for m in SPEC.finditer(text):
                helper = uses.get(m.group(1), "counter")
                kind = next(k for k in ("histogram", "counter", "gauge") if k in helper)
                labels = set(re.findall(r"\"([^\"]+)\"", m.group(3)))
                line = text[: m.start()].count("\n") + 1
                found[m.group(2)] = {"kind": kind, "labels": labels, "where": f"{rel(f)}:{line}"}
            for m in OPTS.finditer(text):
                if m.group(2) in found:
                    continue
                line = text[: m.start()].count("\n") + 1
                kind = "histogram" if m.group(1) == "HistogramOpts" else "plain"
                found[m.group(2)] = {"kind": kind, "labels": None, "where": f"{rel(f)}:{line}"}
    # The helpers put every name under the namespace "hookfleet".
    return {n if n.startswith("hookfleet_") else f"hookfleet_{n}": v for n, v in found.items()}


def cmd_metrics(args) -> int:
    report = Report("metrics")
    src_dirs = [ROOT / d for d in args.src]
    registry = registered_metrics(src_dirs)
    print(f"  {len(registry)} metrics registered in {', '.join(args.src)}: {', '.join(sorted(registry))}")
    uses: list[tuple[str, str]] = []
    for f in args.rules:
        for d in load_docs(Path(f)):
            if d.get("kind") == "PrometheusRule":
                for g in d["spec"]["groups"]:
                    for r in g["rules"]:
                        uses.append((f"{rel(f)} {r.get('alert') or r.get('record')}", r["expr"]))
    for f in args.dashboard:
        for where, expr in dashboard_exprs(json.loads(Path(f).read_text())):
            uses.append((f"{rel(f)} {where}", expr))
    seen: dict[str, list[str]] = {}
    label_problems: list[str] = []
    for where, expr in uses:
        for m in re.finditer(r"\b(hookfleet_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?", expr):
            name, matchers = m.group(1), m.group(2) or ""
            seen.setdefault(name, []).append(where)
            base, suffix = name, ""
            for s in ("_bucket", "_sum", "_count"):
                if name.endswith(s) and name[: -len(s)] in registry:
                    base, suffix = name[: -len(s)], s
            info = registry.get(base)
            if info is None or info["labels"] is None:
                continue
            allowed = info["labels"] | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=)", matchers):
                if label not in allowed:
                    label_problems.append(f"{where}: {name} has no label {label!r} "
                                          f"(registered: {sorted(info['labels'])})")
    for name in sorted(seen):
        where = seen[name]
        info = registry.get(name)
        hist = next((registry[name[: -len(s)]] for s in ("_bucket", "_sum", "_count")
                     if name.endswith(s) and name[: -len(s)] in registry), None)
        if info and info["kind"] == "histogram":
            report.fail(f"{name}: a histogram; query {name}_bucket/_sum/_count (used by {where[0]})")
        elif info:
            report.ok(f"{name} ({info['kind']}, {info['where']}) used {len(where)}x")
        elif hist and hist["kind"] == "histogram":
            report.ok(f"{name} (histogram series, {hist['where']}) used {len(where)}x")
        else:
            report.fail(f"{name} is not registered in {', '.join(args.src)} (used by {'; '.join(sorted(set(where))[:3])})")
    for p in label_problems:
        report.fail(p)
    if not label_problems:
        report.ok("label matchers on hookfleet_* metrics name registered labels")
    unused = sorted(set(registry) - {n.rsplit('_', 1)[0] if n.endswith(('_bucket', '_sum', '_count')) else n for n in seen})
    if unused:
        print(f"  note  registered but on no dashboard or alert: {', '.join(unused)}")
    return report.done()


# --------------------------------------------------------------------------- images

def workspace_bins() -> dict[str, set[str]]:
    """package -> its binary targets, from the workspace manifests."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    out = {}
    for member in root.get("workspace", {}).get("members", []):
        d = ROOT / member
        manifest = tomllib.loads((d / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        bins = {b["name"] for b in manifest.get("bin", [])}
        if manifest["package"].get("autobins", True):
            if (d / "src/main.rs").exists():
                bins.add(name)
            bins |= {p.stem for p in (d / "src/bin").glob("*.rs")} if (d / "src/bin").is_dir() else set()
        out[name] = bins
    return out


def dockerfile_stages(text: str) -> dict[str, set[str]]:
    """stage -> files it COPYs to /usr/local/bin (names)."""
    stages: dict[str, set[str]] = {}
    current = None
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        m = re.match(r"\s*FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = (m.group(1) or "").lower()
            stages[current] = set()
            continue
        m = re.match(r"\s*COPY\s+(?:--\S+\s+)*(.+)\s+(\S+)\s*$", line, re.I)
        if m and current is not None:
            dest = m.group(2)
            srcs = m.group(1).split()
            if dest.rstrip("/") == "/usr/local/bin":
                stages[current] |= {Path(s).name for s in srcs}
            elif dest.startswith("/usr/local/bin/"):
                stages[current].add(Path(dest).name)
    return stages


def cmd_images(args) -> int:
    report = Report("images")
    text = Path(args.dockerfile).read_text()
    bins = workspace_bins()
    joined = re.sub(r"\\\n", " ", text)
    for m in re.finditer(r"cargo (?:build|chef cook)[^\n&]*", joined):
        cmd = m.group(0)
        pkgs = re.findall(r"(?:-p|--package)\s+(\S+)", cmd)
        wanted = re.findall(r"--bin\s+(\S+)", cmd)
        for p in pkgs:
            report.check(p in bins, f"Dockerfile: package {p} is a workspace member")
        for b in wanted:
            report.check(any(b in bins.get(p, set()) for p in pkgs), f"Dockerfile: binary {b} is a target of {pkgs}",
                         f"targets: { {p: sorted(bins.get(p, set())) for p in pkgs} }")
        report.check("--locked" in cmd, f"Dockerfile: `{cmd.split()[1]} {cmd.split()[2]}` uses --locked")
    stages = dockerfile_stages(text)
    print(f"  image targets and their binaries: { {k: sorted(v) for k, v in stages.items() if v} }")
    compose = yaml.safe_load(Path(args.compose).read_text())
    anchors = compose.get("services", {})
    for name, svc in anchors.items():
        target = svc.get("build", {}).get("target")
        if target is None:
            continue
        have = stages.get(target.lower(), set())
        cmd = svc.get("command") or []
        exe = Path(cmd[0]).name if cmd and cmd[0].startswith("/") else None
        if exe:
            report.check(exe in have, f"compose {name}: {cmd[0]} is in image target {target}")
        else:
            report.check(bool(have), f"compose {name}: image target {target} has an entrypoint binary {sorted(have)}")
    for f in args.manifests:
        for d in load_docs(Path(f)):
            spec = pod_spec(d)
            if not spec:
                continue
            for c in spec["containers"]:
                image = c["image"].rsplit("/", 1)[-1].split(":")[0]
                target = "mock-ai" if image.endswith("mock-ai") else "runtime"
                cmd = c.get("command") or []
                if cmd:
                    report.check(Path(cmd[0]).name in stages.get(target, set()),
                                 f"{Path(f).name}: {kn(d)} runs {cmd[0]}, in image target {target}")
                else:
                    report.check(bool(stages.get(target)), f"{Path(f).name}: {kn(d)} uses the entrypoint of {target}")
    return report.done()


# --------------------------------------------------------------------------- compose

def cmd_compose(args) -> int:
    report = Report("compose")
    path = Path(args.compose)
    compose = yaml.safe_load(path.read_text())
    for name, svc in compose.get("services", {}).items():
        env = svc.get("environment", {}) or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        if "HOOKFLEET_CONFIG" not in env:
            continue
        mounted = {}
        for v in svc.get("volumes", []):
            src, dest = v.split(":")[:2]
            mounted[dest] = (path.parent / src).resolve()
        cfg = mounted.get(env["HOOKFLEET_CONFIG"])
        if not report.check(cfg is not None and cfg.exists(),
                            f"compose {name}: HOOKFLEET_CONFIG {env['HOOKFLEET_CONFIG']} is a mounted file"):
            continue
        config = tomllib.loads(cfg.read_text())
        for field, how, target in secret_refs_in_config(config):
            if how == "env":
                report.check(target in env, f"compose {name}: secret {field} (env {target}) is set")
            else:
                report.check(target in mounted, f"compose {name}: secret {field} (file {target}) is mounted")
        hosts = {re.sub(r".*@|:.*|/.*", "", env.get(k, "")) for k in ("HOOKFLEET__AMQP__URL", "HOOKFLEET__REDIS__URL")}
        for h in sorted(hosts - {""}):
            report.check(h in compose["services"], f"compose {name}: broker/redis host {h} is a service")
        for prov, p in config.get("worker", {}).get("providers", {}).items():
            host = re.sub(r"^https?://|[:/].*$", "", p.get("base_url", ""))
            if host:
                report.check(host in compose["services"] or "." in host,
                             f"compose {name}: provider {prov} base_url host {host} resolves in the stack")
    return report.done()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("schemas")
    p.add_argument("--k8s-version", action="append", required=True)
    p.add_argument("files", nargs="+")
    p = sub.add_parser("policy")
    p.add_argument("--secrets", required=True, help="the Secret example manifest")
    p.add_argument("--expect-job", action="append", default=[])
    p.add_argument("builds", nargs="+", help="LABEL=rendered.yaml")
    p = sub.add_parser("rules")
    p.add_argument("--strip-annotations", action="store_true")
    p.add_argument("file")
    p.add_argument("out")
    p = sub.add_parser("alerts")
    p.add_argument("--tests", required=True, help="the promtool test file")
    p.add_argument("file")
    p = sub.add_parser("dashboard")
    p.add_argument("--rules-out", required=True)
    p.add_argument("file")
    p = sub.add_parser("metrics")
    p.add_argument("--src", action="append", required=True)
    p.add_argument("--rules", action="append", default=[])
    p.add_argument("--dashboard", action="append", default=[])
    p = sub.add_parser("images")
    p.add_argument("--dockerfile", required=True)
    p.add_argument("--compose", required=True)
    p.add_argument("manifests", nargs="*")
    p = sub.add_parser("compose")
    p.add_argument("compose")
    args = ap.parse_args()
    return {"schemas": cmd_schemas, "policy": cmd_policy, "rules": cmd_rules, "alerts": cmd_alerts, "dashboard": cmd_dashboard,
            "metrics": cmd_metrics, "images": cmd_images, "compose": cmd_compose}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
