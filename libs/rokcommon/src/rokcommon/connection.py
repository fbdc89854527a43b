"""A NATS connection for a command (or a web page) that a person waits on: it fails fast and says why.

:func:`rokcommon.bus.connect` keeps retrying for ever, which is right for a service; a command whose bus is not
there should say so within seconds instead.
"""

from __future__ import annotations

import nats
from nats.aio.client import Client
from nats.errors import NoServersError

from rokcommon import credentials
from rokcommon.errors import TemporaryError
from rokcommon.permissions import CLI
from rokcommon.settings import RokSettings


async def _quiet(error: Exception) -> None:
    """nats-py prints every failed attempt with a traceback by default; the caller reports the outcome."""


async def connect(
    settings: RokSettings, *, name: str = "rok-cli", timeout: float = 3.0, local_user: str | None = CLI
) -> Client:
    """Connect as ``ROK_NATS_USER``, else as the local ``local_user`` whose password ``rok up`` stored."""
    try:
        return await nats.connect(
            servers=settings.nats_servers,
            name=name,
            connect_timeout=timeout,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            error_cb=_quiet,
            **credentials.connect_options(settings, local_user),
        )
    except (NoServersError, OSError, TimeoutError) as error:
        raise TemporaryError(
            f"cannot reach NATS at {settings.nats_url} ({error or type(error).__name__}): "
            "start rok with `rok up`, or point ROK_NATS_URL at your NATS server"
        ) from None
