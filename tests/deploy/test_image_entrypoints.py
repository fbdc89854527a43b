"""The entrypoint of every image is a module or a command that the image really installs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from .dockerfiles import exec_form, parse
from .test_images import DOCKERFILES, IDS, PACKAGES, _closure, _installed


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_the_entrypoint_is_a_module_or_command_the_image_installs(path: Path):
    dockerfile = parse(path)
    installed = _closure(_installed(dockerfile))
    entrypoints = dockerfile.final.all("ENTRYPOINT")
    assert len(entrypoints) == 1, f"{path.name} needs exactly one ENTRYPOINT"
    argv = exec_form(entrypoints[0].args)
    projects = {name: tomllib.loads((PACKAGES[name] / "pyproject.toml").read_text()) for name in installed}
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        mains = [PACKAGES[name] / "src" / module / "__main__.py" for name in installed]
        assert any(m.exists() for m in mains), f"{path.name} runs `python -m {module}`, which has no __main__.py"
    else:
        script, *rest = argv
        scripts = {s for p in projects.values() for s in p["project"].get("scripts", {})}
        assert script in scripts, f"{path.name} runs `{script}`, which no installed package declares"
        if rest:
            commands = {
                name for p in projects.values() for name in p["project"].get("entry-points", {}).get("rok.commands", {})
            }
            from rokcli import COMMANDS

            assert rest[0] in commands | set(COMMANDS), f"{path.name} runs `{script} {rest[0]}`, not registered"
