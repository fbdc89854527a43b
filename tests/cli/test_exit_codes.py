"""The README's exit codes, walked command by command against the running system (and a real store).

README.md, "Every command takes --json …": 0 done; 1 it failed; 2 a usage error; 3 `rok status`: not everything
runs; 4 not found, or another namespace's; 75 the bus, the registry or the object store did not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from roktesting.ports import free_port

from .stack import Stack

DONE, FAILED, USAGE, NOT_ALL_RUNNING, NOT_FOUND, NO_ANSWER = 0, 1, 2, 3, 4, 75


@dataclass(frozen=True)
class Case:
    """``rok ARGS`` (built from the stack and a fresh directory), with some settings replaced, and its exit code."""

    args: Callable[[Stack, Path], list[str]]
    code: int
    env: Callable[[Stack, Path], dict[str, str]] = lambda stack, tmp: {}


def _url(stack: Stack, step: str = "prepare", phase: str = "after") -> str:
    return stack.committed[(step, phase)].url


def _unknown(stack: Stack) -> str:
    return _url(stack).split("?")[0] + "?version=zzzz0000"


def _elsewhere(stack: Stack) -> str:
    return _url(stack).replace("rok://local/", "rok://someone-else/")


def _bucket(stack: Stack) -> str:
    return _url(stack).split("//")[1].split("/")[1]


def _no_bus(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}"}


def _nothing_runs(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"ROK_STATE_DIR": str(tmp / "state"), "ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}"}


def _repo(tmp: Path) -> str:
    return (tmp / "repo").as_uri()


def _made_repo(stack: Stack, tmp: Path) -> str:
    assert stack.rok("repo", "init", "--repo", _repo(tmp)).code == 0
    return _repo(tmp)


def _full_dir(tmp: Path) -> str:
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("mine")
    return str(tmp / "full")


def _unreachable_s3(stack: Stack, tmp: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "rok",
        "AWS_SECRET_ACCESS_KEY": "rok-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _pipeline(tmp: Path) -> str:
    (tmp / "ws").mkdir()
    (tmp / "pipeline.yaml").write_text(
        f"pipeline: p\nexperiment: e\nvolumes:\n  - name: workspace\n    path: {tmp / 'ws'}\n"
        "steps:\n  - name: one\n    run: 'true'\n"
    )
    return str(tmp / "pipeline.yaml")


CASES: dict[str, Case] = {
    # rok version / completion
    "version": Case(lambda s, t: ["version"], DONE),
    "--version": Case(lambda s, t: ["--version"], DONE),
    "completion bash": Case(lambda s, t: ["completion", "bash"], DONE),
    "completion of an unknown shell": Case(lambda s, t: ["completion", "tcsh"], USAGE),
    "an unknown command": Case(lambda s, t: ["frobnicate"], USAGE),
    # rok up / status / down
    "up while everything runs": Case(lambda s, t: ["up", "--json"], DONE),
    "status while everything runs": Case(lambda s, t: ["status", "--json"], DONE),
    "status while nothing runs": Case(lambda s, t: ["status", "--json"], NOT_ALL_RUNNING, _nothing_runs),
    "down while nothing runs": Case(lambda s, t: ["down"], DONE, _nothing_runs),
    # rok ls
    "ls": Case(lambda s, t: ["ls", "--json"], DONE),
    "ls of a bucket": Case(lambda s, t: ["ls", _bucket(s), "--json"], DONE),
    "ls of a run's KFP run id": Case(lambda s, t: ["ls", s.run_id, "--json"], DONE),
    "ls of an unknown bucket or run": Case(lambda s, t: ["ls", "no-such-bucket"], NOT_FOUND),
    "ls with a bad option": Case(lambda s, t: ["ls", "--bogus"], USAGE),
    "ls without a bus": Case(lambda s, t: ["ls"], NO_ANSWER, _no_bus),
    # rok show
    "show": Case(lambda s, t: ["show", _url(s), "--json"], DONE),
    "show of an unknown version": Case(lambda s, t: ["show", _unknown(s)], NOT_FOUND),
    "show of another namespace's version": Case(lambda s, t: ["show", _elsewhere(s)], NOT_FOUND),
    "show of a malformed URL": Case(lambda s, t: ["show", "http://not-a-rok-url"], USAGE),
    "show without a bus": Case(lambda s, t: ["show", _url(s)], NO_ANSWER, _no_bus),
    # rok restore
    "restore": Case(lambda s, t: ["restore", _url(s), "--to", str(t / "out"), "--json"], DONE),
    "restore of an unknown version": Case(lambda s, t: ["restore", _unknown(s), "--to", str(t / "out")], NOT_FOUND),
    "restore of an unknown volume": Case(
        lambda s, t: ["restore", _url(s), "--to", str(t / "out"), "--volume", "nope"], NOT_FOUND
    ),
    "restore of another namespace's version": Case(
        lambda s, t: ["restore", _elsewhere(s), "--to", str(t / "out")], NOT_FOUND
    ),
    "restore into a non-empty directory": Case(lambda s, t: ["restore", _url(s), "--to", _full_dir(t)], FAILED),
    "restore of a malformed URL": Case(lambda s, t: ["restore", "rok:/x", "--to", str(t / "out")], USAGE),
    "restore without --to": Case(lambda s, t: ["restore", _url(s)], USAGE),
    "restore without a bus": Case(lambda s, t: ["restore", _url(s), "--to", str(t / "out")], NO_ANSWER, _no_bus),
    # rok diff
    "diff": Case(lambda s, t: ["diff", _url(s, "train", "before"), _url(s, "train", "after"), "--json"], DONE),
    "diff with an unknown version": Case(lambda s, t: ["diff", _url(s), _unknown(s)], NOT_FOUND),
    "diff of a malformed URL": Case(lambda s, t: ["diff", _url(s), "nope"], USAGE),
    "diff without a bus": Case(lambda s, t: ["diff", _url(s), _url(s)], NO_ANSWER, _no_bus),
    # rok dlq
    "dlq ls": Case(lambda s, t: ["dlq", "ls", "--json"], DONE),
    "dlq show of an unknown letter": Case(lambda s, t: ["dlq", "show", "999999"], NOT_FOUND),
    "dlq show of a malformed id": Case(lambda s, t: ["dlq", "show", "first"], USAGE),
    "dlq replay of an unknown letter": Case(lambda s, t: ["dlq", "replay", "999999"], NOT_FOUND),
    "dlq replay without an id, --all or --subject": Case(lambda s, t: ["dlq", "replay"], USAGE),
    "dlq replay --subject with nothing to replay": Case(
        lambda s, t: ["dlq", "replay", "--subject", "rok.none.v1", "--json"], DONE
    ),
    "dlq ls without a bus": Case(lambda s, t: ["dlq", "ls"], NO_ANSWER, _no_bus),
    # rok repo / rok snapshot: the store engine alone
    "repo init": Case(lambda s, t: ["repo", "init", "--repo", _repo(t)], DONE),
    "repo init of an existing repository": Case(lambda s, t: ["repo", "init", "--repo", _made_repo(s, t)], FAILED),
    "repo check": Case(lambda s, t: ["repo", "check", "--repo", _made_repo(s, t)], DONE),
    "repo check of no repository": Case(lambda s, t: ["repo", "check", "--repo", _repo(t)], NOT_FOUND),
    "repo check of an unsupported URL": Case(lambda s, t: ["repo", "check", "--repo", "ftp://x/y"], USAGE),
    "repo check of an unreachable S3": Case(
        lambda s, t: ["repo", "check", "--repo", "s3://bucket/rok"], NO_ANSWER, _unreachable_s3
    ),
    "repo gc": Case(lambda s, t: ["repo", "gc", "--repo", _made_repo(s, t), "--dry-run"], DONE),
    "snapshot create": Case(lambda s, t: ["snapshot", "create", str(t), "--repo", _made_repo(s, t)], DONE),
    "snapshot ls": Case(lambda s, t: ["snapshot", "ls", "--repo", _made_repo(s, t)], DONE),
    "snapshot ls without --repo or ROK_REPOSITORY": Case(lambda s, t: ["snapshot", "ls"], USAGE),
    "snapshot restore of an unknown snapshot": Case(
        lambda s, t: ["snapshot", "restore", "deadbeef", "--repo", _made_repo(s, t), "--to", str(t / "out")], NOT_FOUND
    ),
    "snapshot diff of unknown snapshots": Case(
        lambda s, t: ["snapshot", "diff", "deadbeef", "cafebabe", "--repo", _made_repo(s, t)], NOT_FOUND
    ),
    # rok run / rok guard (contributed by the pipeline-watcher)
    "run of a missing pipeline file": Case(lambda s, t: ["run", str(t / "missing.yaml")], USAGE),
    "run without a bus": Case(lambda s, t: ["run", _pipeline(t)], NO_ANSWER, _no_bus),
    "run of volumes the snapshotter may not read": Case(
        lambda s, t: ["run", _pipeline(t)], USAGE, lambda s, t: {"ROK_VOLUME_ROOTS": str(t / "elsewhere")}
    ),
    "guard with an unknown subcommand": Case(lambda s, t: ["guard", "frobnicate"], USAGE),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_command_exits_with_the_readme_code(name: str, stack: Stack, tmp_path: Path) -> None:
    case = CASES[name]
    result = stack.rok(*case.args(stack, tmp_path), **case.env(stack, tmp_path))
    assert result.code == case.code, f"rok {name}: exit {result.code}, not {case.code}; stderr: {result.err}"
    if case.code in (FAILED, NOT_FOUND, NO_ANSWER):  # an expected failure is one line, never a traceback
        assert result.err.startswith("rok: error:"), result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
