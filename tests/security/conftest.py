"""The attacker suite's stage (tests/security/stage.py), started once per test module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from rok_registry.main import build as build_registry
from rok_registry.settings import RegistrySettings
from rok_restorer.main import build as build_restorer
from rok_restorer.settings import RestorerSettings
from rokcommon import bus, permissions, streams
from roktesting.kubeflow import add_contributor, add_profile, install_profile_roles
from roktesting.kubernetes import FakeKube
from roktesting.nats import ADMIN, UsersNats, running
from roktesting.ports import free_port

from .stage import ALICE, BOB, CAROL, HOST, TEAM_A, TEAM_B, Stage, eventually, recorded_run

RUNS = {
    TEAM_A: dict(uid="wf-a", experiment="alpha-secret-experiment", run_name="alpha-nightly", step="alpha-train"),
    TEAM_B: dict(uid="wf-b", experiment="bravo-secret-experiment", run_name="bravo-nightly", step="bravo-train"),
}


@pytest.fixture(scope="module")
def kubeflow() -> FakeKube:
    kube = FakeKube().start()
    install_profile_roles(kube)
    add_profile(kube, TEAM_A, ALICE)
    add_profile(kube, TEAM_B, BOB)
    add_contributor(kube, TEAM_A, CAROL, "kubeflow-view")
    yield kube
    kube.stop()


@pytest.fixture(scope="module")
def cluster_nats(tmp_path_factory: pytest.TempPathFactory) -> UsersNats:
    """A nats-server with the cluster's users and permissions, as deploy/base/nats/auth.conf has them."""
    server = UsersNats(tmp_path_factory.mktemp("nats-cluster"), permissions.table(permissions.CLUSTER_USERS))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stage(
    kubeflow: FakeKube, cluster_nats: UsersNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stage]:
    root = tmp_path_factory.mktemp("security")
    common = dict(
        nats_url=cluster_nats.url,
        auth="cluster",
        kube="kubeconfig",
        kubeconfig=kubeflow.write_kubeconfig(root / "kubeconfig"),
        access_cache_seconds=0.0,  # every check asks the API server: a cached answer could hide a wrong one
        log_format="text",
        retry_delay=0.2,
        ack_wait=5.0,
        max_deliver=3,
    )
    registry = build_registry(
        RegistrySettings(
            **common,
            state_dir=root / "registry",
            nats_user=permissions.REGISTRY,
            nats_password=cluster_nats.passwords[permissions.REGISTRY],
            registry_port=free_port(),
            registry_hosts=HOST,
            namespace=TEAM_A,
        ),
        graceful_timeout=2.0,
    )
    restorer = build_restorer(
        RestorerSettings(
            **common,
            state_dir=root / "restorer",
            nats_user=permissions.RESTORER,
            nats_password=cluster_nats.passwords[permissions.RESTORER],
        )
    )
    admin = await cluster_nats.connect(ADMIN)
    async with contextlib.AsyncExitStack() as stack:
        await registry.start_storage()
        stack.push_async_callback(registry.stop_storage)
        await stack.enter_async_context(running(registry.service))
        await stack.enter_async_context(running(restorer))
        js = admin.jetstream()
        await streams.ensure_streams(js)
        staged = Stage(kubeflow, cluster_nats, registry, admin)
        for namespace, run in RUNS.items():
            for event in recorded_run(namespace, **run):
                await bus.publish(js, event)
        for namespace in RUNS:
            staged.versions[namespace] = await eventually(lambda ns=namespace: _three_versions(registry, ns))
        yield staged
    await admin.close()


async def _three_versions(registry: object, namespace: str) -> list:
    queries = registry.queries  # type: ignore[attr-defined]
    buckets = await queries.list_buckets(namespace)
    if not buckets:
        return []
    files = await queries.list_files(namespace, buckets[0].name)
    if not files:
        return []
    versions = await queries.list_versions(namespace, buckets[0].name, files[0].name)
    return versions if len(versions) == 3 and all(v.committed for v in versions) else []
