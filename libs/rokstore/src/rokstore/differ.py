"""``diff``: which paths two snapshots of a repository hold differently.

The two snapshots' trees are walked side by side, level by level; a pair of subtrees with equal ids is equal
and never read. A directory is changed when its own entry is (its tree id aside).
"""

from __future__ import annotations

import asyncio

from rokstore.errors import ObjectNotFound, SnapshotNotFound
from rokstore.models import SnapshotDiff
from rokstore.repository import Repository
from rokstore.repository.manifest import Entry, SnapshotRecord
from rokstore.repository.trees import subtrees


async def diff(repo: Repository, a_id: str, b_id: str) -> SnapshotDiff:
    """Paths added, removed and changed from snapshot ``a_id`` to ``b_id`` (ids or unique prefixes of them)."""
    (a_full, a_record), (b_full, b_record) = await asyncio.gather(_record(repo, a_id), _record(repo, b_id))
    a_root = bytes.fromhex(a_record.tree)
    b_root = bytes.fromhex(b_record.tree)
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    pairs = [("", a_root, b_root)] if a_root != b_root else []
    only: list[tuple[str, bytes, list[str]]] = []  # whole subtrees that one side alone holds
    while pairs or only:
        trees = await repo.load_trees([t for _, a, b in pairs for t in (a, b)] + [t for _, t, _ in only])
        following: list[tuple[str, bytes, bytes]] = []
        below: list[tuple[str, bytes, list[str]]] = []
        for prefix, tree, out in only:
            for entry in trees[tree]:
                path = prefix + entry.path
                out.append(path)
                if entry.kind == "d" and entry.tree is not None:
                    below.append((path + "/", bytes.fromhex(entry.tree), out))
        for prefix, a, b in pairs:
            a_entries = {e.path: e for e in trees[a]}
            b_entries = {e.path: e for e in trees[b]}
            for name, entry in a_entries.items():
                path = prefix + name
                other = b_entries.get(name)
                if other is None:
                    removed.append(path)
                    below.extend((path + "/", t, removed) for t in subtrees([entry]))
                    continue
                if _own(entry) != _own(other):
                    changed.append(path)
                a_tree, b_tree = entry.tree, other.tree
                if a_tree is not None and b_tree is not None:
                    if a_tree != b_tree:
                        following.append((path + "/", bytes.fromhex(a_tree), bytes.fromhex(b_tree)))
                elif a_tree is not None:  # a directory replaced by something else
                    below.append((path + "/", bytes.fromhex(a_tree), removed))
                elif b_tree is not None:
                    below.append((path + "/", bytes.fromhex(b_tree), added))
            for name, entry in b_entries.items():
                if name not in a_entries:
                    path = prefix + name
                    added.append(path)
                    below.extend((path + "/", t, added) for t in subtrees([entry]))
        pairs, only = following, below
    return SnapshotDiff(a=a_full, b=b_full, added=sorted(added), removed=sorted(removed), changed=sorted(changed))


async def _record(repo: Repository, snapshot_id: str) -> tuple[str, SnapshotRecord]:
    """A snapshot's full id and record: a full id is read at once (one GET), a prefix resolved by a listing."""
    wanted = snapshot_id.strip().lower()
    if len(wanted) == 64 and all(c in "0123456789abcdef" for c in wanted):
        try:
            return wanted, await repo.load_record(wanted)
        except ObjectNotFound:
            raise SnapshotNotFound(
                f"no snapshot {wanted!r} in {repo.url}; list them with 'rok snapshot ls --repo {repo.url}'"
            ) from None
    full = await repo.resolve(wanted)
    return full, await repo.load_record(full)


def _own(entry: Entry) -> Entry:
    """An entry without the id of its tree: what makes a directory itself changed."""
    return entry.at(entry.path)
