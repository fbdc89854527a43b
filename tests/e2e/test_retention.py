"""Forget, then reclaim: through the real services (each its own process) on S3 and PostgreSQL, a forget keeps the
last run, the pinned version and the versions tagged final and failed; ``gc`` asking the registry removes the
forgotten snapshots and reports the bytes it reclaimed, keeps a snapshot that was never recorded but is young;
and every kept version still restores byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rokcli.retention import RegistryCatalog
from rokcommon.errors import NotFound
from rokcommon.events import RestoreCompleted
from rokcommon.registry_client import RegistryClient
from rokcommon.registry_contract import KeepRules
from rokcommon.retention import RetentionClient
from rokcommon.urls import parse_url
from rokstore import collect_garbage, open_repository, snapshot

from .system import NAMESPACE, PipelineRun, System, tree

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def play(system: System, root: Path, name: str, outcome: str = "succeeded") -> PipelineRun:
    """A run of one step over two volumes; the step writes 2 MiB no other run holds."""
    workspace, data = root / name / "workspace", root / name / "data"
    workspace.mkdir(parents=True)
    data.mkdir()
    (workspace / "notebook.py").write_text(f"print({name!r})\n")
    (data / "input.csv").write_text("".join(f"{i},{name}\n" for i in range(2000)))
    run = PipelineRun(system, {"workspace": workspace, "data": data}, experiment="retention")
    await run.begin()
    await run.play_step("train", lambda: (workspace / "model.bin").write_bytes(os.urandom(2 << 20)), outcome)
    await run.end(outcome)
    return run


async def test_forgotten_versions_are_reclaimed_and_every_kept_version_still_restores(
    shared_system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = shared_system
    assert system.nc is not None
    first = await play(system, tmp_path, "first")
    failed = await play(system, tmp_path, "failed", outcome="failed")
    last = await play(system, tmp_path, "last")
    retention = RetentionClient(system.nc, NAMESPACE, requested_by="alice")
    registry = RegistryClient(system.nc, NAMESPACE)
    pinned = first.commits[("initial", "initial")].url
    await retention.pin(pinned)
    bucket = parse_url(pinned).bucket

    async def versions() -> dict[str, list[str]]:
        return {
            f.name: sorted(v.url for v in await registry.list_versions(bucket, f.name))
            for f in await registry.list_files(bucket)
        }

    everything = await versions()
    rules = KeepRules(keep_last=1)  # and final, failed: the defaults
    dry = await retention.forget(rules, bucket=bucket, dry_run=True)
    assert await versions() == everything
    done = await retention.forget(rules, bucket=bucket)
    assert (dry.versions_forgotten, done.versions_forgotten) == (3, 3)  # first: before; failed: initial, before
    kept = {
        "initial pinned": (first, ("initial", "initial")),
        "final": (first, ("train", "after")),
        "failed": (failed, ("train", "after")),
        **{f"last {step} {phase}": (last, (step, phase)) for step, phase in last.commits},
    }
    assert sorted(u for urls in (await versions()).values() for u in urls) == sorted(
        run.commits[key].url for run, key in kept.values()
    )
    for gone in (first.commits[("train", "before")].url, failed.commits[("initial", "initial")].url):
        with pytest.raises(NotFound):
            await registry.resolve(gone)

    # a snapshot the store holds that nobody recorded, taken just now: gc must leave it alone
    for name, value in system.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("ROK_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "f.txt").write_text("stray\n")
    async with await open_repository(system.env["ROK_REPOSITORY"]) as repo:
        stray = await snapshot(repo, tmp_path / "stray")
        report = await collect_garbage(repo, catalog=RegistryCatalog(system.nc))
        remaining = set(await repo.snapshot_ids())
    forgotten_snapshots = 2 + 4  # first's before (two volumes); failed's initial and before
    assert (report.snapshots_forgotten, report.orphans_removed, report.orphans_kept) == (forgotten_snapshots, 0, 1)
    assert report.bytes_freed > 0
    assert stray.snapshot_id in remaining

    # every kept version restores, byte for byte what its volumes held then
    for what, (run, key) in kept.items():
        target = tmp_path / "restored" / what.replace(" ", "-")
        outcome = await system.restore(run.commits[key].url, target)
        assert isinstance(outcome, RestoreCompleted), (what, outcome)
        for volume in ("workspace", "data"):
            assert tree(target / volume) == run.held[key][volume], (what, volume)
