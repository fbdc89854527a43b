"""``rok version`` and ``rok --version``: the installed version of each of rok's parts."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from rokcli.tables import echo_json, print_table

# The distributions that make up rok, in the order a person reads them: the command, its libraries, the services.
PARTS = (
    "rokcli",
    "rokcommon",
    "rokstore",
    "rok-pipeline-watcher",
    "rok-snapshotter",
    "rok-registry",
    "rok-restorer",
)


def installed() -> dict[str, str | None]:
    """Each part → its installed version, or None where that part is not installed."""
    found: dict[str, str | None] = {}
    for part in PARTS:
        try:
            found[part] = version(part)
        except PackageNotFoundError:
            found[part] = None
    return found


def echo_versions(as_json: bool) -> None:
    parts = installed()
    if as_json:
        echo_json({"version": parts["rokcli"], "parts": parts})
        return
    click.echo(f"rok {parts['rokcli']}")
    print_table(None, ["part", "version"], [[name, v or "(not installed)"] for name, v in parts.items()])


def print_version_option(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """The eager ``--version`` flag: the same as ``rok version``, then stop."""
    if value and not ctx.resilient_parsing:
        echo_versions(as_json=False)
        ctx.exit(0)


@click.command("version")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
def version_command(as_json: bool) -> None:
    """Show the installed version of rok and of each of its parts (CLI, libraries, services)."""
    echo_versions(as_json)
