"""One directory listed and every child stat'ed in C, with the GIL released, for the files cache's comparison.

:func:`scan` takes an open descriptor of a directory and returns its *signature* (the packed stat record of each
child, in the byte order of the names, see :mod:`rokstore.repository.cache`), the number and total size of its
regular files, its subdirectories' names and identities, and the children whose stat failed. No Python object is
made per child, so a directory of thousands of unchanged files costs one system call each and one comparison of
bytes.
"""

from rokscan._scan import RECORD, scan

__all__ = ["RECORD", "scan"]
