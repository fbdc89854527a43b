"""Every overlay renders with `kubectl kustomize`, and what it renders is valid Kubernetes and hangs together."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_validate import SchemaNotFoundError, latest_version, validate

from . import crds
from .manifests import ADDONS, NAMESPACE, OVERLAYS, ROOT, SERVICES, find, one, pod_specs, render, rok_containers

ALL = {**OVERLAYS, **{f"addons/{name}": path for name, path in ADDONS.items()}}
KUBERNETES_VERSIONS = ["1.32.0", latest_version()]


@pytest.mark.parametrize("name", sorted(ALL))
def test_overlay_renders(name: str):
    objects = render(ALL[name])
    assert objects, f"{name} renders nothing"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(ALL))
def test_every_rendered_object_validates_against_the_kubernetes_schemas(name: str, version: str):
    for obj in render(ALL[name]):
        kind = (obj["apiVersion"], obj["kind"])
        try:
            validate(obj, version, strict=True)
        except SchemaNotFoundError:
            assert kind in crds.SCHEMAS, f"{kind} has no schema: ship its CRD's schema in tests/deploy/fixtures"
            crds.validate(obj)
        except Exception as error:
            raise AssertionError(f"{name}: {obj['kind']}/{obj['metadata']['name']} is invalid: {error}") from None


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_every_namespaced_object_lands_in_the_rok_namespace(name: str):
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    }
    for obj in render(OVERLAYS[name]):
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_the_step_guard_webhook_calls_the_service_that_serves_it(name: str):
    objects = render(OVERLAYS[name])
    (config,) = find(objects, "MutatingWebhookConfiguration")
    for webhook in config["webhooks"]:
        ref = webhook["clientConfig"]["service"]
        service = one(objects, "Service", ref["name"])
        assert service["metadata"]["namespace"] == ref["namespace"]
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref.get("port", 443)]
        # The Service's target port is a container port of the pods it selects, in the workload that serves
        # the webhook handler at the path the configuration calls.
        selected = [
            (w, s)
            for w, s in pod_specs(objects)
            if w["metadata"]["namespace"] == service["metadata"]["namespace"]
            and service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {ref['name']} selects {len(selected)} workloads"
        _, spec = selected[0]
        ports = {p.get("name"): p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        target = port["targetPort"]
        assert target in ports or target in ports.values(), f"{ref['name']} targets {target}, pods have {ports}"
        assert ref["path"] in _webhook_routes("add_post"), f"the watcher serves no POST {ref['path']}"
        # Only KFP's pods, and rok being down never stops a pipeline.
        assert webhook["failurePolicy"] == "Ignore"
        assert webhook["objectSelector"] == {"matchExpressions": [{"key": "pipeline/runid", "operator": "Exists"}]}
        assert webhook["rules"][0]["resources"] == ["pods"]
        assert webhook["rules"][0]["operations"] == ["CREATE"]


def _webhook_routes(method: str) -> set[str]:
    """The paths the watcher's webhook server routes (`app.router.add_post("/mutate", …)`)."""
    import ast

    from .manifests import SERVICES

    source = (SERVICES["pipeline-watcher"][1] / "guard" / "webhook.py").read_text()
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == method
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_the_step_guards_reach_nats_by_a_name_that_resolves_from_any_namespace(name: str):
    objects = render(OVERLAYS[name])
    (nats,) = [s for s in find(objects, "Service", "rok-nats")]
    host = f"{nats['metadata']['name']}.{nats['metadata']['namespace']}.svc"
    for _, container in rok_containers(objects):
        (url,) = [e["value"] for e in container["env"] if e["name"] == "ROK_NATS_URL"]
        assert url == f"nats://{host}:{nats['spec']['ports'][0]['port']}", container["name"]


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_the_webhook_certificate_is_issued_for_the_service_and_its_ca_injected(name: str):
    objects = render(OVERLAYS[name])
    (config,) = find(objects, "MutatingWebhookConfiguration")
    namespace, _, certificate_name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].partition("/")
    certificate = one(objects, "Certificate", certificate_name)
    assert certificate["metadata"]["namespace"] == namespace
    ref = config["webhooks"][0]["clientConfig"]["service"]
    assert f"{ref['name']}.{ref['namespace']}.svc" in certificate["spec"]["dnsNames"]
    issuer = one(objects, certificate["spec"]["issuerRef"]["kind"], certificate["spec"]["issuerRef"]["name"])
    assert issuer["metadata"]["namespace"] == namespace
    # The serving pods mount the Secret that the Certificate fills.
    secrets = {
        v["secret"]["secretName"]
        for w, s in pod_specs(objects)
        if w["metadata"]["name"] == ref["name"]
        for v in s.get("volumes", [])
        if "secret" in v
    }
    assert certificate["spec"]["secretName"] in secrets


def test_dev_runs_one_replica_of_everything_and_its_own_postgresql():
    objects = render(OVERLAYS["dev"])
    for workload in find(objects, "Deployment") + find(objects, "StatefulSet"):
        assert workload["spec"].get("replicas", 1) == 1, workload["metadata"]["name"]
    one(objects, "StatefulSet", "rok-postgres")


def test_prod_runs_a_nats_cluster_of_three_with_file_storage_on_volumes():
    objects = render(OVERLAYS["prod"])
    nats = one(objects, "StatefulSet", "rok-nats")
    assert nats["spec"]["replicas"] == 3
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    container = nats["spec"]["template"]["spec"]["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    (config_map,) = [c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("rok-nats-config")]
    conf = config_map["data"]["nats.conf"]
    assert f"store_dir: {mount['mountPath']}" in conf
    headless = nats["spec"]["serviceName"]
    for i in range(3):
        assert f"nats://rok-nats-{i}.{headless}:6222" in conf
    assert not find(objects, "StatefulSet", "rok-postgres"), "prod uses an external PostgreSQL"


def test_prod_takes_s3_and_database_credentials_from_secrets_the_operator_creates():
    objects = render(OVERLAYS["prod"])
    rendered = {s["metadata"]["name"] for s in find(objects, "Secret")}
    referenced = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for _, container in rok_containers(objects)
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert {"rok-s3"} <= referenced
    assert not referenced & rendered, "prod must not ship credentials"


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_the_snapshotter_reads_the_kubelet_pods_of_its_node_read_only_on_every_node(name: str):
    daemonset = one(render(OVERLAYS[name]), "DaemonSet", "rok-snapshotter")
    spec = daemonset["spec"]["template"]["spec"]
    (host,) = [v for v in spec["volumes"] if v.get("hostPath", {}).get("path") == "/var/lib/kubelet/pods"]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == host["name"]]
    assert mount["readOnly"] is True
    assert mount["mountPropagation"] == "HostToContainer"
    env = {e["name"]: e for e in container["env"]}
    assert env["ROK_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_every_rok_service_runs_under_its_own_service_account(name: str):
    objects = render(OVERLAYS[name])
    accounts = {}
    for workload, container in rok_containers(objects):
        account = workload["spec"]["template"]["spec"].get("serviceAccountName", "default")
        accounts.setdefault(account, set()).add(container["name"])
        one(objects, "ServiceAccount", account)
    assert all(len(containers) == 1 for containers in accounts.values()), accounts
    assert len(accounts) == 4


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_the_watcher_has_two_replicas_in_prod_and_every_pod_a_network_policy(name: str):
    objects = render(OVERLAYS[name])
    watcher = one(objects, "Deployment", "rok-pipeline-watcher")
    assert watcher["spec"]["replicas"] == (2 if name == "prod" else 1)
    policies = find(objects, "NetworkPolicy")
    for workload, _ in pod_specs(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"].get("matchLabels")
            and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert own, f"{workload['metadata']['name']} has no NetworkPolicy of its own"
    (deny,) = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {} and p["spec"].get("ingress") == [] and p["spec"].get("egress") == []
    ]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def _routes(path: Path, method: str) -> set[str]:
    """The paths a module routes: ``@app.get("/x")`` (FastAPI) and ``router.add_get("/x", …)`` (aiohttp)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        name = getattr(node.func, "attr", "")
        if name in (method, f"add_{method}"):
            found.add(node.args[0].value)
    return found


HEALTH_ROUTES = _routes(ROOT / "libs" / "rokcommon" / "src" / "rokcommon" / "health.py", "get")
PROBE_PATHS = {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/livez"}


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_every_rok_container_is_probed_for_liveness_and_readiness_on_a_port_it_declares(name: str):
    for workload, container in rok_containers(render(OVERLAYS[name])):
        where = f"{workload['metadata']['name']}/{container['name']}"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert {"livenessProbe", "readinessProbe"} <= container.keys(), f"{where} lacks a probe"
        for probe, path in PROBE_PATHS.items():
            if probe not in container:
                continue
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{where}: {probe} asks {get['path']}, not {path}"
            assert get["port"] in ports, f"{where}: {probe} names port {get['port']!r}; it declares {sorted(ports)}"
            assert get.get("scheme", "HTTP") == "HTTP"
            if container["name"] == "registry":  # on its own web server
                assert get["port"] == "http"
                assert path in _routes(SERVICES["registry"][1] / "api.py", "get")
            else:  # on rokcommon's health server, where the service's settings put it
                assert ports[get["port"]] == int(env["ROK_HEALTH_PORT"]), where
                assert env["ROK_HEALTH_HOST"] == "0.0.0.0", f"{where}: the kubelet probes the pod's address"
                assert path in HEALTH_ROUTES


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_every_rok_container_names_its_node_pod_and_namespace_in_its_telemetry_resource(name: str):
    downward = {
        "k8s.node.name": "spec.nodeName",
        "k8s.pod.name": "metadata.name",
        "k8s.namespace.name": "metadata.namespace",
        "k8s.pod.uid": "metadata.uid",
    }
    for workload, container in rok_containers(render(OVERLAYS[name])):
        where = f"{workload['metadata']['name']}/{container['name']}"
        env = container.get("env", [])
        names = [e["name"] for e in env]
        attributes = next(e["value"] for e in env if e["name"] == "OTEL_RESOURCE_ATTRIBUTES")
        pairs = dict(pair.split("=", 1) for pair in attributes.split(","))
        assert pairs["k8s.container.name"] == container["name"], where
        for attribute, field_path in downward.items():
            reference = pairs[attribute]
            assert reference.startswith("$(") and reference.endswith(")"), f"{where}: {attribute}={reference}"
            variable = reference[2:-1]
            # Kubernetes expands $(VAR) only from variables defined before, in the same container
            assert names.index(variable) < names.index("OTEL_RESOURCE_ATTRIBUTES"), f"{where}: {variable}"
            (defined,) = [e for e in env if e["name"] == variable]
            assert defined["valueFrom"]["fieldRef"]["fieldPath"] == field_path, f"{where}: {variable}"
