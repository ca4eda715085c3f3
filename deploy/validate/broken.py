#!/usr/bin/env python3
"""Broken copies of rendered manifests and the dashboard, for deploy/validate.sh's
self-test: each one must be rejected by the check it targets, so that no check
passes vacuously.

  broken.py KIND INPUT OUTPUT

KIND is one of the keys of BREAKS; INPUT a rendered build (YAML, several
documents) or the dashboard (JSON); OUTPUT the broken copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


def hpa_and_keda(docs: list[dict]) -> None:
    """An HPA on the worker Deployment KEDA already scales."""
    docs.append({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "hookfleet-worker-cpu", "namespace": "hookfleet"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hookfleet-worker"},
                 "minReplicas": 1, "maxReplicas": 5},
    })


def first_alert(docs: list[dict]) -> dict:
    return one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]


def alert_without_for(docs: list[dict]) -> None:
    del first_alert(docs)["for"]


def alert_without_runbook(docs: list[dict]) -> None:
    del first_alert(docs)["annotations"]["runbook_url"]


def rules_empty(docs: list[dict]) -> None:
    one(docs, "PrometheusRule")["spec"]["groups"] = []


def short_grace(docs: list[dict]) -> None:
    """The worker abandons jobs at 30s while one may take 90s."""
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "hookfleet.toml" in d.get("data", {}))
    toml = cm["data"]["hookfleet.toml"]
    assert 'shutdown_grace = "90s"' in toml
    cm["data"]["hookfleet.toml"] = toml.replace('shutdown_grace = "90s"', 'shutdown_grace = "30s"')


def pdb_blocks_drains(docs: list[dict]) -> None:
    del one(docs, "PodDisruptionBudget", "hookfleet-worker")["spec"]["unhealthyPodEvictionPolicy"]


def keda_without_fallback(docs: list[dict]) -> None:
    del one(docs, "ScaledObject")["spec"]["fallback"]


def dashboard_interval(dash: dict) -> None:
    """A query with $__interval: empty when the step is under the scrape interval."""
    target = next(t for p in dash["panels"] for t in p.get("targets", []) if "$__rate_interval" in t["expr"])
    target["expr"] = target["expr"].replace("$__rate_interval", "$__interval")


def dashboard_all_queues(dash: dict) -> None:
    """A RabbitMQ query that ignores the namespace."""
    target = next(t for p in dash["panels"] for t in p.get("targets", []) if "rabbitmq_" in t["expr"])
    target["expr"] = "max(rabbitmq_queue_messages_ready)"


def rabbitmq_typo(docs: list[dict]) -> None:
    """A misspelt field in the RabbitmqCluster (the operator would ignore it)."""
    one(docs, "RabbitmqCluster")["spec"]["replica"] = 3


def rabbitmq_pdb_elsewhere(docs: list[dict]) -> None:
    """The broker's PDB selecting pods no workload of the build makes."""
    one(docs, "PodDisruptionBudget", "hookfleet-rabbitmq")["spec"]["selector"] = {
        "matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}


BREAKS = {
    "hpa-and-keda": hpa_and_keda,
    "alert-without-for": alert_without_for,
    "alert-without-runbook": alert_without_runbook,
    "rules-empty": rules_empty,
    "short-grace": short_grace,
    "pdb-blocks-drains": pdb_blocks_drains,
    "keda-without-fallback": keda_without_fallback,
    "dashboard-interval": dashboard_interval,
    "dashboard-all-queues": dashboard_all_queues,
    "rabbitmq-typo": rabbitmq_typo,
    "rabbitmq-pdb-elsewhere": rabbitmq_pdb_elsewhere,
}


def main() -> int:
    kind, src, out = sys.argv[1:4]
    text = Path(src).read_text()
    if src.endswith(".json"):
        dash = json.loads(text)
        BREAKS[kind](dash)
        Path(out).write_text(json.dumps(dash, indent=2))
    else:
        docs = docs_of(text)
        BREAKS[kind](docs)
        Path(out).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
