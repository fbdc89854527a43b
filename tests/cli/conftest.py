from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack, local_stack, scripted_run


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """rok up in a temporary state dir, with one three-step run recorded; rok down at the end of the module."""
    with local_stack(tmp_path_factory.mktemp("rok")) as running:
        asyncio.run(scripted_run(running))
        yield running


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "restored"
