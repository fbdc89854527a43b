"""Entry points of the installed distributions, read from their ``entry_points.txt`` files directly.

``rok``'s commands come from several packages (``rok.commands``), so every ``rok`` process looks one up before it
does anything. :mod:`importlib.metadata` would answer the same, but importing it (email, zipfile, csv, pathlib)
costs ~40–60 ms of each command, more than the rest of an unchanged snapshot's start. The files follow the PyPA
entry points specification (an INI file, one section per group, ``name = module:attribute [extras]``); each
distribution's ``*.dist-info`` (or ``*.egg-info``) folder on ``sys.path`` is read, and a distribution found twice
counts where it is found first, as :func:`importlib.metadata.entry_points` does.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import import_module
from typing import Any

_METADATA_DIR = re.compile(r"^(?P<name>[^-]+)(-[^-]+)?\.(dist|egg)-info$")


def entry_points(group: str) -> dict[str, str]:
    """The entry points of ``group``: name -> ``module:attribute``, the first distribution that names one winning."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    for folder in sys.path:
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            continue
        for name in names:
            match = _METADATA_DIR.match(name)
            if match is None:
                continue
            distribution = re.sub(r"[-_.]+", "_", match["name"]).lower()
            if distribution in seen:
                continue
            seen.add(distribution)
            try:
                with open(os.path.join(folder or ".", name, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except OSError:
                continue
            for ep_name, value in _section(text, group):
                found.setdefault(ep_name, value)
    return found


def load(value: str) -> Any:
    """The object an entry point's ``module:attribute`` value names."""
    module, _, attribute = value.partition(":")
    target: Any = import_module(module.strip())
    for part in attribute.strip().split(".") if attribute.strip() else ():
        target = getattr(target, part)
    return target


def _section(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of section ``[group]`` (extras dropped from the value)."""
    entries: list[tuple[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
            continue
        if inside and "=" in line:
            name, _, value = line.partition("=")
            entries.append((name.strip(), value.split("[", 1)[0].strip()))
    return entries
