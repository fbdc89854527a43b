"""What the snapshots reference: the trees each snapshot reaches and the chunks they use (read by check and gc).

Trees are content-addressed and shared: each is read and scanned once, however many snapshots reach it.
"""

from __future__ import annotations

from collections import defaultdict

from rokstore.errors import CorruptData, MissingBlob, ObjectNotFound
from rokstore.models import Problem
from rokstore.repository.manifest import Entry, chunk_ids
from rokstore.repository.repository import Repository


async def load_references(
    repo: Repository, *, skip: set[str] | frozenset[str] = frozenset()
) -> tuple[list[str], dict[bytes, set[str]], list[Problem]]:
    """Snapshot ids, blob (tree or chunk) -> snapshots using it, and problems with records or trees; the
    snapshots in ``skip`` are left out (gc is about to remove them, or would)."""
    problems: list[Problem] = []
    users: dict[bytes, set[str]] = defaultdict(set)
    trees: dict[bytes, list[Entry]] = {}
    uses: dict[bytes, list[bytes]] = {}  # tree -> the chunks its entries hold
    ids = [sid for sid in await repo.snapshot_ids() if sid not in skip]
    await repo.load_index()  # as stored now: trees are found through it
    for sid in ids:
        try:
            record = await repo.load_record(sid)
            reached = await repo.load_tree_closure(bytes.fromhex(record.tree), trees, from_storage=True)
        except MissingBlob as error:
            problems.append(Problem("missing-tree", error.blob.hex(), f"snapshot {sid[:12]}: {error}", [sid]))
            continue
        except ObjectNotFound as error:
            problems.append(Problem("missing-tree", error.key, f"snapshot {sid[:12]} lost {error.key}", [sid]))
            continue
        except CorruptData as error:
            problems.append(Problem("corrupt-tree", sid, str(error), [sid]))
            continue
        for tree_id, entries in reached.items():
            chunks = uses.get(tree_id)
            if chunks is None:
                chunks = uses[tree_id] = [c for entry in entries for c in chunk_ids(entry)]
            users[tree_id].add(sid)
            for chunk in chunks:
                users[chunk].add(sid)
    return ids, users, problems
