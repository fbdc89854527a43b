"""The cluster's bus has users: nats-server reads the table of rokcommon.permissions, with each password from a
Secret, and every rok workload connects as its own user with the password of that same Secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from rokcommon import permissions

from .manifests import OVERLAYS, find, one, render

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_USERS = {
    ("Deployment", "rok-pipeline-watcher"): permissions.WATCHER,
    ("Deployment", "rok-registry"): permissions.REGISTRY,
    ("Deployment", "rok-restorer"): permissions.RESTORER,
    ("DaemonSet", "rok-snapshotter"): permissions.SNAPSHOTTER,
}


def test_the_nats_users_file_is_the_permissions_table() -> None:
    current = (ROOT / "deploy/base/nats/auth.conf").read_text()
    assert current == permissions.render_cluster(), (
        "deploy/base/nats/auth.conf is out of date: regenerate it with "
        "`python -c 'from rokcommon import permissions; print(permissions.render_cluster(), end=\"\")'`"
    )


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret(entry: dict) -> str:
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "password"
    return ref["name"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_component_connects_as_its_own_user_with_the_password_nats_server_checks(overlay: str) -> None:
    objects = render(OVERLAYS[overlay])
    (config,) = [c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("rok-nats-config")]
    assert "include ./auth.conf" in config["data"]["nats.conf"]
    assert config["data"]["auth.conf"] == permissions.render_cluster()
    nats = one(objects, "StatefulSet", "rok-nats")
    (server,) = [c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
    server_env = _env(server)
    for user in permissions.CLUSTER_USERS:
        assert _secret(server_env[permissions.password_variable(user)]) == f"rok-nats-{user}"
    for (kind, name), user in WORKLOAD_USERS.items():
        workload = one(objects, kind, name)
        (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] != "metrics"][:1]
        env = _env(container)
        assert env["ROK_NATS_USER"]["value"] == user, name
        assert _secret(env["ROK_NATS_PASSWORD"]) == f"rok-nats-{user}", name
    watcher = _env(one(objects, "Deployment", "rok-pipeline-watcher")["spec"]["template"]["spec"]["containers"][0])
    assert _secret(watcher["ROK_GUARD_NATS_PASSWORD"]) == "rok-nats-guard"
