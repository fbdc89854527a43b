"""The operator renders the prod overlay from the overlay itself, and what it renders, for any spec, is valid
Kubernetes; its own manifests (deploy/operator) are valid, and its CRD's schema says what its spec model says."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import SchemaNotFoundError, validate
from rok_operator import rendering
from rok_operator.bundle import objects as bundled
from rok_operator.settings import OperatorSettings
from rok_operator.spec import InvalidSpec, RokClusterSpec, parse

from . import crds
from .manifests import DEPLOY, OVERLAYS, find, one, render
from .test_manifests import KUBERNETES_VERSIONS

OPERATOR = DEPLOY / "operator"
OWNER = rendering.Owner("rok", "0b7c3c84-4d8e-4a8e-9f53-8b4f5a1f6c11")
CRD = yaml.safe_load((OPERATOR / "crd.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLE = yaml.safe_load((OPERATOR / "rokcluster.yaml").read_text())

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "example": EXAMPLE["spec"],
    "embedded database, one NATS server": {"database": {"type": "embedded"}, "registry": {"replicas": 1},
                                           "bus": {"replicas": 1}},
    "external NATS, no step guard": {"bus": {"externalURL": "nats://nats.example.org:4222"},
                                     "stepGuard": {"enabled": False}},
    "five NATS servers, pinned snapshotters, own images": {
        "bus": {"replicas": 5},
        "snapshotter": {"nodeSelector": {"rok.kubeflow.org/volumes": "true"}, "tolerations": [],
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}},
        "images": {"registry": "registry.example.org/", "version": "0.2.0"},
        "stepGuard": {"namespaces": ["kubeflow-user-a", "kubeflow-user-b"]},
        "pipelineWatcher": {"replicas": 3},
        "store": {"secretName": "team-s3"},
        "observability": {"tracesEndpoint": "otel.monitoring:4317"},
    },
}  # fmt: skip


def _strip_ownership(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta.pop("ownerReferences", None)
    for label in (rendering.CLUSTER_LABEL, *rendering.MANAGED_BY):
        meta["labels"].pop(label, None)
    if not meta["labels"]:
        del meta["labels"]
    meta.get("annotations", {}).pop(rendering.RETAIN_ANNOTATION, None)
    if meta.get("annotations") == {}:
        del meta["annotations"]
    return obj


def test_the_operators_manifests_are_what_kustomize_renders_of_the_prod_overlay_now():
    assert tuple(bundled()) == render(OVERLAYS["prod"]), "run `make manifests`: deploy/ changed since"


def test_a_rokcluster_with_the_defaults_renders_exactly_the_prod_overlay():
    rendered = rendering.render(RokClusterSpec(), OWNER)
    assert [_strip_ownership(o) for o in rendered] == list(render(OVERLAYS["prod"]))


def _changed_objects() -> list[tuple[str, dict[str, Any]]]:
    """(spec, object) for every rendered object that is not an object of the prod overlay (those are validated by
    test_manifests), once each, and one owned object (for the ownership metadata the operator adds)."""
    overlay = list(render(OVERLAYS["prod"]))
    seen: list[dict[str, Any]] = []
    found = []
    for name, spec in SPECS.items():
        for obj in rendering.render(parse(spec), OWNER):
            if (_strip_ownership(obj) in overlay and found) or obj in seen:
                continue
            seen.append(obj)
            found.append((name, obj))
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(version: str):
    changed = _changed_objects()
    assert len(changed) > 10, "the specs under test change too little of the overlay"
    for name, obj in changed:
        try:
            validate(obj, version, strict=True)
        except SchemaNotFoundError:
            crds.validate(obj)
        except Exception as error:
            raise AssertionError(f"{name}: {obj['kind']}/{obj['metadata']['name']} is invalid: {error}") from None


def test_the_example_says_what_the_defaults_say():
    assert parse(EXAMPLE["spec"]) == RokClusterSpec()


def test_every_child_is_owned_but_the_namespace_and_the_databases_volume():
    rendered = rendering.render(parse(SPECS["embedded database, one NATS server"]), OWNER)
    kept = {(o["kind"], o["metadata"]["name"]) for o in rendered if not o["metadata"].get("ownerReferences")}
    assert kept == {("Namespace", "rok"), ("PersistentVolumeClaim", rendering.SQLITE_CLAIM)}
    for obj in rendered:
        assert obj["metadata"]["labels"][rendering.CLUSTER_LABEL] == "rok"


def test_the_embedded_database_lives_on_its_own_volume_that_the_registry_can_write():
    rendered = tuple(rendering.render(parse(SPECS["embedded database, one NATS server"]), OWNER))
    registry = one(rendered, "Deployment", "rok-registry")
    pod = registry["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "database"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ROK_DATABASE_URL"] == {
        "name": "ROK_DATABASE_URL",
        "value": f"sqlite:///{mount['mountPath']}/registry.db",
    }
    assert pod["securityContext"]["fsGroup"] == 10001
    assert registry["spec"]["replicas"] == 1 and registry["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(rendered, "PodDisruptionBudget", "rok-registry"), "a budget of one replica would block drains"
    (config,) = [c for c in find(rendered, "ConfigMap") if c["metadata"]["name"].startswith("rok-nats-config-")]
    assert "cluster {" not in config["data"]["nats.conf"], "one NATS server routes to no other"


def test_the_spec_reaches_the_objects_it_names():
    rendered = tuple(rendering.render(parse(SPECS["five NATS servers, pinned snapshotters, own images"]), OWNER))
    daemonset = one(rendered, "DaemonSet", "rok-snapshotter")["spec"]["template"]["spec"]
    assert daemonset["nodeSelector"] == {"rok.kubeflow.org/volumes": "true"}
    assert daemonset["tolerations"] == []
    assert daemonset["containers"][0]["resources"]["limits"] == {"memory": "2Gi"}
    assert daemonset["containers"][0]["image"] == "registry.example.org/rok/snapshotter:0.2.0"
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in daemonset["containers"][0]["env"] if "valueFrom" in e
               and "secretKeyRef" in e["valueFrom"]}  # fmt: skip
    assert "team-s3" in secrets and "rok-s3" not in secrets
    (config,) = [c for c in find(rendered, "ConfigMap") if c["metadata"]["name"].startswith("rok-nats-config-")]
    assert "nats://rok-nats-4.rok-nats-headless:6222" in config["data"]["nats.conf"]
    (webhook,) = one(rendered, "MutatingWebhookConfiguration", "rok-step-guard")["webhooks"]
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kubeflow-user-a", "kubeflow-user-b"]
    collector = one(rendered, "Deployment", "rok-otel-collector")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "TRACES_OTLP_ENDPOINT", "value": "otel.monitoring:4317"} in collector["env"]


def test_an_external_bus_runs_no_nats_and_lets_the_services_reach_it():
    rendered = tuple(rendering.render(parse(SPECS["external NATS, no step guard"]), OWNER))
    assert not find(rendered, "StatefulSet") and not find(rendered, "MutatingWebhookConfiguration")
    assert not [c for c in find(rendered, "ConfigMap") if c["metadata"]["name"].startswith("rok-nats-config")]
    containers = [c for w in rendering.workloads(list(rendered)) for c in w["spec"]["template"]["spec"]["containers"]]
    for container in [c for c in containers if c["image"].startswith("rok/")]:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["ROK_NATS_URL"] == "nats://nats.example.org:4222"
    registry = one(rendered, "NetworkPolicy", "rok-registry")
    assert {"ports": [{"port": 4222, "protocol": "TCP"}]} in registry["spec"]["egress"]


# --- the operator's own manifests -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_operators_manifests_validate_against_the_kubernetes_schemas(version: str):
    objects = render(OPERATOR)
    assert {o["kind"] for o in objects} >= {"CustomResourceDefinition", "Deployment", "ClusterRole", "Role"}
    for obj in objects:
        validate(obj, version, strict=True)


def test_the_operator_runs_under_its_own_account_with_the_settings_it_reads():
    objects = render(OPERATOR)
    deployment = one(objects, "Deployment", "rok-operator")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rok-operator"
    one(objects, "ServiceAccount", "rok-operator")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    known = {f"ROK_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= known, f"the operator reads no {sorted(set(env) - known)}"
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["ROK_HEALTH_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crds.strict(SCHEMA))


def test_the_example_rokcluster_is_valid_by_the_crd_and_by_the_spec_model():
    _validator().validate(EXAMPLE)
    parse(EXAMPLE["spec"])


def _schema_fields(schema: dict[str, Any], prefix: str = "") -> set[str]:
    found = set()
    for name, sub in schema.get("properties", {}).items():
        found.add(prefix + name)
        found |= _schema_fields(sub, f"{prefix}{name}.")
    return found


def _model_fields(model: Any, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    found = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        found.add(prefix + key)
        annotation = info.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found |= _model_fields(candidate, f"{prefix}{key}.")
    return found


def test_the_crds_schema_and_the_spec_model_have_the_same_fields():
    assert _schema_fields(SCHEMA["properties"]["spec"]) == _model_fields(RokClusterSpec)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"bus": {"replicas": 0}}, "spec.bus.replicas"),
        ({"bus": {"externalURL": "http://nats:4222"}}, "spec.bus.externalURL"),
        ({"database": {"type": "mysql"}}, "spec.database.type"),
        ({"store": {"secretName": "Not_A_Name"}}, "spec.store.secretName"),
        ({"images": {"registry": "registry.example.org"}}, "spec.images.registry"),
        ({"snapshotter": {"nodeSelectors": {}}}, "spec.snapshotter"),
    ],
)
def test_an_invalid_spec_is_refused_by_the_schema_and_the_model_naming_the_field(spec: dict[str, Any], field: str):
    errors = list(_validator().iter_errors({**EXAMPLE, "spec": spec}))
    assert errors, f"the CRD's schema accepts {spec}"
    assert any(".".join(map(str, e.absolute_path)).startswith(field) for e in errors), [e.message for e in errors]
    with pytest.raises(InvalidSpec, match=field.replace(".", r"\.")):
        parse(spec)


def test_what_only_the_model_can_say_is_refused_naming_the_field():
    with pytest.raises(InvalidSpec, match=r"spec\.bus\.replicas: .*odd"):
        parse({"bus": {"replicas": 4}})
    with pytest.raises(InvalidSpec, match=r"spec\.registry\.replicas"):
        parse({"database": {"type": "embedded"}, "registry": {"replicas": 3}})


def test_every_operator_setting_is_documented_with_its_default():
    import re

    doc = (DEPLOY.parent / "docs" / "operations.md").read_text()
    section = doc[doc.index("### operator (`rok_operator.settings.OperatorSettings`)") :]
    section = section[: section.index("\n### ", 1)]
    for name, field in OperatorSettings.model_fields.items():
        default = "(none)" if field.default is None else f"`{field.default}`"
        assert re.search(rf"^\| `ROK_{name.upper()}` \| {re.escape(default)} \|", section, flags=re.M), name
