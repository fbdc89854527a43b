"""``rok completion bash|zsh|fish``: the script that makes a shell complete rok's commands, options and arguments.

The script calls ``rok`` back with ``_ROK_COMPLETE`` set (click's shell completion); ``rok``'s ``main`` answers.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_ROK_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(rok completion bash)"    (in ~/.bashrc)
    zsh:   eval "$(rok completion zsh)"     (in ~/.zshrc)
    fish:  rok completion fish > ~/.config/fish/completions/rok.fish
    """
    from rokcli import cli

    cls = get_completion_class(shell)
    assert cls is not None, f"click has no completion for {shell}"  # every name in SHELLS has one
    click.echo(cls(cli, {}, "rok", COMPLETE_VAR).source())
