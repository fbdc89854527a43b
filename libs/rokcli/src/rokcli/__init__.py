"""The ``rok`` command line.

Command groups live in modules of their own and are registered in :data:`COMMANDS`; other packages contribute
commands through the ``rok.commands`` entry-point group — the store engine ``rok repo`` and ``rok snapshot``, the
pipeline-watcher ``rok run`` and ``rok guard`` — so this package imports none of them.
"""

from __future__ import annotations

import functools
import sys
from importlib import import_module

import click
from rokcommon.entrypoints import entry_points, load
from rokcommon.errors import Forbidden, InvalidRequest, NotFound, RokError, TemporaryError

# "module:attribute" of every built-in command, imported lazily so that `rok --help` stays fast.
COMMANDS: dict[str, str] = {
    "up": "rokcli.local:up",
    "down": "rokcli.local:down",
    "status": "rokcli.local:status",
    "ls": "rokcli.user:ls",
    "show": "rokcli.user:show",
    "restore": "rokcli.restore:restore",
    "clone-pvc": "rokcli.clones:clone_pvc",
    "diff": "rokcli.user:diff",
    "cat": "rokcli.browse:cat",
    "mount": "rokcli.mount:mount",
    "umount": "rokcli.mount:umount",
    "forget": "rokcli.retention:forget",
    "pin": "rokcli.retention:pin",
    "unpin": "rokcli.retention:unpin",
    "dlq": "rokcli.dlq:dlq",
    "version": "rokcli.versions:version_command",
    "completion": "rokcli.completion:completion",
}

# The README's exit codes, for every command: 0 done, 1 failed, 2 usage error, 3 `rok status`: not everything
# runs, 4 not found or another namespace's, 75 the bus, the registry or the store did not answer (try again).
EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TEMPORARY = 1, 2, 4, 75


def exit_code(error: RokError) -> int:
    """The exit code of an expected failure, by its kind, whichever command (built-in or contributed) raised it."""
    if isinstance(error, NotFound | Forbidden):
        return EXIT_NOT_FOUND
    if isinstance(error, TemporaryError):
        return EXIT_TEMPORARY
    if isinstance(error, InvalidRequest):
        return EXIT_USAGE
    return error.exit_code


class _LazyGroup(click.Group):
    @functools.cached_property
    def _contributed(self) -> dict[str, str]:
        """Other packages' commands, read once: ``rok --help`` asks for every command in turn."""
        return entry_points("rok.commands")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | self._contributed.keys())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            return getattr(import_module(module), attr)
        contributed = self._contributed.get(cmd_name)
        return None if contributed is None else load(contributed)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # imported only when asked: the version table needs the registry's models (pydantic)
        from rokcli.versions import print_version_option

        print_version_option(ctx, param, value)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version of rok and of each of its parts, and exit.",
)
def cli() -> None:
    """rok: versioned, de-duplicated snapshots of pipeline volumes."""


def main() -> None:
    """Entry point: expected failures are one clear line on stderr and a non-zero exit."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except RokError as error:
        click.echo(f"rok: error: {error}", err=True)
        sys.exit(exit_code(error))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
