"""Snapshot entries and records: what a snapshot holds, as restore and check see it, and its commit point.

An :class:`Entry` is one file, directory, link or device of a snapshot: its ``path`` relative to the snapshot
root (``"."`` is the root; within a tree object, its name), its ``kind`` (``d`` dir, ``f`` file, ``l`` symlink,
``h`` hard link to the earlier entry ``link``, ``p`` fifo, ``c``/``b`` devices), permission bits, owner, mtime in
ns, and what its kind has: a file's ``size`` and ``content`` as ``[[chunk_hex | None, length], ...]`` (``None``
is a hole of a sparse file), a symlink's ``target``, a device's ``rdev``, ``xattrs`` (base64), a directory's
``tree`` id inside a tree object. The repository stores entries in tree objects, one per directory (``trees``),
under short keys (docs/format.md): :func:`entry_to_wire` and :func:`entry_from_wire` convert at that edge. The
walk-order list of entries with their paths is what a snapshot is read back into.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import blake3

from rokstore.errors import CorruptData, UnsafePath

RECORD_VERSION = 2
Kind = Literal["d", "f", "h", "l", "p", "c", "b"]
KINDS: frozenset[str] = frozenset("dfhlpcb")
Content = list[list[Any]]  # [[chunk id hex | None, length], ...]


@dataclass(slots=True)
class Entry:
    path: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int | None = None  # files
    content: Content | None = None  # files
    target: str | None = None  # symlinks
    link: str | None = None  # hard links: the path of the first name
    rdev: int | None = None  # devices
    xattrs: dict[str, str] | None = None
    tree: str | None = None  # directories, within a tree object: the id (hex) of their own tree

    def at(self, path: str, tree: str | None = None) -> Entry:
        """A copy of this entry at ``path`` (with ``tree``, a directory's tree id)."""
        return Entry(
            path,
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.mtime_ns,
            self.size,
            self.content,
            self.target,
            self.link,
            self.rdev,
            self.xattrs,
            tree,
        )


def entry_to_wire(entry: Entry, name_key: str | None = "n") -> dict[str, Any]:
    """The stored form of ``entry``: short keys, in sorted order, absent fields left out; its path goes under
    ``name_key`` (None: left out, as in a record's root)."""
    out: dict[str, Any] = {}
    if entry.content is not None:
        out["c"] = entry.content
    out["g"] = entry.gid
    if entry.link is not None:
        out["h"] = entry.link
    if entry.target is not None:
        out["l"] = entry.target
    out["m"] = entry.mode
    out["mt"] = entry.mtime_ns
    if name_key is not None:
        out[name_key] = entry.path
    if entry.rdev is not None:
        out["r"] = entry.rdev
    if entry.size is not None:
        out["s"] = entry.size
    if name_key is not None:
        out["t"] = entry.kind
    if entry.tree is not None:
        out["tree"] = entry.tree
    out["u"] = entry.uid
    if entry.xattrs:
        out["x"] = dict(sorted(entry.xattrs.items()))
    elif entry.xattrs is not None:
        out["x"] = {}
    return out


def entry_from_wire(data: dict[str, Any], path: str, kind: str) -> Entry:
    """The entry stored as ``data`` (``path`` and ``kind`` already checked); ValueError naming a field of the
    wrong type."""
    try:  # subscripts, not get: the fastest way to the fields every entry has
        mode, uid, gid, mtime = data["m"], data["u"], data["g"], data["mt"]
    except KeyError as error:
        raise ValueError(f"entry {path!r} has no field {error.args[0]!r}") from None
    get = data.get
    size, content, target, link = get("s"), get("c"), get("l"), get("h")
    rdev, xattrs, tree = get("r"), get("x"), get("tree")
    if type(mode) is not int or type(uid) is not int or type(gid) is not int or type(mtime) is not int:
        raise ValueError(_wrong(path, data, ("m", "u", "g", "mt"), int))
    if (size is not None and type(size) is not int) or (rdev is not None and type(rdev) is not int):
        raise ValueError(_wrong(path, data, ("s", "r"), int, optional=True))
    if (target is not None and type(target) is not str) or (link is not None and type(link) is not str):
        raise ValueError(_wrong(path, data, ("l", "h"), str, optional=True))
    if content is not None:
        if type(content) is not list:
            raise ValueError(_BAD_CONTENT.format(path))
        for chunk in content:
            if type(chunk) is not list or len(chunk) != 2 or type(chunk[1]) is not int:
                raise ValueError(_BAD_CONTENT.format(path))
            if chunk[0] is not None and type(chunk[0]) is not str:
                raise ValueError(_BAD_CONTENT.format(path))
    if xattrs is not None and (type(xattrs) is not dict or not all(type(v) is str for v in xattrs.values())):
        raise ValueError(f"entry {path!r}: field 'x' is not an object of strings")
    if kind == "l" and target is None:
        raise ValueError(f"symlink {path!r} has no target ('l')")
    if kind == "h" and link is None:
        raise ValueError(f"hard link {path!r} names no file ('h')")
    return Entry(path, kind, mode, uid, gid, mtime, size, content, target, link, rdev, xattrs, tree)  # type: ignore[arg-type]


_BAD_CONTENT = "entry {!r}: field 'c' is not a list of [chunk id | null, length]"


def _wrong(path: str, data: dict[str, Any], keys: tuple[str, ...], want: type, optional: bool = False) -> str:
    for key in keys:
        value = data.get(key)
        if type(value) is not want and not (optional and value is None):
            return f"entry {path!r}: field {key!r} is {value!r}, not {'an' if want is int else 'a'} {want.__name__}"
    return f"entry {path!r} is damaged"  # pragma: no cover - only called when one key is wrong


def snapshot_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}"


@dataclass(slots=True)
class SnapshotRecord:
    """A snapshot's record, its commit point (docs/format.md, "Snapshot record"); ``root`` is the root
    directory's own entry, which no tree holds."""

    tree: str  # the root tree's id (hex)
    root: Entry
    time: str  # ISO 8601, UTC
    hostname: str
    path: str
    tags: dict[str, str] = field(default_factory=dict)
    files: int = 0
    dirs: int = 0
    bytes: int = 0  # logical size
    bytes_new: int = 0
    incomplete: bool = False
    errors: list[str] = field(default_factory=list)
    index: list[str] = field(default_factory=list)  # the index files this snapshot wrote
    version: int = RECORD_VERSION


def encode_record(record: SnapshotRecord) -> tuple[str, bytes]:
    """(snapshot id, bytes) of ``record``: JSON, sorted keys."""
    wire = {
        "version": record.version,
        "tree": record.tree,
        "root": entry_to_wire(record.root, None),
        "time": record.time,
        "hostname": record.hostname,
        "path": record.path,
        "tags": record.tags,
        "files": record.files,
        "dirs": record.dirs,
        "bytes": record.bytes,
        "bytes_new": record.bytes_new,
        "incomplete": record.incomplete,
        "errors": record.errors,
        "index": record.index,
    }
    data = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    return blake3.blake3(data).hexdigest(), data


# optional fields of a record: (type, default when absent)
_RECORD_FIELDS: tuple[tuple[str, type, Any], ...] = (
    ("tags", dict, dict),
    ("files", int, 0),
    ("dirs", int, 0),
    ("bytes", int, 0),
    ("bytes_new", int, 0),
    ("incomplete", bool, False),
    ("errors", list, list),
    ("index", list, list),
)


def decode_record(data: bytes, snapshot_id: str) -> SnapshotRecord:
    """The record stored as ``data`` under ``snapshot_id``; CorruptData naming what is wrong when it is not
    that record, not this version, or a field has the wrong type."""
    if blake3.blake3(data).hexdigest() != snapshot_id:
        raise CorruptData(f"snapshot record {snapshot_id} does not match its BLAKE3 id; run 'rok repo check'")
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
            version = record.get("version") if isinstance(record, dict) else None
            raise ValueError(f"record version {version!r}, this rok reads {RECORD_VERSION}")
        tree, root = record.get("tree"), record.get("root")
        if not isinstance(tree, str) or len(tree) != 64 or not isinstance(root, dict):
            raise ValueError("no valid root tree")
        bytes.fromhex(tree)
        for key in ("time", "hostname", "path"):
            if type(record.get(key)) is not str:
                raise ValueError(f"field {key!r} is {record.get(key)!r}, not a string")
        values: dict[str, Any] = {}
        for key, want, default in _RECORD_FIELDS:
            value = record.get(key)
            if value is None:
                value = default() if callable(default) else default
            elif type(value) is not want:
                raise ValueError(f"field {key!r} is {value!r}, not {'an' if want is int else 'a'} {want.__name__}")
            values[key] = value
        if not all(type(k) is str and type(v) is str for k, v in values["tags"].items()):
            raise ValueError("field 'tags' is not an object of strings")
        if not all(type(v) is str for v in (*values["errors"], *values["index"])):
            raise ValueError("fields 'errors' and 'index' are not lists of strings")
        root_entry = entry_from_wire(root, ".", "d")
    except ValueError as error:
        raise CorruptData(f"snapshot record {snapshot_id} is damaged ({error})") from None
    return SnapshotRecord(tree, root_entry, record["time"], record["hostname"], record["path"], **values)


def chunk_ids(entry: Entry) -> list[bytes]:
    if entry.content is None:
        return []
    return [bytes.fromhex(c) for c, _ in entry.content if c is not None]


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
        path = entry.path
        kind = entry.kind
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
        elif kind == "h" and entry.link not in files:
            raise UnsafePath(f"hard link {path!r} points at {entry.link!r}, not an earlier file; refusing")
        elif kind not in KINDS:
            raise UnsafePath(f"snapshot entry {path!r} has unknown type {kind!r}; refusing to restore")
