"""Extended attributes, read and written without following symlinks."""

from __future__ import annotations

import base64
import os


def read_xattrs(path: str | int) -> dict[str, str]:
    """The attributes of ``path``, or of the open file ``path`` when it is a descriptor."""
    follow = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **follow)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = base64.b64encode(os.getxattr(path, name, **follow)).decode()
        except OSError:
            continue
    return out


def write_xattrs(path: str | int, xattrs: dict[str, str]) -> list[str]:
    """Set the attributes of a path (never following a symlink) or an open descriptor; the names not set."""
    failed: list[str] = []
    for name, value in xattrs.items():
        try:
            os.setxattr(path, name, base64.b64decode(value), follow_symlinks=isinstance(path, int))
        except OSError:
            failed.append(name)
    return failed
