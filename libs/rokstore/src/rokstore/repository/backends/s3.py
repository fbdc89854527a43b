"""The ``s3://bucket/prefix`` backend (aioboto3): few large requests, no HEAD per chunk.

Endpoint and credentials come from the standard AWS environment variables (``AWS_ENDPOINT_URL`` too).
botocore's flexible checksums are turned off (``when_required``): some S3-compatible servers, rclone's among
them, reject them on ranged GETs, and every byte is verified against its BLAKE3 id anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from rokstore.errors import (
    AccessDenied,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    StoreUnavailable,
)
from rokstore.repository.backends import ObjectInfo

log = logging.getLogger(__name__)

READ_ATTEMPTS = 4  # reads of a body cut short, before the failure counts
READ_BACKOFF = 0.2  # seconds before the second attempt, doubling

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "InvalidToken",
    "ExpiredToken",
}


class S3Backend:
    def __init__(self, url: str, bucket: str, prefix: str) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def _c(self) -> Any:
        if self._client is None:
            # aioboto3's clients are aiobotocore's; importing that directly skips boto3 (~0.25 s per process).
            from aiobotocore.session import get_session
            from botocore.config import Config

            config = Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=32,
                connect_timeout=10,
                read_timeout=120,
                retries={"max_attempts": 4, "mode": "standard"},
                s3={"addressing_style": "path"},
            )
            session = get_session()
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
                    region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None,
                    config=config,
                )
            )
        return self._client

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

    async def get(self, key: str) -> bytes:
        return await self._read(key)

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        return await self._read(key, Range=f"bytes={offset}-{offset + length - 1}")

    async def _read(self, key: str, **range_: str) -> bytes:
        """One object (or a range of it). botocore retries the request; a body cut short on the way (a dropped
        connection: aiohttp's "Response payload is not completed", an incomplete read) is retried here."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                c = await self._c()
                response = await c.get_object(Bucket=self.bucket, Key=self._key(key), **range_)
            except Exception as error:
                raise self._translate(error, key) from None
            try:
                async with response["Body"] as body:
                    data: bytes = await body.read()
                expected = response.get("ContentLength")
                if expected is not None and len(data) != expected:
                    raise StoreUnavailable(f"the body of {key} ended after {len(data)} of {expected} bytes")
                return data
            except Exception as error:
                translated = error if isinstance(error, StoreError) else self._translate(error, key)
                if not isinstance(translated, StoreUnavailable) or attempt == READ_ATTEMPTS:
                    raise translated from None
                log.info("reading %s was cut short (%s); attempt %d of %d", key, error, attempt + 1, READ_ATTEMPTS)
                await asyncio.sleep(READ_BACKOFF * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        try:
            c = await self._c()
            body = data if isinstance(data, bytes | bytearray) else bytes(data)
            await c.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, key) from None

    async def delete(self, key: str) -> None:
        try:
            c = await self._c()
            await c.delete_object(Bucket=self.bucket, Key=self._key(key))
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, key) from None

    async def list(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        try:
            c = await self._c()
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
            c = await self._c()
            await c.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as error:
            translated = self._translate(error, key)
            if isinstance(translated, ObjectNotFound):
                return False
            raise translated from None

    async def prepare(self) -> None:
        try:
            c = await self._c()
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
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None
