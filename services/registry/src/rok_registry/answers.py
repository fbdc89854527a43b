"""How the registry's HTTP answers name a refusal, the API and the web pages alike: the status and the kind of
each error the gate and the query layer raise (the kinds are those the bus's replies use,
:data:`rokcommon.registry_contract.ERROR_KINDS`)."""

from __future__ import annotations

from rokcommon.errors import Forbidden, InvalidRequest, NotFound, RokError, TemporaryError

REFUSALS: dict[type[RokError], tuple[int, str]] = {
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    TemporaryError: (503, "unavailable"),
    InvalidRequest: (400, "invalid"),
}
KIND_OF_STATUS = {status: kind for status, kind in REFUSALS.values()}


def refusal(error: Exception) -> tuple[int, str]:
    """(HTTP status, kind) of an error answered to a caller: any other error a request causes is a 400 "invalid"."""
    return next((answer for cls, answer in REFUSALS.items() if isinstance(error, cls)), (400, "invalid"))
