"""rok's entry-point reader answers as importlib.metadata does, for the installed distributions and for odd files."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from rokcommon.entrypoints import entry_points, load


@pytest.mark.parametrize("group", ["rok.commands", "rok.snapshot_catalogs", "no.such.group"])
def test_the_installed_entry_points_are_those_importlib_metadata_finds(group: str) -> None:
    expected = {ep.name: ep.value.split("[", 1)[0].strip() for ep in metadata.entry_points(group=group)}
    assert entry_points(group) == expected
    if group == "rok.commands":
        assert {"snapshot", "repo", "run", "guard"} <= expected.keys()


def test_every_installed_console_script_is_found() -> None:
    # Names only: two distributions may name the same script, and which one wins is the installer's business.
    assert entry_points("console_scripts").keys() == {ep.name for ep in metadata.entry_points(group="console_scripts")}


def _distribution(folder: Path, name: str, text: str) -> None:
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(text)


def test_sections_comments_extras_and_a_shadowed_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _distribution(
        first,
        "rok_extra",
        "# a comment\n[console_scripts]\nhello = elsewhere:main\n\n"
        "[rok.commands]\n; another comment\n  shout = json:dumps [fast]\nloud=json.decoder:JSONDecoder.decode\n",
    )
    _distribution(second, "Rok.Extra", "[rok.commands]\nshout = os:getcwd\nwhisper = os:getcwd\n")  # same project
    _distribution(second, "other", "[rok.commands]\nshout = os:getpid\nquiet = os.path:join\n")
    (second / "broken-1.0.dist-info").mkdir()  # no entry_points.txt: nothing to read
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))

    found = entry_points("rok.commands")
    assert found["shout"] == "json:dumps"  # the first path's distribution wins, its extras dropped
    assert "whisper" not in found  # the same project found again further down is not read
    assert found["quiet"] == "os.path:join"
    assert entry_points("console_scripts")["hello"] == "elsewhere:main"
    import json
    import os.path

    assert load(found["shout"]) is json.dumps
    assert load(found["loud"]) is json.decoder.JSONDecoder.decode
    assert load("os.path") is os.path
