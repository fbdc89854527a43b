"""NetworkPolicies let each rok pod reach only what it needs: evaluated as the network plugin would, for the
connections rok makes (and some it must not)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from .manifests import NAMESPACE, OVERLAYS, find, pod_specs, render


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


OUTSIDE = None  # an address outside the cluster (S3, the API server, an external PostgreSQL)


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
    return True


def _peer_matches(peer: dict, policy_namespace: str, other: Pod | None) -> bool:
    if other is OUTSIDE:
        return "ipBlock" in peer
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), other.labels)


def _rule_allows(rule: dict, peers_key: str, policy_namespace: str, other: Pod | None, port: int) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get(peers_key)
    if not peers:
        return True
    return any(_peer_matches(peer, policy_namespace, other) for peer in peers)


def allowed(policies: list[dict], source: Pod | None, target: Pod | None, port: int) -> bool:
    def side(pod: Pod | None, kind: str, peers_key: str, other: Pod | None) -> bool:
        if pod is OUTSIDE:
            return True
        applying = [
            p
            for p in policies
            if p["metadata"]["namespace"] == pod.namespace
            and kind in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not applying:
            return True
        key = kind.lower()
        return any(
            _rule_allows(rule, peers_key, p["metadata"]["namespace"], other, port)
            for p in applying
            for rule in p["spec"].get(key, [])
        )

    return side(source, "Egress", "to", target) and side(target, "Ingress", "from", source)


def rok_pod(objects, name: str) -> Pod:
    for workload, _ in pod_specs(objects):
        if workload["metadata"]["name"] == name:
            return Pod(workload["metadata"]["namespace"], workload["spec"]["template"]["metadata"]["labels"])
    raise LookupError(name)


DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
STEP = Pod("kubeflow-user-example-com", {"pipeline/runid": "r1", "workflows.argoproj.io/workflow": "w"})
NOTEBOOK = Pod("kubeflow-user-example-com", {"notebook-name": "nb"})
KFP_API = Pod("kubeflow", {"app": "ml-pipeline"})
PROMETHEUS = Pod("monitoring", {"app": "prometheus"})

# (source, target, port, allowed): targets are rok workloads by name, or the pods above, or OUTSIDE.
CONNECTIONS = [
    ("rok-snapshotter", "rok-nats", 4222, True),
    ("rok-snapshotter", "rok-otel-collector", 4318, True),
    ("rok-snapshotter", OUTSIDE, 443, True),  # S3, the API server
    ("rok-snapshotter", OUTSIDE, 6443, True),  # the API server (its endpoint's port)
    ("rok-snapshotter", DNS, 53, True),
    ("rok-snapshotter", "rok-registry", 8080, False),
    ("rok-snapshotter", OUTSIDE, 5432, False),
    ("rok-pipeline-watcher", OUTSIDE, 443, True),  # the API server
    ("rok-pipeline-watcher", KFP_API, 8888, True),
    ("rok-pipeline-watcher", "rok-nats", 4222, True),
    ("rok-pipeline-watcher", OUTSIDE, 5432, False),
    (OUTSIDE, "rok-pipeline-watcher", 8443, True),  # the API server calls the webhook
    ("rok-registry", "rok-nats", 4222, True),
    ("rok-registry", OUTSIDE, 5432, True),
    ("rok-registry", OUTSIDE, 443, True),  # the API server: access reviews
    ("rok-registry", OUTSIDE, 9000, False),
    (PROMETHEUS, "rok-registry", 8080, True),
    ("rok-restorer", OUTSIDE, 443, True),
    ("rok-restorer", "rok-nats", 4222, True),
    (STEP, "rok-nats", 4222, True),  # the step guard
    (STEP, "rok-registry", 8080, True),  # a create-volume task: rok clone-pvc asks the registry's HTTP API
    (NOTEBOOK, "rok-registry", 8080, True),  # rok restore --pvc/--notebook and the web UI, from a notebook server
    (NOTEBOOK, "rok-nats", 4222, False),
    (NOTEBOOK, "rok-snapshotter", 8080, False),
    ("rok-otel-collector", "rok-nats", 7777, True),
    (PROMETHEUS, "rok-otel-collector", 8889, True),
    (NOTEBOOK, "rok-otel-collector", 4318, False),
    ("rok-nats", "rok-nats", 6222, True),
    ("rok-registry", "rok-nats", 6222, False),
]


def _resolve(objects, end):
    return rok_pod(objects, end) if isinstance(end, str) else end


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_each_rok_pod_reaches_what_it_needs_and_nothing_else(overlay: str):
    objects = render(OVERLAYS[overlay])
    policies = find(objects, "NetworkPolicy")
    wrong = []
    for source, target, port, expected in CONNECTIONS:
        if allowed(policies, _resolve(objects, source), _resolve(objects, target), port) != expected:
            wrong.append(f"{source} → {target}:{port} should be {'allowed' if expected else 'denied'}")
    assert not wrong, wrong


def test_the_dev_database_takes_connections_from_the_registry_only():
    objects = render(OVERLAYS["dev"])
    policies = find(objects, "NetworkPolicy")
    postgres = rok_pod(objects, "rok-postgres")
    assert allowed(policies, rok_pod(objects, "rok-registry"), postgres, 5432)
    for other in ("rok-snapshotter", "rok-restorer", "rok-pipeline-watcher"):
        assert not allowed(policies, rok_pod(objects, other), postgres, 5432), other
    assert postgres.namespace == NAMESPACE
