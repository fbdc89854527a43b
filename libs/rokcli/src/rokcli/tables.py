"""How the user commands print: rich tables at their natural width, or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click
from rokcommon.humanize import when
from rokcommon.registry_contract import RunFile, Version


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


def step_label(version: Version) -> str:
    if version.step_name is None:
        return "(initial)"
    return version.step_name + (f" #{version.attempt}" if version.attempt else "")


def file_row(f: RunFile) -> list[str]:
    return [
        f.name,
        f.pipeline_name or "-",
        f.run_name or f.run_id,
        f.status,
        when(f.started_at),
        str(f.versions),
        f.url,
    ]


def console() -> Any:
    """A rich console whose tables take their natural width: a long line wraps on the terminal, but no URL
    is ever cut or folded inside a cell, so it can always be copied whole."""
    from rich.console import Console

    return Console(width=100_000, soft_wrap=True)


def print_table(title: str | None, columns: list[str], rows: Iterable[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold", title_justify="left")
    for column in columns:
        # A URL is never folded: it must stay one piece to be copied.
        table.add_column(column, no_wrap=column == "url", overflow="ignore" if column == "url" else "fold")
    for row in rows:
        table.add_row(*row)
    console().print(table)
