"""``check``: is every snapshot restorable? Structure always; every byte with ``read_data``."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import blake3

from rokstore.errors import CorruptData, ObjectNotFound
from rokstore.models import CheckReport, Problem
from rokstore.repository import Repository
from rokstore.repository.index import Location, decode_index, index_key
from rokstore.repository.packs import decompress, pack_key, parse_pack
from rokstore.repository.references import load_references


async def check(repo: Repository, *, read_data: bool = False) -> CheckReport:
    """Check the repository under a shared lock: its structure, and with ``read_data`` every byte."""
    lock = await repo.lock("shared")
    try:
        return await _check(repo, read_data)
    finally:
        await lock.release()


async def _check(repo: Repository, read_data: bool) -> CheckReport:
    ids, users, problems = await load_references(repo)
    packs = {info.key.rsplit("/", 1)[-1]: info.size for info in await repo.backend.list("packs/")}
    locations: dict[bytes, list[Location]] = defaultdict(list)
    notes: list[str] = []
    for info in await repo.backend.list("index/"):
        name = info.key.removeprefix("index/")
        try:
            data = await repo.backend.get(index_key(name))
            if blake3.blake3(data).hexdigest() != name:
                raise CorruptData(
                    f"index file {name!r} does not match its BLAKE3 id; rebuild the index with 'rok repo repair-index'"
                )
            entries = decode_index(data, name)
        except ObjectNotFound:  # removed by gc since the listing
            continue
        except CorruptData as error:
            problems.append(Problem("corrupt-index", name, str(error)))
            continue
        for chunk, loc in entries:
            locations[chunk].append(loc)

    def affected(chunks: set[bytes]) -> list[str]:
        return sorted({s for c in chunks for s in users.get(c, ())})

    by_pack: dict[bytes, list[tuple[bytes, Location]]] = defaultdict(list)
    for chunk, locs in locations.items():
        for loc in locs:
            by_pack[loc.pack].append((chunk, loc))
    present_packs = _present(packs)
    for pack, blobs in by_pack.items():
        size = packs.get(pack.hex())
        if size is None:
            lost = {c for c, _ in blobs if all(loc.pack not in present_packs for loc in locations[c])}
            problems.append(
                Problem(
                    "missing-pack",
                    pack.hex(),
                    f"pack {pack.hex()[:16]} is missing: {len(blobs)} index entries point at it; "
                    "rebuild the index with 'rok repo repair-index'",
                    affected(lost),
                )
            )
            continue
        bad = {c for c, loc in blobs if loc.offset + loc.length > size}
        if bad:
            problems.append(
                Problem(
                    "dangling-index-entry",
                    pack.hex(),
                    f"{len(bad)} index entries point past the end of pack {pack.hex()[:16]}",
                    affected(bad),
                )
            )
    missing = {c for c in users if c not in locations}
    if missing:
        problems.append(
            Problem(
                "missing-chunk",
                next(iter(missing)).hex(),
                f"{len(missing)} chunks used by snapshots are in no index",
                affected(missing),
            )
        )
    unindexed = [p for p in packs if bytes.fromhex(p) not in by_pack]
    if unindexed:
        notes.append(f"{len(unindexed)} packs are in no index (left by an interrupted snapshot; gc removes them)")
    bytes_read = 0
    if read_data:
        sem = asyncio.Semaphore(4)

        async def verify(pack: bytes, blobs: list[tuple[bytes, Location]]) -> int:
            async with sem:
                try:
                    data = await repo.backend.get(pack_key(pack))
                except ObjectNotFound:
                    return 0
            bad, note = await asyncio.to_thread(_verify_pack, pack, data, blobs)
            if bad:
                problems.append(
                    Problem(
                        "corrupt-chunk",
                        pack.hex(),
                        f"{len(bad)} chunks in pack {pack.hex()[:16]} do not match their BLAKE3 ids",
                        affected(bad),
                    )
                )
            elif note:
                problems.append(Problem("corrupt-pack", pack.hex(), note, []))
            return len(data)

        present = [(p, b) for p, b in by_pack.items() if p.hex() in packs]
        bytes_read = sum(await asyncio.gather(*(verify(p, b) for p, b in present)))
    return CheckReport(
        ok=not problems,
        problems=problems,
        snapshots=len(ids),
        packs=len(packs),
        chunks=len(locations),
        bytes_read=bytes_read,
        notes=notes,
    )


def _present(packs: dict[str, int]) -> set[bytes]:
    return {bytes.fromhex(p) for p in packs}


def _verify_pack(pack: bytes, data: bytes, blobs: list[tuple[bytes, Location]]) -> tuple[set[bytes], str]:
    bad: set[bytes] = set()
    view = memoryview(data)
    for chunk, loc in blobs:
        try:
            raw = decompress(view[loc.offset : loc.offset + loc.length], loc.flags, loc.raw_length)
            if blake3.blake3(raw).digest() != chunk:
                bad.add(chunk)
        except CorruptData:
            bad.add(chunk)
    note = ""
    if blake3.blake3(data).digest() != pack:
        note = f"pack {pack.hex()[:16]} does not match its BLAKE3 name"
    else:
        try:
            parse_pack(data)
        except CorruptData as error:
            note = f"pack {pack.hex()[:16]}: {error}"
    return bad, note
