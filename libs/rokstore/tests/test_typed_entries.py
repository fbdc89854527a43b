"""Entries and records are typed values; the short keys stay the stored format, and a field of the wrong type
is refused, named."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import blake3
import pytest
from rokstore import CorruptData, Repository, restore, snapshot
from rokstore.repository.manifest import Entry, SnapshotRecord, decode_record, encode_record
from rokstore.repository.trees import decode_tree, encode_tree

ROOT = {"p": ".", "t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 0}
Forge = Callable[[Repository, list[dict]], Awaitable[str]]


def test_a_tree_encodes_to_the_stored_short_keys_and_decodes_back() -> None:
    entries = [
        Entry(
            "a", "f", 0o644, 1, 2, 3, size=5, content=[["ab" * 32, 4], [None, 1]], xattrs={"user.b": "", "user.a": ""}
        ),
        Entry("b", "h", 0o644, 1, 2, 3, link="a"),
        Entry("c", "l", 0o777, 1, 2, 3, target="../x"),
        Entry("d", "d", 0o755, 1, 2, 3, tree="cd" * 32),
        Entry("e", "c", 0o600, 0, 0, 3, rdev=259),
    ]
    tree_id, data = encode_tree(entries)
    # the stored form: sorted keys, absent fields left out, what json with sort_keys gives
    stored = json.loads(data)
    assert data == json.dumps(stored, separators=(",", ":"), sort_keys=True).encode()
    assert stored["entries"][0] == {
        "c": [["ab" * 32, 4], [None, 1]],
        "g": 2,
        "m": 0o644,
        "mt": 3,
        "n": "a",
        "s": 5,
        "t": "f",
        "u": 1,
        "x": {"user.a": "", "user.b": ""},
    }
    assert stored["entries"][1] == {"g": 2, "h": "a", "m": 0o644, "mt": 3, "n": "b", "t": "h", "u": 1}
    assert tree_id == blake3.blake3(data).digest()
    assert decode_tree(data, tree_id) == entries


def _tree(entry: dict) -> tuple[bytes, bytes]:
    data = json.dumps({"entries": [entry]}, separators=(",", ":"), sort_keys=True).encode()
    return data, blake3.blake3(data).digest()


@pytest.mark.parametrize(
    ("field", "value"),
    [("m", "420"), ("mt", 1.5), ("u", None), ("s", "5"), ("c", [["ab", "4"]]), ("c", {}), ("l", 7), ("x", {"a": 1})],
)
def test_a_tree_entry_with_a_field_of_the_wrong_type_is_corrupt_data_naming_the_field(
    field: str, value: object
) -> None:
    entry = {"n": "f", "t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 0, "s": 4, "c": [["ab" * 32, 4]]}
    entry[field] = value
    data, tree_id = _tree(entry)
    with pytest.raises(CorruptData, match=f"entry 'f': field '{field}'"):
        decode_tree(data, tree_id)


def test_a_tree_entry_without_its_mtime_is_corrupt_data_naming_the_field() -> None:
    data, tree_id = _tree({"n": "f", "t": "f", "m": 0o644, "u": 0, "g": 0, "s": 0, "c": []})
    with pytest.raises(CorruptData, match="entry 'f' has no field 'mt'"):
        decode_tree(data, tree_id)


def test_a_symlink_without_a_target_is_corrupt_data() -> None:
    data, tree_id = _tree({"n": "s", "t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 0})
    with pytest.raises(CorruptData, match="symlink 's' has no target"):
        decode_tree(data, tree_id)


def _record(**fields: object) -> tuple[bytes, str]:
    wire = {"version": 2, "tree": "ab" * 32, "root": {"m": 0o755, "u": 0, "g": 0, "mt": 0}, "time": "t"}
    wire |= {"hostname": "h", "path": "/p"} | fields
    data = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    return data, blake3.blake3(data).hexdigest()


def test_a_record_round_trips_and_absent_counts_default_as_before() -> None:
    data, sid = _record()
    record = decode_record(data, sid)
    assert record == SnapshotRecord("ab" * 32, Entry(".", "d", 0o755, 0, 0, 0), "t", "h", "/p")
    assert record.files == 0 and record.tags == {} and record.index == []
    full = SnapshotRecord("ab" * 32, Entry(".", "d", 0o700, 1, 2, 3, xattrs={"user.a": ""}), "t", "h", "/p", {"k": "v"})
    full.files, full.errors, full.index, full.incomplete = 3, ["x: gone"], ["cd" * 32], True
    sid, data = encode_record(full)
    assert json.loads(data)["root"] == {"g": 2, "m": 0o700, "mt": 3, "u": 1, "x": {"user.a": ""}}
    assert decode_record(data, sid) == full


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"files": "3"}, "field 'files'"),
        ({"incomplete": 1}, "field 'incomplete'"),
        ({"hostname": 5}, "field 'hostname'"),
        ({"tags": {"k": 1}}, "field 'tags'"),
        ({"root": {"m": 0o755, "u": 0, "g": "0", "mt": 0}}, "field 'g'"),
    ],
)
def test_a_record_with_a_field_of_the_wrong_type_is_corrupt_data_naming_it(fields: dict, named: str) -> None:
    data, sid = _record(**fields)
    with pytest.raises(CorruptData, match=f"snapshot record {sid} is damaged .*{named}"):
        decode_record(data, sid)


async def test_restore_refuses_a_stored_entry_of_the_wrong_type_and_writes_nothing(
    repo: Repository, tmp_path: Path, forge: Forge
) -> None:
    bad = {"p": "f", "t": "f", "m": "rwx", "u": 0, "g": 0, "mt": 0, "s": 0, "c": []}
    snapshot_id = await forge(repo, [ROOT, bad])
    with pytest.raises(CorruptData, match="field 'm'"):
        await restore(repo, snapshot_id, tmp_path / "target")
    assert not (tmp_path / "target").exists()


async def test_a_snapshot_s_entries_are_typed(repo: Repository, source: Path) -> None:
    stats = await snapshot(repo, source)
    entries = await repo.load_entries(await repo.load_record(stats.snapshot_id))
    assert entries[0].path == "." and entries[0].kind == "d"
    files = [e for e in entries if e.kind == "f"]
    assert files and all(isinstance(e.size, int) and e.content is not None for e in files)
    assert all(e.tree is None for e in entries)  # flattened: paths, no tree ids
