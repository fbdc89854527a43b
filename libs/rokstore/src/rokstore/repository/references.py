"""What the snapshots reference: which chunks each snapshot's manifest uses (read by check and gc)."""

from __future__ import annotations

from collections import defaultdict

from rokstore.errors import CorruptData, ObjectNotFound
from rokstore.models import Problem
from rokstore.repository.manifest import chunk_ids
from rokstore.repository.repository import Repository


async def load_references(repo: Repository) -> tuple[list[str], dict[bytes, set[str]], list[Problem]]:
    """Snapshot ids, chunk -> snapshots using it, and problems with records or manifests."""
    problems: list[Problem] = []
    users: dict[bytes, set[str]] = defaultdict(set)
    ids = await repo.snapshot_ids()
    for sid in ids:
        try:
            record = await repo.load_record(sid)
            entries = await repo.load_manifest(record["manifest"])
        except ObjectNotFound as error:
            problems.append(Problem("missing-manifest", error.key, f"snapshot {sid[:12]} lost {error.key}", [sid]))
            continue
        except CorruptData as error:
            problems.append(Problem("corrupt-manifest", sid, str(error), [sid]))
            continue
        for entry in entries:
            for chunk in chunk_ids(entry):
                users[chunk].add(sid)
    return ids, users, problems
