"""Keyset pagination: a page is the rows after (or before) a cursor in a fixed order, never an offset.

A cursor names the sort key of the last row a page showed (with its id, so equal keys stay in one order), the
direction to go from it, and the order it was made for, encoded as opaque URL-safe text. Rows recorded meanwhile
shift no page, as an offset would. A page is filled from the cursor's side up to ``limit`` rows and up to a byte
budget (the size of the items as JSON), so that no answer outgrows one bus message: one row more than asked for
tells whether there is more beyond.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel
from rokcommon.errors import AnswerTooLarge, InvalidRequest
from rokcommon.registry_contract import Order
from sqlalchemy import Select, bindparam, tuple_
from sqlalchemy.sql.elements import ColumnElement

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Direction = Literal["after", "before"]
ENVELOPE = 2048  # bytes of a reply that are not items: its cursors, counts, field names
DEFAULT_BUDGET = 1 << 20  # bytes of items a page holds when no bus limit applies (HTTP)
_DIRECTIONS: dict[str, Direction] = {"a": "after", "b": "before"}
_ORDERS: dict[str, Order] = {"n": "newest", "o": "oldest"}


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: just ``after`` (or ``before``) the row whose sort key is ``key``, in ``order``."""

    key: tuple[Any, ...]
    direction: Direction = "after"
    order: Order = "newest"

    def encode(self) -> str:
        key = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in self.key]
        fields = {"k": key, "d": self.direction[0], "o": self.order[0]}
        data = json.dumps(fields, separators=(",", ":"))
        return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, order: Order) -> Cursor:
        """The cursor ``text`` encodes; it must have been made for ``order``."""
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            key = tuple(datetime.fromisoformat(v["t"]) if isinstance(v, dict) else v for v in data["k"])
            direction = _DIRECTIONS[data["d"]]
            made_for = _ORDERS[data["o"]]
        except (ValueError, binascii.Error, KeyError, TypeError, AttributeError):
            raise InvalidRequest(f"cursor {text[:40]!r} is not one a page of this list gave: ask without it") from None
        if made_for != order:
            raise InvalidRequest(f"cursor {text[:40]!r} is for order {made_for!r}, not {order!r}")
        return cls(key, direction, made_for)


@dataclass(frozen=True)
class Keyset:
    """A list's order: its sort columns, the last one unique (the id)."""

    columns: Sequence[ColumnElement[Any]]

    def select(self, query: Select[Any], order: Order, cursor: Cursor | None, limit: int) -> Select[Any]:
        """``query`` limited to ``limit + 1`` rows from the cursor on, nearest to the cursor first."""
        descending = (order == "newest") != (cursor is not None and cursor.direction == "before")
        if cursor is not None:
            if len(cursor.key) != len(self.columns):
                raise InvalidRequest("the cursor is not one a page of this list gave: ask without it")
            here = tuple_(*self.columns)
            there = tuple_(*(bindparam(None, v, type_=c.type) for c, v in zip(self.columns, cursor.key, strict=True)))
            query = query.where(here < there if descending else here > there)
        ordering = [c.desc() if descending else c.asc() for c in self.columns]
        return query.order_by(*ordering).limit(limit + 1)


def within(items: Sequence[M], budget: int | None) -> list[M]:
    """The first ``items`` whose JSON fits in ``budget`` bytes (an answer that is no page: no cursor to go on)."""
    room = (budget or DEFAULT_BUDGET) - ENVELOPE
    for i, item in enumerate(items):
        room -= json_size(item) + 1
        if room < 0:
            return list(items[:i])
    return list(items)


@dataclass(frozen=True)
class Filled(Generic[T]):
    """A page's rows in list order, and the cursors of the pages after and before it."""

    rows: list[T]
    next: str | None
    prev: str | None


def fill(
    rows: Sequence[T],
    *,
    key: Callable[[T], tuple[Any, ...]],
    size: Callable[[T], int],
    order: Order,
    cursor: Cursor | None,
    limit: int,
    budget: int | None,
    what: str,
) -> Filled[T]:
    """The page of ``rows`` (as :meth:`Keyset.select` fetched them): as many as fit ``limit`` and ``budget``.

    One row that alone does not fit is :class:`~rokcommon.errors.AnswerTooLarge`.
    """
    room = (budget or DEFAULT_BUDGET) - ENVELOPE
    taken: list[T] = []
    for row in rows[:limit]:
        room -= size(row) + 1
        if room < 0:
            if not taken:
                raise AnswerTooLarge(
                    f"{what} alone is {size(row)} bytes, more than one answer may carry ({budget or DEFAULT_BUDGET})"
                )
            break
        taken.append(row)
    more = len(taken) < len(rows)  # the rows went on past this page
    backwards = cursor is not None and cursor.direction == "before"
    if backwards:
        taken.reverse()
    if not taken:
        return Filled([], None, None)
    first, last = Cursor(key(taken[0]), "before", order), Cursor(key(taken[-1]), "after", order)
    if backwards:
        return Filled(taken, last.encode(), first.encode() if more else None)
    return Filled(taken, last.encode() if more else None, first.encode() if cursor is not None else None)


def json_size(model: BaseModel) -> int:
    """Bytes of a model as a reply carries it."""
    return len(model.model_dump_json().encode())
