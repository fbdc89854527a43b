"""Writing small notebooks for the tests, as Jupyter saves them (nbformat 4, sources as lists of lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cell(source: str, *tags: str, kind: str = "code") -> dict[str, Any]:
    lines = source.splitlines(keepends=True)
    made: dict[str, Any] = {"cell_type": kind, "metadata": {"tags": list(tags)} if tags else {}, "source": lines}
    if kind == "code":
        made.update(execution_count=None, outputs=[])
    return made


def markdown(text: str) -> dict[str, Any]:
    return cell(text, kind="markdown")


def write_notebook(path: Path, cells: list[dict[str, Any]], **kubeflow_notebook: Any) -> Path:
    metadata: dict[str, Any] = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    if kubeflow_notebook:
        metadata["kubeflow_notebook"] = kubeflow_notebook
    path.write_text(json.dumps({"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}, indent=1))
    return path
