"""Reading the files the walk queued: a few threads open, read, cut and hash each file and save its chunks.

Files no larger than the minimum chunk size are one chunk, hashed and saved by the reader itself; larger ones
are cut with FastCDC and each chunk is hashed and saved in the chunk saver's CPU pool while the reader reads on.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
from typing import Any

import blake3

from rokstore.archiver.known import KnownFiles, ReadJob
from rokstore.archiver.saver import ChunkSaver
from rokstore.archiver.tally import Tally, replaced
from rokstore.chunker import MIN_SIZE, iter_chunks
from rokstore.repository.manifest import Entry
from rokstore.xattrs import read_xattrs

READERS = 3
BATCH = 64  # files per queued job
_O_NOATIME = getattr(os, "O_NOATIME", 0)


class FileReader:
    """``start``, ``submit`` batches of files, ``stop``; the first error of any thread goes to ``thread_errors``."""

    def __init__(self, saver: ChunkSaver, known: KnownFiles, tally: Tally, thread_errors: list[BaseException]) -> None:
        self.saver = saver
        self.known = known
        self.tally = tally
        self.thread_errors = thread_errors
        self._queue: queue.Queue[list[ReadJob] | None] = queue.Queue(64)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name=f"rok-read-{i}", daemon=True) for i in range(READERS)]
        for thread in self._threads:
            thread.start()

    def submit(self, batch: list[ReadJob]) -> None:
        self._queue.put(batch)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self.thread_errors:
                continue
            try:
                for path, rel, entry, st in batch:
                    self.read(path, rel, entry, st)
            except BaseException as error:
                self.thread_errors.append(error)

    def read(self, path: str, rel: str, entry: Entry, st: os.stat_result) -> None:
        """Read one file into its entry's content; a file that cannot be read is a failure of the snapshot."""
        tally = self.tally
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _O_NOATIME)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            tally.fail(rel, error)
            return
        swapped = replaced(st, os.fstat(fd))  # a directory on the way became a symlink since the walk
        if swapped is not None:
            os.close(fd)
            tally.fail(rel, swapped)
            return
        jobs: list[concurrent.futures.Future[str]] = []
        try:
            with tally.lock:
                tally.files_opened += 1
            content: list[list[Any]] = []
            read = 0
            if st.st_size <= MIN_SIZE:
                data = os.read(fd, st.st_size + 1)
                if data:
                    chunk = blake3.blake3(data).digest()
                    self.saver.save(chunk, data)
                    content.append([chunk.hex(), len(data)])
                read = len(data)
            else:
                positions: list[int] = []
                for view, length in iter_chunks(fd, st.st_size, st.st_blocks):
                    if view is None:
                        content.append([None, length])
                        continue
                    jobs.append(self.saver.submit(view))
                    positions.append(len(content))
                    content.append(["", length])
                    read += length
                    with tally.lock:
                        tally.bytes_read += length
                for position, job in zip(positions, jobs, strict=True):
                    content[position][0] = job.result()
            for job in jobs:
                job.result()
            entry.content = content
            entry.size = sum(length for _, length in content)
            xattrs = read_xattrs(fd)  # the file read, not whatever the path leads to by now
            if xattrs:
                entry.xattrs = xattrs
            self.known.remember_read(rel, st, content, xattrs)
            with tally.lock:
                if st.st_size <= MIN_SIZE:
                    tally.bytes_read += read
                tally.files_done += 1
        except OSError as error:
            for job in jobs:
                job.result()
            tally.fail(rel, error)
        finally:
            os.close(fd)
