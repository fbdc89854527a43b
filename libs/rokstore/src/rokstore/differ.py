"""``diff``: which paths two snapshots of a repository hold differently."""

from __future__ import annotations

from rokstore.models import SnapshotDiff
from rokstore.repository import Repository


async def diff(repo: Repository, a_id: str, b_id: str) -> SnapshotDiff:
    """Paths added, removed and changed from snapshot ``a_id`` to ``b_id`` (ids or unique prefixes of them)."""
    a_full, b_full = await repo.resolve(a_id), await repo.resolve(b_id)
    a = {e["p"]: e for e in await repo.load_manifest((await repo.load_record(a_full))["manifest"])}
    b = {e["p"]: e for e in await repo.load_manifest((await repo.load_record(b_full))["manifest"])}
    return SnapshotDiff(
        a=a_full,
        b=b_full,
        added=sorted(p for p in b if p not in a),
        removed=sorted(p for p in a if p not in b),
        changed=sorted(p for p in a if p in b and a[p] != b[p] and p != "."),
    )
