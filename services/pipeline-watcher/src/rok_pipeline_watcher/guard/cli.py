"""``rok-guard`` (also ``rok guard``): the step guard's sidecar program and its startup probe (the probe runs
often, so this module stays light)."""

from __future__ import annotations

import sys

import click


@click.group()
def guard() -> None:
    """The step guard, the sidecar the webhook adds to KFP step pods."""


@guard.command("run")
def run_command() -> None:
    """Hold the step until its before-snapshot is committed, and the pod's end until its after-snapshot is."""
    import asyncio
    import signal

    from rokcommon.logs import setup_logging

    from rok_pipeline_watcher.guard.program import GuardSettings, run

    settings = GuardSettings()
    setup_logging("guard", level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(main())


@guard.command("probe")
def probe_command() -> None:
    """Exit 0 once the step may start (the startup probe of the guard sidecar), 1 before."""
    from rok_pipeline_watcher.guard.program import GuardSettings, probe

    sys.exit(0 if probe(GuardSettings().guard_ready_file) else 1)
