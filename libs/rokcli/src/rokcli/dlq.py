"""``rok dlq ls | show ID | replay ID|--all|--subject SUBJECT``: the dead-letter stream, read and replayed.

Each letter is one consumer's rejection of one message (:mod:`rokcommon.dead_letters`). The commands connect as
the ``operator`` NATS user (``ROK_NATS_USER``/``ROK_NATS_PASSWORD``, or the local one ``rok up`` made), the one
user that may replay. Exit codes as every command's: 0 done, 1 a letter cannot be replayed, 2 a usage error,
4 no such letter, 75 the bus did not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from nats.js import JetStreamContext
from rokcommon import dead_letters
from rokcommon.connection import connect
from rokcommon.dead_letters import DeadLetter
from rokcommon.humanize import size
from rokcommon.permissions import OPERATOR
from rokcommon.settings import RokSettings

from rokcli.tables import echo_json, print_table
from rokcli.user import exit_codes

T = TypeVar("T")


def _on_the_bus(work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    settings = RokSettings()

    async def main() -> T:
        nc = await connect(settings, name="rok-dlq", local_user=OPERATOR)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


@click.group()
def dlq() -> None:
    """The dead letters: messages a consumer gave up on, with its reason; list, show and replay them."""


@dlq.command("ls")
@click.option("--subject", help="only letters of messages on this subject")
@click.option("--consumer", help="only letters of this consumer")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def ls(subject: str | None, consumer: str | None, as_json: bool) -> None:
    """List the dead letters, oldest first: consumer, subject, deliveries, reason, and whether it was replayed."""
    found = [
        letter
        for letter in _on_the_bus(dead_letters.letters)
        if (subject is None or letter.subject == subject) and (consumer is None or letter.consumer == consumer)
    ]
    if as_json:
        echo_json([letter.to_dict() for letter in found])
        return
    print_table(
        None,
        ["id", "at", "consumer", "subject", "deliveries", "size", "replayed", "reason"],
        [
            [
                str(letter.id),
                letter.at[:19].replace("T", " "),
                letter.consumer,
                letter.subject,
                str(letter.deliveries),
                size(letter.size) + (" (cut)" if letter.truncated else ""),
                "yes" if letter.replayed else "-",
                letter.reason,
            ]
            for letter in found
        ],
    )
    if not found:
        click.echo("(none)", err=True)


@dlq.command("show")
@click.argument("letter_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def show(letter_id: int, as_json: bool) -> None:
    """One dead letter: where its message came from, why it died, its headers and payload."""
    letter = _on_the_bus(lambda js: dead_letters.letter(js, letter_id))
    if as_json:
        echo_json(letter.to_dict(payload=True))
        return
    fields = [(k, str(v)) for k, v in letter.to_dict().items() if k != "replayed"]
    if letter.replayed is not None:
        fields.append(("replayed", f"{letter.replayed.at} as {letter.replayed.stream} #{letter.replayed.sequence}"))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {value}")
    click.echo("")
    click.echo(letter.payload.decode(errors="replace"))


@dlq.command("replay")
@click.argument("letter_id", metavar="[ID]", type=click.IntRange(min=1), required=False)
@click.option("--all", "every", is_flag=True, help="every letter not replayed yet")
@click.option("--subject", help="every letter not replayed yet of messages on this subject")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@exit_codes
def replay(letter_id: int | None, every: bool, subject: str | None, as_json: bool) -> None:
    """Publish a dead letter's message to its original subject again (under a new message id), once.

    Every consumer of that subject sees it again; rok's effects are idempotent, so those that had taken it
    change nothing.
    """
    if (letter_id is not None) + every + (subject is not None) != 1:
        raise click.UsageError("give one of ID, --all or --subject SUBJECT")

    async def go(js: JetStreamContext) -> list[tuple[DeadLetter, dead_letters.Replay]]:
        if letter_id is not None:
            chosen = [await dead_letters.letter(js, letter_id)]
        else:
            chosen = [
                letter
                for letter in await dead_letters.letters(js)
                if letter.replayed is None and (subject is None or letter.subject == subject)
            ]
        return [(letter, await dead_letters.replay(js, letter)) for letter in chosen]

    done = _on_the_bus(go)
    if as_json:
        echo_json([{"id": letter.id, "subject": letter.subject, **vars(again)} for letter, again in done])
        return
    for letter, again in done:
        click.echo(f"replayed dead letter {letter.id} to {letter.subject} ({again.stream} #{again.sequence})")
    if not done:
        click.echo("nothing to replay", err=True)
