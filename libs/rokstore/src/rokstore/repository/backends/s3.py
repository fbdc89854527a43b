"""The ``s3://bucket/prefix`` backend (aioboto3): few large requests, no HEAD per chunk.

Endpoint and credentials come from the standard AWS environment variables (``AWS_ENDPOINT_URL`` too).
botocore's flexible checksums are turned off (``when_required``): some S3-compatible servers, rclone's among
them, reject them on ranged GETs, and every byte is verified against its BLAKE3 id anyway.

One client per event loop and endpoint (with its credentials), shared by every backend open on that loop: its
connections are reused from one repository, and one snapshot, to the next while any backend holds it.
``REQUESTS_IN_FLIGHT`` bounds the S3 requests in flight in the whole process at once, and sizes the client's
connection pool to match; the limits of each kind of request (packs up and down, tree packs, index files) are
set below it (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from rokstore.errors import (
    AccessDenied,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    StoreUnavailable,
)
from rokstore.repository.backends import Data, ObjectInfo

log = logging.getLogger(__name__)

READ_ATTEMPTS = 4  # reads of a body cut short, before the failure counts
READ_BACKOFF = 0.2  # seconds before the second attempt, doubling
REQUESTS_IN_FLIGHT = 32  # S3 requests at once in the whole process, and the size of the connection pool

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "InvalidToken",
    "ExpiredToken",
}


def _timestamp(value: str) -> datetime:
    """A timestamp of an S3 answer: ISO 8601 as listings give it, parsed by ``fromisoformat``; anything else (the
    HTTP dates of headers) by botocore's own parser. botocore's default, dateutil's general parser, costs ~0.1 ms
    per listed object, and every snapshot lists the packs and the index files."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _Client:
    """The client of one endpoint on one event loop, the backends that use it, and the bound on its requests."""

    def __init__(self) -> None:
        self.client: Any = None
        self.stack = contextlib.AsyncExitStack()
        self.ready = asyncio.Lock()
        self.slots = asyncio.Semaphore(REQUESTS_IN_FLIGHT)
        self.users = 0
        self.busy = 0  # requests in flight now
        self.peak = 0  # the most in flight at once

    async def open(self, endpoint: str | None, region: str | None) -> Any:
        async with self.ready:
            if self.client is None:
                # aioboto3's clients are aiobotocore's; importing that directly skips boto3 (~0.25 s per process).
                from aiobotocore.session import get_session
                from botocore.config import Config

                config = Config(
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    max_pool_connections=REQUESTS_IN_FLIGHT,
                    connect_timeout=10,
                    read_timeout=120,
                    retries={"max_attempts": 4, "mode": "standard"},
                    s3={"addressing_style": "path"},
                )
                session = get_session()
                session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
                self.client = await self.stack.enter_async_context(
                    session.create_client("s3", endpoint_url=endpoint, region_name=region, config=config)
                )
        return self.client


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], _Client]] = (
    weakref.WeakKeyDictionary()
)


def _identity() -> tuple[str, ...]:
    """What makes two clients differ: the endpoint, the region and the credentials (the secret as a digest)."""
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return (
        os.environ.get("AWS_ENDPOINT_URL", ""),
        os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "",
        os.environ.get("AWS_ACCESS_KEY_ID", ""),
        hashlib.sha256(secret.encode()).hexdigest(),
        os.environ.get("AWS_SESSION_TOKEN", ""),
    )


class S3Backend:
    def __init__(self, url: str, bucket: str, prefix: str) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._shared: _Client | None = None
        self._identity: tuple[str, ...] = ()

    async def _c(self) -> Any:
        if self._shared is None:
            identity = _identity()
            on_loop = _clients.setdefault(asyncio.get_running_loop(), {})
            shared = on_loop.get(identity)
            if shared is None:
                shared = on_loop[identity] = _Client()
            shared.users += 1
            self._shared, self._identity = shared, identity
        return await self._shared.open(self._identity[0] or None, self._identity[1] or None)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[Any]:
        """The client, with one of the process's request slots held for the duration of a request."""
        client = await self._c()
        shared = self._shared
        assert shared is not None
        async with shared.slots:
            shared.busy += 1
            shared.peak = max(shared.peak, shared.busy)
            try:
                yield client
            finally:
                shared.busy -= 1

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _translate(self, error: BaseException, key: str = "") -> StoreError:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        where = f"s3://{self.bucket}/{self._key(key)}"
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(key)
            if code == "NoSuchBucket":
                return RepositoryNotFound(
                    f"bucket {self.bucket!r} does not exist at {self._endpoint()}; "
                    f"run 'rok repo init --repo {self.url}'"
                )
            if code in _DENIED or status == 403:
                return AccessDenied(
                    f"the object store at {self._endpoint()} rejected the credentials for {where} ({code}); "
                    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                return StoreUnavailable(
                    f"the object store at {self._endpoint()} failed on {where} ({code}); retry later"
                )
            return StoreError(f"the object store refused a request on {where}: {code} {error}")
        if isinstance(error, NoCredentialsError):
            return AccessDenied(f"no S3 credentials for {self.url}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(error, EndpointConnectionError | BotoCoreError | OSError | TimeoutError):
            return StoreUnavailable(f"cannot reach the object store at {self._endpoint()} ({error}); retry later")
        try:
            import aiohttp

            if isinstance(error, aiohttp.ClientError):
                return StoreUnavailable(f"cannot reach the object store at {self._endpoint()} ({error}); retry later")
        except ImportError:  # pragma: no cover
            pass
        raise error

    def _endpoint(self) -> str:
        return os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    async def get(self, key: str) -> Data:
        return await self._read(key)

    async def get_range(self, key: str, offset: int, length: int) -> Data:
        return await self._read(key, Range=f"bytes={offset}-{offset + length - 1}")

    async def _read(self, key: str, **range_: str) -> Data:
        """One object (or a range of it). botocore retries the request; a body cut short on the way (a dropped
        connection: aiohttp's "Response payload is not completed", an incomplete read) is retried here."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return await self._read_once(key, **range_)
            except _CutShort as cut:
                if attempt == READ_ATTEMPTS:
                    raise cut.translated from None
                log.info("reading %s was cut short (%s); attempt %d of %d", key, cut, attempt + 1, READ_ATTEMPTS)
            await asyncio.sleep(READ_BACKOFF * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_once(self, key: str, **range_: str) -> Data:
        """The request and its body under one slot; a body cut short is raised as ``_CutShort``."""
        async with self._slot() as c:
            try:
                response = await c.get_object(Bucket=self.bucket, Key=self._key(key), **range_)
            except Exception as error:
                raise self._translate(error, key) from None
            try:
                stream = response["Body"]  # botocore's body; entered, it is aiohttp's response
                async with stream:
                    return await _body(stream, response.get("ContentLength"), key)
            except Exception as error:
                translated = error if isinstance(error, StoreError) else self._translate(error, key)
                if not isinstance(translated, StoreUnavailable):
                    raise translated from None
                raise _CutShort(translated) from None

    async def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        try:
            async with self._slot() as c:
                await c.put_object(Bucket=self.bucket, Key=self._key(key), Body=_Reader(data), ContentLength=len(data))
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, key) from None

    async def put_file(self, key: str, path: str) -> None:
        """Upload a spooled pack from its file, read in pieces as it is sent (the caller removes the file)."""
        try:
            with open(path, "rb", buffering=0) as body:
                size = os.fstat(body.fileno()).st_size
                async with self._slot() as c:
                    await c.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, ContentLength=size)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, key) from None

    async def delete(self, key: str) -> None:
        try:
            async with self._slot() as c:
                await c.delete_object(Bucket=self.bucket, Key=self._key(key))
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, key) from None

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix``; the listing holds one slot, its pages come one after another."""
        out: list[ObjectInfo] = []
        try:
            async with self._slot() as c:
                paginator = c.get_paginator("list_objects_v2")
                strip = len(self.prefix)
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                    for item in page.get("Contents", []) or []:
                        out.append(ObjectInfo(item["Key"][strip:], int(item["Size"]), item["LastModified"].timestamp()))
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, prefix) from None
        return out

    async def exists(self, key: str) -> bool:
        try:
            async with self._slot() as c:
                await c.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except StoreError:
            raise
        except Exception as error:
            translated = self._translate(error, key)
            if isinstance(translated, ObjectNotFound):
                return False
            raise translated from None

    async def prepare(self) -> None:
        try:
            async with self._slot() as c:
                try:
                    await c.head_bucket(Bucket=self.bucket)
                except Exception as error:
                    translated = self._translate(error)
                    if not isinstance(translated, ObjectNotFound | RepositoryNotFound):
                        raise translated from None
                    await c.create_bucket(Bucket=self.bucket)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from None

    async def close(self) -> None:
        """Let go of the shared client; the last backend to let go of it closes it."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        shared.users -= 1
        if shared.users == 0:
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                on_loop = _clients.get(asyncio.get_running_loop(), {})
                if on_loop.get(self._identity) is shared:
                    del on_loop[self._identity]
            await shared.stack.aclose()


async def _body(body: Any, length: int | None, key: str) -> Data:
    """The whole body of a response, read into one buffer of its announced length: a pack arrives in pieces, and
    joining them at the end would hold it twice."""
    if length is None:
        data: Data = await body.read()
        return data
    buffer = bytearray(length)
    view, done = memoryview(buffer), 0
    while done < length:
        got = await body.readinto(view[done:])
        if not got:
            raise StoreUnavailable(f"the body of {key} ended after {done} of {length} bytes")
        done += got
    return buffer


class _Reader(io.RawIOBase):
    """A read-only, seekable file over a pack's buffer, given to botocore as a request's body: aiohttp then sends
    it in pieces read from the buffer, where a ``bytes`` body is copied whole on its way to the socket (more than
    once: sliced, joined with the headers, buffered by the transport)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = min(max(0, base + offset), len(self._view))
        return self._at

    def readinto(self, buffer: Any) -> int:
        piece = self._view[self._at : self._at + len(buffer)]
        buffer[: len(piece)] = piece
        self._at += len(piece)
        return len(piece)

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._at + size
        piece = bytes(self._view[self._at : end])
        self._at += len(piece)
        return piece


class _CutShort(Exception):
    def __init__(self, translated: StoreError) -> None:
        super().__init__(str(translated))
        self.translated = translated
