"""Sizes and times as people read them, the same in the ``rok`` command's tables and the registry's web pages."""

from __future__ import annotations

from datetime import datetime


def size(n: int | None) -> str:
    """``1536`` → ``1.5 KiB``; ``None`` (not known) → ``-``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(value: datetime | None) -> str:
    """A moment to the second, ``2026-11-28 11:36:48``; ``None`` → ``-``."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"
