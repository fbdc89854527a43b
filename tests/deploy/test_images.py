"""The Dockerfiles under deploy/images, checked without a Docker engine: what they copy exists, what they run
exists, they install one package's locked dependencies, and they do not run as root."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from .dockerfiles import ROOT, all_dockerfiles, copy_sources, parse

DOCKERFILES = all_dockerfiles()
IDS = [p.name for p in DOCKERFILES]


def _workspace_packages() -> dict[str, Path]:
    """distribution name → member directory."""
    found = {}
    for pyproject in [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]:
        found[tomllib.loads(pyproject.read_text())["project"]["name"]] = pyproject.parent
    return found


PACKAGES = _workspace_packages()


def _installed(dockerfile) -> str:
    """The one distribution the builder installs with `uv sync --package`."""
    names = set()
    for stage in dockerfile.stages:
        for run in stage.all("RUN"):
            names.update(re.findall(r"uv sync --package (\S+)", run.args))
    assert len(names) == 1, f"{dockerfile.path.name} installs {names or 'nothing'}, expected one package"
    return names.pop()


def _closure(dist: str) -> set[str]:
    """The workspace packages `dist` needs, itself included."""
    seen, todo = set(), [dist]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        project = tomllib.loads((PACKAGES[name] / "pyproject.toml").read_text())["project"]
        for requirement in project.get("dependencies", []):
            dep = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
            if dep in PACKAGES:
                todo.append(dep)
    return seen


def test_every_service_and_the_step_guard_have_an_image():
    stems = {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES}
    services = {p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists()}
    assert services | {"guard"} <= stems


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_every_copied_source_exists_in_the_workspace(path: Path):
    dockerfile = parse(path)
    for stage in dockerfile.stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            sources, flags = copy_sources(copy)
            if "from" in flags:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_the_builder_installs_only_the_locked_dependencies_of_one_package(path: Path):
    dockerfile = parse(path)
    dist = _installed(dockerfile)
    assert dist in PACKAGES, f"{path.name} installs {dist}, which is not a workspace package"
    syncs = [r.args for s in dockerfile.stages for r in s.all("RUN") if "uv sync" in r.args]
    assert syncs
    for sync in syncs:
        words = shlex.split(sync)
        assert "--frozen" in words, f"{path.name}: `{sync}` may change the lock; use --frozen"
        assert "--no-dev" in words, f"{path.name}: `{sync}` installs the dev group"
    copied = {
        source
        for stage in dockerfile.stages
        for copy in stage.all("COPY")
        if "from" not in copy_sources(copy)[1]
        for source in copy_sources(copy)[0]
    }
    assert {"uv.lock", "pyproject.toml"} <= copied
    for needed in _closure(dist):
        member = PACKAGES[needed].relative_to(ROOT).as_posix()
        assert f"{member}/pyproject.toml" in copied, f"{path.name} lacks {member}/pyproject.toml"
        assert f"{member}/src" in copied, f"{path.name} lacks the source of {needed}"
        readme = tomllib.loads((PACKAGES[needed] / "pyproject.toml").read_text())["project"].get("readme")
        if isinstance(readme, str):
            assert f"{member}/{readme}" in copied, f"{path.name}: {needed} declares readme {readme}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_the_image_runs_as_a_numeric_non_root_user_on_slim_python_3_11(path: Path):
    dockerfile = parse(path)
    final = dockerfile.final
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base
    users = final.all("USER")
    assert users, f"{path.name} runs as root: no USER in the final stage"
    user = users[-1].args.split(":")[0]
    assert user.isdigit(), f"{path.name}: USER {user} must be numeric so that runAsNonRoot can verify it"
    assert int(user) != 0


def _ignored(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for part in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
            out += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = regex(raw.removeprefix("!"))
        if any(pattern.match(p) for p in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_the_build_context_sends_what_the_image_copies_and_nothing_else(path: Path):
    ignore = path.with_name(path.name + ".dockerignore")
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    dockerfile = parse(path)
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            sources, flags = copy_sources(copy)
            if "from" in flags:
                continue
            for source in sources:
                files = (
                    [source]
                    if (ROOT / source).is_file()
                    else [p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*.py")]
                )
                assert files, f"{path.name}: {source} holds no file"
                for file in files:
                    if "__pycache__" not in file:
                        assert not _ignored(patterns, file), f"{path.name}: {file} is copied but not sent"
    for elsewhere in (".venv/bin/python", "tests/deploy/test_images.py", ".git/HEAD", "services/x/src/a.pyc"):
        assert _ignored(patterns, elsewhere), f"{path.name} sends {elsewhere}"
