"""What a snapshot has counted so far, shared by the parts of the pipeline, and reported as progress."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Protocol

from rokstore.models import Progress


class Tally:
    """Counts, errors and warnings of one snapshot, updated from many threads under ``lock``."""

    def __init__(self, progress: Callable[[Progress], None] | None) -> None:
        self.lock = threading.Lock()
        self.progress = progress
        self.phase = "scan"
        self.files = self.dirs = 0
        self.bytes_scanned = self.bytes_read = self.bytes_new = self.bytes_uploaded = 0
        self.files_done = self.files_opened = 0
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.failed: set[str] = set()  # paths that could not be read: left out of the snapshot

    def fail(self, rel: str, error: OSError) -> None:
        with self.lock:
            self.errors.append(f"{rel}: {error.strerror or error}")
            self.failed.add(rel)

    def warn(self, message: str) -> None:
        with self.lock:
            self.warnings.append(message)

    @property
    def clean(self) -> bool:
        """Nothing failed and nothing was skipped."""
        return not self.errors and not self.failed and not self.warnings

    def report(self) -> None:
        if self.progress is not None:
            self.progress(Progress(self.phase, self.bytes_read, self.bytes_scanned, self.files_done))


class Identified(Protocol):
    """What names a file: its device and inode (an ``os.stat_result`` has them)."""

    @property
    def st_dev(self) -> int: ...
    @property
    def st_ino(self) -> int: ...


def replaced(listed: Identified, opened: Identified) -> OSError | None:
    """The failure to record when what was opened is not what the walk listed under that name: the entry was
    swapped (for a symlink out of the volume, say) in between, and is not read through."""
    if (listed.st_dev, listed.st_ino) == (opened.st_dev, opened.st_ino):
        return None
    return OSError(errno.ESTALE, "replaced while the snapshot read it; not followed")
