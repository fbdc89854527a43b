"""A task's own mount namespace, in which each PVC it mounts is bind-mounted at the task's mount path.

``python -I -S mounts.py --bind PVC=MOUNT_PATH … -- COMMAND …`` runs ``COMMAND`` with the directory in
``ROK_VOLUME_<PVC>`` (the run's clone of the PVC) bind-mounted at ``MOUNT_PATH``, so a component reads and writes
its mount path as it does in a cluster. The runner puts it in front of the step of every task that mounts a PVC.

The namespace is made with ``unshare(2)`` through libc (Python 3.11 has no ``os.unshare``): a mount namespace
alone when rok runs as root; as any other user, a user namespace too, in which the user is mapped to itself (so
the files the task writes are the user's, and the task runs as the user, without capabilities, once ``COMMAND``
starts). Every mount of the namespace is made private first, so that nothing mounted in it reaches the
machine's mount table; the namespace, with its mounts, goes when the task's last process ends.

The file imports only the standard library, and in front of a task only the little it needs (it starts in
~20 ms): it runs isolated (``-I -S``), before anything of rok is imported.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
FAILED = 125  # the wrapper's own exit code when it cannot set the mounts up (as env(1) and unshare(1) do)


class NamespaceError(Exception):
    """The task's mount namespace, or one of its bind mounts, cannot be made on this machine."""


def volume_variable(name: str) -> str:
    """The environment variable the runner gives a step the path of the run's clone of volume ``name`` in."""
    return f"ROK_VOLUME_{name.upper().replace('-', '_')}"


def wrapper(binds: list[tuple[str, str]]) -> list[str]:
    """The command that goes in front of a task's command: ``(pvc, mount_path)`` pairs to bind-mount."""
    command = [sys.executable, "-I", "-S", os.path.realpath(__file__)]
    for pvc, path in binds:
        command += ["--bind", f"{pvc}={path}"]
    return [*command, "--"]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _why(error: int) -> str:
    if error == errno.ENOSPC:  # what unshare(2) says when a namespace limit is reached, or 0
        return "the limit on namespaces is reached (sysctl user.max_user_namespaces, user.max_mnt_namespaces)"
    if error == errno.EINVAL:
        return "this kernel has no user or mount namespaces"
    return os.strerror(error)


def _unshare(libc: ctypes.CDLL) -> None:
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 and libc.unshare(_CLONE_NEWNS) == 0:
        return
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        raise NamespaceError(
            f"this machine refuses a new user and mount namespace (unshare: {_why(ctypes.get_errno())}); allow "
            "user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, "
            "kernel.apparmor_restrict_unprivileged_userns, a container's seccomp profile), or run rok as root"
        )
    try:  # the user is itself in the namespace: its files stay its own, and it has no capabilities once it execs
        for name, line in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(f"{line}\n")
    except OSError as error:
        raise NamespaceError(f"cannot map user {uid} into its user namespace: {error.strerror}") from error


def enter(binds: list[tuple[str, str]]) -> None:
    """Move this process into a new mount namespace with each ``(directory, mount_path)`` bind-mounted."""
    libc = _libc()
    _unshare(libc)
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise NamespaceError(f"cannot make the task's mounts private: {_why(ctypes.get_errno())}")
    for directory, path in sorted(binds, key=lambda bind: os.path.normpath(bind[1]).count("/")):  # parents first
        if not os.path.isdir(path):
            raise NamespaceError(f"the mount path {path} is not a directory")
        if libc.mount(os.fsencode(directory), os.fsencode(path), None, _MS_BIND | _MS_REC, None) != 0:
            raise NamespaceError(f"cannot bind-mount {directory} at {path}: {_why(ctypes.get_errno())}")


def check() -> str | None:
    """Why a task's mounts cannot be made on this machine, or ``None`` when they can: one bind mount, tried."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="rok-mount-check-") as scratch:
        source, target = Path(scratch, "volume"), Path(scratch, "mount")
        source.mkdir()
        target.mkdir()
        (source / "seen").touch()
        probe = [sys.executable, "-I", "-S", "-c", "import os, sys; sys.exit(not os.path.exists(sys.argv[1]))"]
        try:
            done = subprocess.run(
                [*wrapper([("check", str(target))]), *probe, str(target / "seen")],
                env={**os.environ, volume_variable("check"): str(source)},
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"the mount check did not run: {error}"
        if done.returncode == 0:
            return None
        said = done.stderr.strip().splitlines()
        return said[-1].removeprefix("rok: ") if said else f"the bind mount was not seen (exit code {done.returncode})"


def main(argv: list[str]) -> int:
    arguments = list(argv)
    binds: list[tuple[str, str]] = []
    while arguments and arguments[0] == "--bind" and len(arguments) > 1:
        pvc, _, path = arguments[1].partition("=")
        directory = os.environ.get(volume_variable(pvc))
        if not directory:
            sys.stderr.write(f"rok: PVC {pvc!r} has no directory: {volume_variable(pvc)} is not set\n")
            return FAILED
        binds.append((directory, path))
        del arguments[:2]
    if arguments[:1] != ["--"] or len(arguments) < 2:
        sys.stderr.write("rok: usage: mounts.py [--bind PVC=MOUNT_PATH]… -- COMMAND…\n")
        return FAILED
    command = arguments[1:]
    try:
        enter(binds)
    except NamespaceError as error:
        sys.stderr.write(f"rok: {error}\n")
        return FAILED
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write(f"rok: cannot run {command[0]}: {error.strerror}\n")
    return FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
