"""A response body cut short on the way from S3 (a dropped connection) is retried, not fatal to a restore."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from pathlib import Path

import pytest
from rokstore import init_repository, open_repository, restore, snapshot
from roktesting.s3 import S3Server


class CuttingProxy:
    """A TCP proxy in front of the S3 server that forwards HTTP/1.1 as it is, except that the body of each of
    the next ``cuts`` GET responses of at least ``min_size`` bytes is cut in half and its connection closed."""

    def __init__(self, upstream: str, cuts: int, min_size: int = 64 * 1024) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cuts = cuts
        self.min_size = min_size
        self.cut = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        methods: deque[str] = deque()
        tasks = [
            asyncio.ensure_future(self._requests(client_r, up_w, methods)),
            asyncio.ensure_future(self._responses(up_r, client_w, methods)),
        ]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, up_w):
            writer.close()

    @staticmethod
    def _length(head: bytes) -> tuple[int | None, bool]:
        length, chunked = None, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        return length, chunked

    async def _requests(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, methods: deque[str]) -> None:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            methods.append(head.split(b" ", 1)[0].decode())
            w.write(head)
            length, chunked = self._length(head)
            if chunked:
                await self._chunks(r, w)
            elif length:
                w.write(await r.readexactly(length))
            await w.drain()

    async def _responses(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, methods: deque[str]) -> None:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            w.write(head)
            if 100 <= status < 200:
                await w.drain()
                continue
            method = methods.popleft()
            length, chunked = self._length(head)
            if method == "HEAD" or status in (204, 304):
                pass
            elif chunked:
                await self._chunks(r, w)
            elif length is not None:
                body = await r.readexactly(length)
                if method == "GET" and self.cut < self.cuts and length >= self.min_size:
                    self.cut += 1
                    w.write(body[: length // 2])
                    await w.drain()
                    return  # the connection drops mid-body
                w.write(body)
            await w.drain()

    @staticmethod
    async def _chunks(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            line = await r.readuntil(b"\r\n")
            size = int(line.split(b";")[0], 16)
            w.write(line + await r.readexactly(size + 2))
            if size == 0:
                return


async def test_a_restore_through_connections_that_drop_mid_body_completes(
    s3_repo_url: str, s3_server: S3Server, source: Path, tmp_path: Path, same_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await init_repository(s3_repo_url) as repo:
        stats = await snapshot(repo, source)
    proxy = CuttingProxy(s3_server.endpoint, cuts=2)
    async with proxy as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        async with await open_repository(s3_repo_url) as repo:
            await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert proxy.cut == 2  # the pack's body was cut twice, and read whole the third time
    same_tree(source, tmp_path / "out")
