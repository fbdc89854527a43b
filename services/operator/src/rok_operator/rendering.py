"""A RokCluster's spec applied to the objects of the `prod` overlay: what the cluster should hold.

Each rule below changes the overlay's objects the way a kustomize patch would, and only when the spec differs from
the overlay's settings; with the defaults the result is the overlay itself, plus the labels and owner references
that tie every object to its RokCluster.

What outlives a RokCluster is rendered without an owner reference (:data:`RETAINED`): the namespace (it holds the
NATS servers' volumes) and the embedded database's volume. The store's data lives outside the cluster and the
users' volumes in their own namespaces; the operator never creates, owns or deletes either.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from rok_operator import bundle
from rok_operator.spec import API_VERSION, KIND, RokClusterSpec

Obj = dict[str, Any]

CLUSTER_LABEL = "rok.kubeflow.org/cluster"
RETAIN_ANNOTATION = "rok.kubeflow.org/retain"
MANAGED_BY = {"app.kubernetes.io/managed-by": "rok-operator"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
SQLITE_CLAIM = "rok-registry-db"
SQLITE_DIR = "/var/lib/rok/registry"


@dataclass(frozen=True)
class Owner:
    name: str
    uid: str


def render(spec: RokClusterSpec, owner: Owner) -> list[Obj]:
    """Every object the RokCluster ``owner`` should have, in the overlay's order (new ones last)."""
    objects = bundle.objects()
    for rule in (_images, _store, _database, _bus, _snapshotter, _replicas_and_resources, _step_guard, _traces):
        objects = rule(objects, spec)
    return [_owned(obj, owner) for obj in objects]


def is_retained(obj: Obj) -> bool:
    return obj["metadata"].get("annotations", {}).get(RETAIN_ANNOTATION) == "true"


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOADS]


# --- the rules -------------------------------------------------------------------------------------------------


def _containers(obj: Obj) -> list[Obj]:
    if obj["kind"] not in WORKLOADS:
        return []
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _set_env(container: Obj, name: str, value: str | None) -> None:
    """Set (or, with None, remove) a plain environment variable, keeping its place."""
    env = container.setdefault("env", [])
    for i, item in enumerate(env):
        if item["name"] == name:
            if value is None:
                del env[i]
            else:
                env[i] = {"name": name, "value": value}
            return
    if value is not None:
        env.append({"name": name, "value": value})


def _images(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    def rok_image(image: str) -> str:
        if not image.startswith("rok/"):
            return image
        return f"{spec.images.registry}{image.split(':')[0]}:{spec.images.version}"

    for obj in objects:
        for container in _containers(obj):
            container["image"] = rok_image(container["image"])
            for item in container.get("env", []):
                if item["name"] in ("ROK_GUARD_IMAGE", "ROK_RESTORE_IMAGE"):
                    item["value"] = rok_image(item["value"])
    return objects


def _rename_secret(objects: list[Obj], old: str, new: str) -> None:
    for obj in objects:
        for container in _containers(obj):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == old:
                    ref["name"] = new


def _store(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    _rename_secret(objects, "rok-s3", spec.store.secret_name)
    return objects


def _database(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    if spec.database.type == "postgresql":
        _rename_secret(objects, "rok-database", spec.database.secret_name)
        return objects
    # Embedded: SQLite on a volume of its own, one registry replica, replaced (not rolled) on change.
    registry = _named(objects, "Deployment", "rok-registry")
    registry["spec"]["replicas"] = 1
    registry["spec"]["strategy"] = {"type": "Recreate"}
    pod = registry["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["env"] = [e for e in container["env"] if e["name"] != "ROK_DATABASE_URL"]
    _set_env(container, "ROK_DATABASE_URL", f"sqlite:///{SQLITE_DIR}/registry.db")
    container.setdefault("volumeMounts", []).append({"name": "database", "mountPath": SQLITE_DIR})
    pod.setdefault("volumes", []).append({"name": "database", "persistentVolumeClaim": {"claimName": SQLITE_CLAIM}})
    pod.setdefault("securityContext", {})["fsGroup"] = 10001  # the image's uid writes to a volume made by root
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": SQLITE_CLAIM,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/name": "rok-registry", "app.kubernetes.io/part-of": "rok"},
            "annotations": {RETAIN_ANNOTATION: "true"},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec.database.size}}},
    }
    objects = [
        o for o in objects if not (o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == "rok-registry")
    ]
    return [*objects, claim]


_NATS_OBJECTS = {
    ("StatefulSet", "rok-nats"),
    ("Service", "rok-nats"),
    ("Service", "rok-nats-headless"),
    ("PodDisruptionBudget", "rok-nats"),
    ("NetworkPolicy", "rok-nats"),
}


def _bus(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    if spec.bus.external_url:
        return _external_bus(objects, spec.bus.external_url)
    replicas = spec.bus.replicas
    nats = _named(objects, "StatefulSet", "rok-nats")
    if nats["spec"]["replicas"] == replicas:
        return objects
    nats["spec"]["replicas"] = replicas
    (config,) = [v for v in nats["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    config_map = _named(objects, "ConfigMap", config["configMap"]["name"])
    config_map["data"]["nats.conf"] = _nats_conf(config_map["data"]["nats.conf"], replicas, nats["spec"]["serviceName"])
    # A new name for new content, as kustomize's generator does, so that the servers restart with it.
    base = config_map["metadata"]["name"].rsplit("-", 1)[0]
    config_map["metadata"]["name"] = config["configMap"]["name"] = f"{base}-{_content_hash(config_map['data'])}"
    for obj in objects:
        for container in _containers(obj):
            for item in container.get("env", []):
                if item["name"] == "ROK_STREAM_REPLICAS":
                    item["value"] = str(min(replicas, 3))
    return objects


def _nats_conf(conf: str, replicas: int, headless: str) -> str:
    cluster = re.compile(r"\ncluster \{.*?\n\}\n", re.S)
    if replicas == 1:
        return cluster.sub("\n", conf)
    routes = "\n".join(f"    nats://rok-nats-{i}.{headless}:6222" for i in range(replicas))
    return re.sub(r"routes: \[\n.*?\n  \]", f"routes: [\n{routes}\n  ]", conf, flags=re.S)


def _content_hash(data: dict[str, str]) -> str:
    digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
    return "".join(c for c in digest if c not in "aeiou013")[:10]


def _external_bus(objects: list[Obj], url: str) -> list[Obj]:
    port = int(url.rsplit(":", 1)[1]) if re.search(r":[0-9]+$", url) else 4222
    nats = _named(objects, "StatefulSet", "rok-nats")
    (config,) = [v for v in nats["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    dropped = {*_NATS_OBJECTS, ("ConfigMap", config["configMap"]["name"])}
    kept = [o for o in objects if (o["kind"], o["metadata"]["name"]) not in dropped]
    for obj in kept:
        for container in _containers(obj):
            for item in container.get("env", []):
                if item["name"] == "ROK_NATS_URL":
                    item["value"] = url
            _set_env(container, "ROK_STREAM_REPLICAS", None)
        if obj["kind"] == "NetworkPolicy":
            for rule in obj["spec"].get("egress", []):
                if any(t.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "rok-nats"}
                       for t in rule.get("to", [])):  # fmt: skip
                    rule.pop("to")
                    rule["ports"] = [{"port": port, "protocol": "TCP"}]
    return kept


def _snapshotter(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    daemonset = _named(objects, "DaemonSet", "rok-snapshotter")
    pod = daemonset["spec"]["template"]["spec"]
    if spec.snapshotter.node_selector:
        pod["nodeSelector"] = dict(spec.snapshotter.node_selector)
    pod["tolerations"] = [dict(t) for t in spec.snapshotter.tolerations]
    if spec.snapshotter.resources:
        pod["containers"][0]["resources"] = spec.snapshotter.resources.as_kubernetes()
    return objects


def _replicas_and_resources(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    for name, settings in (
        ("rok-registry", spec.registry),
        ("rok-pipeline-watcher", spec.pipeline_watcher),
        ("rok-restorer", spec.restorer),
    ):
        deployment = _named(objects, "Deployment", name)
        if settings.replicas is not None:
            deployment["spec"]["replicas"] = settings.replicas
        if settings.resources:
            deployment["spec"]["template"]["spec"]["containers"][0]["resources"] = settings.resources.as_kubernetes()
    return objects


def _step_guard(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    watcher = _named(objects, "Deployment", "rok-pipeline-watcher")
    if not spec.step_guard.enabled:
        _set_env(watcher["spec"]["template"]["spec"]["containers"][0], "ROK_WEBHOOK", "false")
        return [o for o in objects if o["kind"] != "MutatingWebhookConfiguration"]
    if spec.step_guard.namespaces:
        (config,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
        for webhook in config["webhooks"]:
            webhook["namespaceSelector"] = {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(spec.step_guard.namespaces)}
                ]
            }
    return objects


def _traces(objects: list[Obj], spec: RokClusterSpec) -> list[Obj]:
    collector = _named(objects, "Deployment", "rok-otel-collector")
    for container in collector["spec"]["template"]["spec"]["containers"]:
        for item in container.get("env", []):
            if item["name"] == "TRACES_OTLP_ENDPOINT":
                item["value"] = spec.observability.traces_endpoint
    return objects


def _owned(obj: Obj, owner: Owner) -> Obj:
    meta = obj["metadata"]
    meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY, CLUSTER_LABEL: owner.name}
    if obj["kind"] == "Namespace":
        meta.setdefault("annotations", {})[RETAIN_ANNOTATION] = "true"
    if not is_retained(obj):
        meta["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return obj
