"""Saving chunks: skip those the repository or this snapshot already has, compress the others, pack, upload.

Called from the reader threads. Large files' chunks are hashed and compressed in a small CPU pool (BLAKE3 and
zstd release the GIL) while their reader cuts the next one; full packs are uploaded by the event loop with a
bounded number in flight, which holds back the readers when storage is slower than they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from dataclasses import replace
from pathlib import Path

import blake3
from opentelemetry import trace

from rokstore.archiver.tally import Tally
from rokstore.repository.backends import Backend
from rokstore.repository.index import Location
from rokstore.repository.packs import Packer, SealedPack, compress, pack_key

tracer = trace.get_tracer("rokstore")

PACKS_IN_FLIGHT = 2
COMPRESS_SLOTS = 6  # chunks of large files queued or being hashed and compressed at once


class ChunkSaver:
    """Create it on the event loop, inside the snapshot's span: uploads run there, in that span's context."""

    def __init__(self, backend: Backend, stored: dict[bytes, Location], tally: Tally, spool: Path) -> None:
        self.backend = backend
        self.tally = tally
        self.written: list[SealedPack] = []  # uploaded packs, without their data
        self._stored = stored  # the repository's index
        self._pending: set[bytes] = set()  # new chunks of this snapshot
        self._uploads: list[concurrent.futures.Future[None]] = []
        self._inflight = threading.BoundedSemaphore(PACKS_IN_FLIGHT)
        self._compress_slots = threading.BoundedSemaphore(COMPRESS_SLOTS)
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        self._cpu = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="rok-zstd")
        self.packer = Packer(self._emit, spool=spool)
        self.tree_packer = Packer(self._emit, spool=spool)  # trees apart from file data: reading them fetches few bytes

    def save(self, chunk: bytes, data: bytes | memoryview) -> None:
        """Compress and pack a chunk unless the repository or this snapshot already has it."""
        if self._is_new(chunk, len(data)):
            self._add(self.packer, chunk, data)

    def save_tree(self, tree_id: bytes, data: bytes) -> bool:
        """Pack a tree object unless it is already stored; whether it was new."""
        if not self._is_new(tree_id, 0):
            return False
        self._add(self.tree_packer, tree_id, data)
        return True

    def _is_new(self, blob: bytes, logical: int) -> bool:
        if blob in self._stored:
            return False
        tally = self.tally
        with tally.lock:
            if blob in self._pending:
                return False
            self._pending.add(blob)
            tally.bytes_new += logical
        return True

    @staticmethod
    def _add(packer: Packer, blob: bytes, data: bytes | memoryview) -> None:
        stored, flags = compress(data)
        packer.add(blob, stored, len(data), flags)

    def submit(self, data: memoryview) -> concurrent.futures.Future[str]:
        """Hash and save a chunk of a large file in the CPU pool; the future gives its id (hex)."""
        self._compress_slots.acquire()
        return self._cpu.submit(self._hash_and_save, data)

    def _hash_and_save(self, data: memoryview) -> str:
        try:
            chunk = blake3.blake3(data).digest()
            self.save(chunk, data)
            return chunk.hex()
        finally:
            self._compress_slots.release()

    def _emit(self, pack: SealedPack) -> None:
        """Called from worker threads with a full pack; blocks while too many are in flight."""
        self._inflight.acquire()
        key = pack_key(pack.pack_id)
        backend = self.backend

        async def upload() -> None:
            path = pack.path
            assert path is not None
            try:
                with tracer.start_as_current_span("rok.store.pack.upload") as span:
                    span.set_attribute("rok.pack.id", pack.pack_id.hex())
                    span.set_attribute("rok.bytes", pack.size)
                    await backend.put_file(key, path)
                with self.tally.lock:
                    self.written.append(replace(pack, path=None))
                    self.tally.bytes_uploaded += pack.size
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # uploaded, or not stored at all (renamed into place: already gone)
                self._inflight.release()

        # Reader threads have an empty context: schedule the upload in the snapshot span's context.
        self._uploads.append(self._context.copy().run(asyncio.run_coroutine_threadsafe, upload(), self._loop))

    async def flush_data(self) -> None:
        """Seal the last, partly filled pack of file data (so that its uploads overlap the encoding of trees)."""
        await asyncio.to_thread(self.packer.flush)

    async def flush(self) -> None:
        """Seal the last, partly filled packs and wait until every pack is stored."""
        await asyncio.to_thread(self.packer.flush)
        await asyncio.to_thread(self.tree_packer.flush)
        for upload in list(self._uploads):
            await asyncio.wrap_future(upload)

    async def close(self) -> None:
        """Stop the CPU pool and wait for uploads still in flight (after a failure); drop partly filled packs."""
        self._cpu.shutdown(wait=True, cancel_futures=True)
        self.packer.discard()
        self.tree_packer.discard()
        for upload in self._uploads:
            if not upload.done():
                await asyncio.wrap_future(upload)

    def release(self) -> None:
        """Drop the per-chunk structures now: the packer's callback makes this object part of a reference cycle."""
        self._pending = set()
        self._uploads = []
