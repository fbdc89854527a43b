"""Snapshot entries and records: what a snapshot holds, as restore and check see it, and its commit point.

An entry is a dict: ``p`` path relative to the snapshot root (``"."`` is the root), ``t`` type (``d`` dir,
``f`` file, ``l`` symlink, ``h`` hard link to the earlier entry ``h``, ``p`` fifo, ``c``/``b`` devices), ``m``
permission bits, ``u``/``g`` owner, ``mt`` mtime in ns, ``s`` size, ``c`` content as
``[[chunk_hex | null, length], ...]`` (``null`` is a hole of a sparse file), ``l`` symlink target, ``r`` device
number, ``x`` xattrs (base64). The repository stores them in tree objects, one per directory (``trees``); the
walk-order list of entries with their paths is what a snapshot is read back into.
"""

from __future__ import annotations

import json
from typing import Any

import blake3

from rokstore.errors import CorruptData, UnsafePath

RECORD_VERSION = 2
Entry = dict[str, Any]


def snapshot_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}"


def encode_record(record: dict[str, Any]) -> tuple[str, bytes]:
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return blake3.blake3(data).hexdigest(), data


def decode_record(data: bytes, snapshot_id: str) -> dict[str, Any]:
    if blake3.blake3(data).hexdigest() != snapshot_id:
        raise CorruptData(f"snapshot record {snapshot_id} does not match its BLAKE3 id; run 'rok repo check'")
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
            version = record.get("version") if isinstance(record, dict) else None
            raise ValueError(f"record version {version!r}, this rok reads {RECORD_VERSION}")
        tree = record.get("tree")
        if not isinstance(tree, str) or len(tree) != 64 or not isinstance(record.get("root"), dict):
            raise ValueError("no valid root tree")
        bytes.fromhex(tree)
    except ValueError as error:
        raise CorruptData(f"snapshot record {snapshot_id} is damaged ({error})") from None
    return record


def chunk_ids(entry: Entry) -> list[bytes]:
    return [bytes.fromhex(c) for c, _ in entry.get("c", ()) if c is not None]


def check_paths(entries: list[Entry]) -> None:
    """Refuse a snapshot whose paths could write outside the target.

    Every path is relative, made of plain names (no ``..``, ``.``, empty names or NUL), unique, and its parent
    is a directory entry of the same snapshot — so no entry can sit under a symlink, a file or a device.
    Hard links must name an earlier regular file.
    """
    dirs = {"."}
    files: set[str] = set()
    seen: set[str] = set()
    for entry in entries:
        path = entry.get("p")
        kind = entry.get("t")
        if not isinstance(path, str):
            raise UnsafePath(f"a snapshot entry has no valid path ({path!r}); refusing to restore")
        if path == ".":
            if kind != "d":
                raise UnsafePath("the snapshot root is not a directory; refusing to restore")
            continue
        parts = path.split("/")
        if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
            raise UnsafePath(f"snapshot path {path!r} would escape the target; refusing to restore")
        parent = "/".join(parts[:-1]) or "."
        if parent not in dirs:
            raise UnsafePath(
                f"snapshot path {path!r} is not under a directory of the snapshot (a symlink or file?); "
                "refusing to restore"
            )
        if path in seen:
            raise UnsafePath(f"snapshot path {path!r} appears twice; refusing to restore")
        seen.add(path)
        if kind == "d":
            dirs.add(path)
        elif kind == "f":
            files.add(path)
        elif kind == "h" and entry.get("h") not in files:
            raise UnsafePath(f"hard link {path!r} points at {entry.get('h')!r}, not an earlier file; refusing")
        elif kind not in ("l", "h", "p", "c", "b"):
            raise UnsafePath(f"snapshot entry {path!r} has unknown type {kind!r}; refusing to restore")
