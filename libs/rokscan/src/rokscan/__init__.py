"""The store's per-entry system calls in C, each batch with the GIL released once.

:func:`scan` takes an open descriptor of a directory and returns its *signature* (the packed stat record of each
child, in the byte order of the names, see :mod:`rokstore.repository.cache`), the number and total size of its
regular files, its subdirectories' names and identities, and the children whose stat failed. No Python object is
made per child, so a directory of thousands of unchanged files costs one system call each and one comparison of
bytes.

:func:`write_new` creates one new regular file in a directory, writes it and gives it its owner, mode and
modification time: what a restore does for each file that is one chunk, in one call instead of six, each of
which would release and take the GIL again.
"""

from rokscan._scan import RECORD, scan, write_new

__all__ = ["RECORD", "scan", "write_new"]
