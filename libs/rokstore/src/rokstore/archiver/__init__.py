"""Taking snapshots: the walk of a directory tree, the reading, chunking and saving of its files, the commit."""

from rokstore.archiver.archiver import snapshot

__all__ = ["snapshot"]
