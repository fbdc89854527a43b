"""The environment variables the manifests set are exactly those the services read: every `ROK_*` variable is
a field of the service's settings (pydantic-settings, prefix `ROK_`), and every setting a cluster must give
(the bus, the node, the repository, the database) is given."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import pytest
from pydantic_settings import BaseSettings
from rokcommon.settings import RokSettings

from .manifests import OVERLAYS, ROOT, SERVICES, render, rok_containers

# Settings a service cannot do without in a cluster (their one-machine defaults point at this machine).
REQUIRED = {
    "pipeline-watcher": {
        "ROK_NATS_URL",
        "ROK_KUBE",
        "ROK_LEADER_ELECTION",
        "ROK_LEASE_NAMESPACE",
        "ROK_POD_NAME",
        "ROK_WEBHOOK",
        "ROK_GUARD_IMAGE",
    },
    "snapshotter": {"ROK_NATS_URL", "ROK_NODE_NAME", "ROK_REPOSITORY"},
    "registry": {"ROK_NATS_URL", "ROK_DATABASE_URL", "ROK_REGISTRY_HOST"},
    "restorer": {"ROK_NATS_URL", "ROK_REPOSITORY"},
}
# Variables read by libraries, not by rok's settings: OpenTelemetry's (read in rokcommon.telemetry and by the
# OTLP exporter) and the AWS SDK's (botocore: credentials, region, endpoint).
LIBRARY_VARIABLES = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}


def settings_classes(service: str) -> list[type[BaseSettings]]:
    """The settings classes the service's package defines (RokSettings itself when it defines none yet)."""
    package, directory = SERVICES[service]
    found = []
    for module_info in pkgutil.iter_modules([str(directory)]):
        if module_info.name == "__main__":
            continue
        module = importlib.import_module(f"{package}.{module_info.name}")
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseSettings) and cls.__module__ == module.__name__
        ]
    return found or [RokSettings]


def settings_variables(classes: list[type[BaseSettings]]) -> set[str]:
    names = set()
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            names.add((alias or f"{prefix}{name}").upper())
    return names


def setting_value(service: str, overlay: str, field: str) -> object:
    """The value a setting takes in the overlay: the manifest's literal value, else the settings default."""
    for _, container in rok_containers(render(OVERLAYS[overlay])):
        if container["name"] != service:
            continue
        for env in container.get("env", []):
            if env["name"] == f"ROK_{field.upper()}" and "value" in env:
                return env["value"]
    for cls in settings_classes(service):
        if field in cls.model_fields:
            return cls.model_fields[field].get_default(call_default_factory=True)
    raise KeyError(f"{service} has no setting {field}")


def directly_read_variables(service: str) -> set[str]:
    """`ROK_*` variables the code reads with os.environ / os.getenv (rokcommon and the service)."""
    names = set()
    for source in (ROOT / "libs" / "rokcommon" / "src", SERVICES[service][1]):
        for path in source.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ROK_"):
                    names.add(node.value)
    return names


def referenced_variables(overlay: str, service: str) -> set[str]:
    """Variables another variable of the container names as ``$(NAME)`` (Kubernetes expands them)."""
    import re

    found = set()
    for _, container in rok_containers(render(OVERLAYS[overlay])):
        if container["name"] == service:
            for env in container.get("env", []):
                found |= set(re.findall(r"\$\(([A-Z0-9_]+)\)", env.get("value", "")))
    return found


def manifest_variables(overlay: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for _, container in rok_containers(render(OVERLAYS[overlay])):
        assert not container.get("envFrom"), f"{container['name']}: name every variable (no envFrom)"
        found.setdefault(container["name"], set()).update(e["name"] for e in container.get("env", []))
    return found


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_rok_variable_in_the_manifests_is_a_setting_the_service_reads(overlay: str, service: str):
    variables = manifest_variables(overlay)[service]
    classes = settings_classes(service)
    readable = settings_variables(classes) | directly_read_variables(service)
    unread = {v for v in variables if v.startswith("ROK_")} - readable
    assert not unread, f"{overlay}: {service} sets {sorted(unread)}, which {[c.__name__ for c in classes]} lack"
    foreign = (
        {v for v in variables if not v.startswith("ROK_")} - LIBRARY_VARIABLES - referenced_variables(overlay, service)
    )
    assert not foreign, f"{overlay}: {service} sets {sorted(foreign)}, which nothing reads"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_setting_a_cluster_must_give_is_given(overlay: str, service: str):
    variables = manifest_variables(overlay)[service]
    missing = REQUIRED[service] - variables
    assert not missing, f"{overlay}: {service} lacks {sorted(missing)}"


def test_the_library_variables_are_read_where_this_test_says():
    telemetry = (ROOT / "libs" / "rokcommon" / "src" / "rokcommon" / "telemetry.py").read_text()
    for variable in ("OTEL_EXPORTER_OTLP_", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        assert variable in telemetry


def _container(overlay: str, service: str) -> tuple[dict, dict]:
    (found,) = [(w, c) for w, c in rok_containers(render(OVERLAYS[overlay])) if c["name"] == service]
    return found


def _ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_ports_the_manifests_open_are_the_ports_the_services_listen_on(overlay: str):
    _, registry = _container(overlay, "registry")
    assert _ports(registry)["http"] == int(setting_value("registry", overlay, "registry_port"))
    assert setting_value("registry", overlay, "registry_host") == "0.0.0.0"
    _, watcher = _container(overlay, "pipeline-watcher")
    assert _ports(watcher)["webhook"] == int(setting_value("pipeline-watcher", overlay, "webhook_port"))
    for service in ("pipeline-watcher", "snapshotter", "restorer"):
        _, container = _container(overlay, service)
        assert _ports(container)["health"] == int(str(setting_value(service, overlay, "health_port")))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_paths_the_settings_name_are_mounted(overlay: str):
    from pathlib import PurePosixPath

    _, watcher = _container(overlay, "pipeline-watcher")
    mounts = {m["mountPath"] for m in watcher["volumeMounts"]}
    for field in ("webhook_cert", "webhook_key"):
        assert str(PurePosixPath(str(setting_value("pipeline-watcher", overlay, field))).parent) in mounts
    _, snapshotter = _container(overlay, "snapshotter")
    mounts = {m["mountPath"]: m for m in snapshotter["volumeMounts"]}
    assert str(setting_value("snapshotter", overlay, "kubelet_pods_dir")) in mounts
    assert str(setting_value("snapshotter", overlay, "state_dir")) in mounts


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_snapshotter_gets_longer_to_stop_than_it_takes_to_finish_a_snapshot(overlay: str):
    workload, _ = _container(overlay, "snapshotter")
    grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(setting_value("snapshotter", overlay, "graceful_timeout"))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_images_named_in_settings_are_the_release_of_the_service_that_names_them(overlay: str):
    for service, field in (("pipeline-watcher", "guard_image"), ("restorer", "restore_image")):
        try:
            named = str(setting_value(service, overlay, field))
        except KeyError:
            continue
        _, container = _container(overlay, service)
        assert named.rpartition(":")[2] == container["image"].rpartition(":")[2], (
            f"{service}: {field} {named} is not the release of {container['image']}"
        )
