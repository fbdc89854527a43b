"""``rok forget``, ``rok pin`` / ``rok unpin`` and ``rok repo gc --registry`` against ``rok up``: a dry run shows
what would go and forgets nothing, a pin keeps a run whatever the rules, the forget's snapshots leave the store
and the run's final version still restores; usage errors are exit 2."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from .stack import Stack, scripted_run, tree


def _run_in_own_bucket(stack: Stack, root: Path) -> Stack:
    """One more run of the stack's pipeline, over volumes of its own, in the experiment ``retention-cli``."""
    volumes = {"workspace": root / "workspace", "data": root / "data"}
    for path in volumes.values():
        path.mkdir(parents=True)
    played = dataclasses.replace(stack, volumes=volumes, held={}, committed={})
    asyncio.run(scripted_run(played, experiment="retention-cli"))
    return played


def test_forget_pin_and_gc_with_the_registry_remove_only_what_no_rule_keeps(
    stack: Stack, tmp_path: Path, target: Path
) -> None:
    first = _run_in_own_bucket(stack, tmp_path / "first")
    _run_in_own_bucket(stack, tmp_path / "second")
    final = first.committed[("train", "after")].url
    bucket = final.split("/")[3]
    run_url = final.split("?")[0]

    dry = stack.rok("forget", bucket, "--keep-last", "1", "--dry-run")
    assert dry.code == 0, dry.err
    assert "would forget 6 versions of 1 runs" in dry.out and run_url in dry.out
    listed = json.loads(stack.rok("ls", run_url, "--json").out)
    assert len(listed) == 7  # nothing went

    assert stack.rok("pin", run_url).out.strip() == f"pinned file {run_url}"
    pinned = json.loads(stack.rok("forget", bucket, "--keep-last", "1", "--json").out)
    assert pinned["versions_forgotten"] == 0
    assert stack.rok("unpin", run_url).code == 0
    done = json.loads(stack.rok("forget", bucket, "--keep-last", "1", "--json").out)
    assert (done["versions_forgotten"], done["snapshots_forgotten"], done["runs_removed"]) == (6, 12, 0)
    assert [v["url"] for v in json.loads(stack.rok("ls", run_url, "--json").out)] == [final]

    gc = stack.rok("repo", "gc", "--registry", "--json", ROK_REPOSITORY=(Path(stack.state_dir) / "repo").as_uri())
    assert gc.code == 0, gc.err
    report = json.loads(gc.out)
    assert (report["snapshots_forgotten"], report["orphans_removed"]) == (12, 0)

    restored = stack.rok("restore", final, "--to", str(target))
    assert restored.code == 0, restored.err
    for volume, held in first.held[("train", "after")].items():
        assert tree(target / volume) == held

    for usage, says in (
        (("forget", bucket), "give --keep-last N or --keep-within DURATION"),
        (("forget", "--keep-within", "a while"), "duration 'a while' is not a number and a unit"),
        (("forget", final, "--keep-last", "1"), "names a run: forget takes a bucket"),
    ):
        result = stack.rok(*usage)
        assert result.code == 2 and says in result.err, (usage, result.out, result.err)
