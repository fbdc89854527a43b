"""Manifests (the tree a snapshot holds) and snapshot records, both content-addressed.

A manifest is ``"ROKMAN01" zstd(json)`` with ``{"version": 1, "entries": [...]}``; each entry is a dict:
``p`` path relative to the snapshot root (``"."`` is the root), ``t`` type (``d`` dir, ``f`` file,
``l`` symlink, ``h`` hard link to the earlier entry ``h``, ``p`` fifo, ``c``/``b`` devices), ``m`` permission
bits, ``u``/``g`` owner, ``mt`` mtime in ns, ``s`` size, ``c`` content as ``[[chunk_hex | null, length], ...]``
(``null`` is a hole of a sparse file), ``l`` symlink target, ``r`` device number, ``x`` xattrs (base64).
"""

from __future__ import annotations

import json
from typing import Any

import blake3
import zstandard

from rokstore.errors import CorruptData, UnsafePath

MANIFEST_MAGIC = b"ROKMAN01"
Entry = dict[str, Any]


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id[:2]}/{manifest_id}"


def snapshot_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}"


def encode_manifest(entries: list[Entry]) -> tuple[str, bytes]:
    # check_circular=False: entries are plain trees of dicts and lists (saves ~10% of the encoding time)
    text = json.dumps(
        {"version": 1, "entries": entries}, separators=(",", ":"), ensure_ascii=False, check_circular=False
    )
    data = MANIFEST_MAGIC + zstandard.ZstdCompressor(level=3).compress(text.encode("utf-8", "surrogatepass"))
    return blake3.blake3(data).hexdigest(), data


def decode_manifest(data: bytes, manifest_id: str = "") -> list[Entry]:
    if manifest_id and blake3.blake3(data).hexdigest() != manifest_id:
        raise CorruptData(f"manifest {manifest_id} does not match its BLAKE3 id; run 'rok repo check'")
    if not data.startswith(MANIFEST_MAGIC):
        raise CorruptData(f"manifest {manifest_id!r} is not a rok manifest; run 'rok repo check'")
    try:
        text = zstandard.ZstdDecompressor().decompress(data[len(MANIFEST_MAGIC) :], max_output_size=1 << 32)
        doc = json.loads(text.decode("utf-8", "surrogatepass"))
        entries = doc["entries"]
        if doc.get("version") != 1 or not isinstance(entries, list):
            raise ValueError("unknown manifest version")
        return entries
    except (zstandard.ZstdError, ValueError, KeyError, TypeError) as error:
        raise CorruptData(f"manifest {manifest_id!r} is damaged ({error}); run 'rok repo check'") from None


def encode_record(record: dict[str, Any]) -> tuple[str, bytes]:
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return blake3.blake3(data).hexdigest(), data


def decode_record(data: bytes, snapshot_id: str) -> dict[str, Any]:
    if blake3.blake3(data).hexdigest() != snapshot_id:
        raise CorruptData(f"snapshot record {snapshot_id} does not match its BLAKE3 id; run 'rok repo check'")
    try:
        record = json.loads(data)
        if record.get("version") != 1 or not isinstance(record.get("manifest"), str):
            raise ValueError("unknown record version")
        return record
    except ValueError as error:
        raise CorruptData(f"snapshot record {snapshot_id} is damaged ({error})") from None


def chunk_ids(entry: Entry) -> list[bytes]:
    return [bytes.fromhex(c) for c, _ in entry.get("c", ()) if c is not None]


def check_paths(entries: list[Entry]) -> None:
    """Refuse a manifest whose paths could write outside the target.

    Every path is relative, made of plain names (no ``..``, ``.``, empty names or NUL), unique, and its parent
    is a directory entry of the same manifest — so no entry can sit under a symlink, a file or a device.
    Hard links must name an earlier regular file.
    """
    dirs = {"."}
    files: set[str] = set()
    seen: set[str] = set()
    for entry in entries:
        path = entry.get("p")
        kind = entry.get("t")
        if not isinstance(path, str):
            raise UnsafePath(f"a manifest entry has no valid path ({path!r}); refusing to restore")
        if path == ".":
            if kind != "d":
                raise UnsafePath("the manifest root is not a directory; refusing to restore")
            continue
        parts = path.split("/")
        if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
            raise UnsafePath(f"manifest path {path!r} would escape the target; refusing to restore")
        parent = "/".join(parts[:-1]) or "."
        if parent not in dirs:
            raise UnsafePath(
                f"manifest path {path!r} is not under a directory of the snapshot (a symlink or file?); "
                "refusing to restore"
            )
        if path in seen:
            raise UnsafePath(f"manifest path {path!r} appears twice; refusing to restore")
        seen.add(path)
        if kind == "d":
            dirs.add(path)
        elif kind == "f":
            files.add(path)
        elif kind == "h" and entry.get("h") not in files:
            raise UnsafePath(f"hard link {path!r} points at {entry.get('h')!r}, not an earlier file; refusing")
        elif kind not in ("l", "h", "p", "c", "b"):
            raise UnsafePath(f"manifest entry {path!r} has unknown type {kind!r}; refusing to restore")
