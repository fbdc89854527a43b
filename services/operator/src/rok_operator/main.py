"""The operator's composition root: kopf runs the handlers of :mod:`rok_operator.handlers` over the whole cluster."""

from __future__ import annotations

import asyncio
import logging

import kopf

from rok_operator import handlers


def main() -> None:
    logging.basicConfig(level=handlers.settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{handlers.settings.health_port}/healthz",
        )
    )
