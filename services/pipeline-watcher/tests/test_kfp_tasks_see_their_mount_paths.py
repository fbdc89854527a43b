"""A KFP task under ``rok run`` reads and writes its PVC at the mount path its platform spec gives, as in a cluster:
the run's directory is bind-mounted there in the task's own mount namespace, as root and as any other user, and
nothing stays mounted or created on the machine afterwards; what cannot be done is refused before the run."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kfp import compiler, dsl, kubernetes

DRIVER = Path(__file__).with_name("kfp_mount_driver.py")
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # rok's own Python may lie where another user cannot reach it
# rok runs in a mount namespace whose mounts are all shared, as on a machine booted by systemd: a mount the task
# made without making its own mounts private first would reach it, and stay
SHARED = ["unshare", "--mount", "--propagation", "shared", "--"]


@dsl.component(base_image="python:3.11")
def tally(mount: str) -> str:
    """A component written for a cluster: it reads and writes its mount path, nothing else."""
    import json
    import os
    from pathlib import Path

    data = Path(mount)
    seen = (data / "input.txt").read_text()
    mine = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4] == mount]
    (data / "output.txt").write_text(json.dumps({"seen": seen, "uid": os.getuid(), "mountinfo": mine}))
    return seen


def compile_tally(where: Path, mount: str) -> Path:
    @dsl.pipeline(name="tally")
    def pipeline() -> None:
        task = tally(mount=mount)
        task.set_caching_options(False)
        kubernetes.mount_pvc(task, pvc_name="scratch", mount_path=mount)

    compiled = where / "tally.yaml"
    compiler.Compiler().compile(pipeline, str(compiled))
    compiled.chmod(0o644)
    return compiled


def mounts_of(lines: object, *paths: object) -> list[str]:
    """The mounts among ``lines`` (of a mountinfo) at or from ``paths``: other tests may mount their own meanwhile."""
    assert isinstance(lines, list)
    return [line for line in lines if any(str(path) in line for path in paths)]


def mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own lies in root's 0700 directory)."""
    where = Path(tempfile.mkdtemp(prefix="rok-mounts-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def volume(workdir: Path, owner: int) -> Path:
    directory = workdir / "scratch"
    directory.mkdir()
    (directory / "input.txt").write_text("seven customers")
    os.chown(directory, owner, owner)
    os.chown(directory / "input.txt", owner, owner)
    return directory


def drive(*prefix: str, args: list[str], python: str = sys.executable) -> dict[str, object]:
    """The driver's report, run with ``python`` after ``prefix`` (setpriv, unshare), seeing rok's packages."""
    packages = [p for p in sys.path if p and not p.startswith(sys.base_prefix)]
    done = subprocess.run(
        [*prefix, python, str(DRIVER), *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(packages), "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    report["stderr"] = done.stderr
    return report


def as_nobody() -> list[str]:
    if os.geteuid() != 0:  # already another user than root
        return []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def test_a_task_of_roots_run_sees_its_directory_at_a_mount_path_rok_creates_and_removes(workdir):
    if os.geteuid() != 0:  # root of a user namespace of its own, where the mount path's parent is its own
        prefix, base = ["unshare", "--user", "--map-root-user", *SHARED], workdir
    else:
        prefix, base = SHARED, Path("/mnt")
    mount = f"{base}/rok-test-data-{uuid.uuid4().hex[:8]}/deeper"
    compiled = compile_tally(workdir, mount)
    directory = volume(workdir, os.geteuid())
    assert mounts_of(mountinfo(), mount, directory) == []

    report = drive(*prefix, args=[str(compiled), "scratch", str(directory)])

    assert report["code"] == 0, report["stderr"]
    assert mounts_of(report["left_mounted"], mount, directory) == []
    assert report["created"] == [str(Path(mount).parent), mount] == report["existed_during"]
    assert not Path(mount).parent.exists()  # what rok created is gone, and nothing stays mounted
    assert mounts_of(mountinfo(), mount, directory) == []
    written = directory / "output.txt"
    seen = json.loads(written.read_text())
    assert seen["seen"] == "seven customers"
    assert seen["uid"] == 0
    assert written.stat().st_uid == os.geteuid()
    # the task saw its mount once, private: no "shared:" peer group through which it would reach the machine
    (line,) = seen["mountinfo"]
    assert not any(field.startswith("shared:") for field in line.split(" - ")[0].split()[6:])
    assert json.loads((directory / ".kfp" / "tally" / "tally" / "outputs.json").read_text())["Output"] == {
        "value": "seven customers"
    }


def test_a_task_of_an_unprivileged_users_run_sees_its_directory_at_its_mount_path_in_a_user_namespace(workdir):
    base = Path("/mnt") if os.geteuid() == 0 else workdir
    mount = base / f"rok-test-data-{uuid.uuid4().hex[:8]}"
    mount.mkdir()  # made by an administrator: the user may not create it
    try:
        compiled = compile_tally(workdir, str(mount))
        directory = volume(workdir, NOBODY if os.geteuid() == 0 else os.geteuid())
        user = NOBODY if os.geteuid() == 0 else os.geteuid()
        assert mounts_of(mountinfo(), mount, directory) == []

        report = drive(*as_nobody(), args=[str(compiled), "scratch", str(directory)], python=SYSTEM_PYTHON)

        assert report["code"] == 0, report["stderr"]
        assert mounts_of(report["left_mounted"], mount, directory) == []
        assert report["created"] == []
        assert mounts_of(mountinfo(), mount, directory) == []
        assert list(mount.iterdir()) == []  # the task wrote into the directory mounted there, not into the mount path
        written = directory / "output.txt"
        seen = json.loads(written.read_text())
        assert seen["seen"] == "seven customers"
        assert seen["uid"] == user  # mapped to itself: the task runs as the user, its files are the user's
        assert written.stat().st_uid == user
        outputs = directory / ".kfp" / "tally" / "tally" / "outputs.json"
        assert outputs.stat().st_uid == user
        (line,) = seen["mountinfo"]
        assert not any(field.startswith("shared:") for field in line.split(" - ")[0].split()[6:])
    finally:
        mount.rmdir()


def test_a_mount_path_the_user_may_not_create_is_refused_before_the_run_naming_task_pvc_and_path(workdir):
    user, parent = (NOBODY, "/mnt") if os.geteuid() == 0 else (os.geteuid(), "/")
    mount = f"{parent.rstrip('/')}/rok-test-absent-{uuid.uuid4().hex[:8]}/data"
    compiled = compile_tally(workdir, mount)
    directory = volume(workdir, user)

    report = drive(*as_nobody(), args=[str(compiled), "scratch", str(directory)], python=SYSTEM_PYTHON)

    refused = str(report["refused"])
    assert f"task 'tally' mounts PVC 'scratch' at {mount}, which does not exist" in refused
    assert f"(uid {user}) may not create it in {parent}:" in refused
    assert f"sudo mkdir -p {mount}" in refused
    assert not (directory / "output.txt").exists()
    assert not Path(mount).parent.exists()


def test_a_machine_that_refuses_mount_namespaces_is_named_as_the_reason_before_the_run(workdir):
    compiled = compile_tally(workdir, f"/mnt/rok-test-data-{uuid.uuid4().hex[:8]}")
    directory = volume(workdir, os.geteuid())
    # a user namespace of the test's own in which no further namespace may be made: the machine's limits stay
    refuse = 'echo 0 > /proc/sys/user/max_mnt_namespaces && echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'

    report = drive(
        "unshare",
        "--user",
        "--map-root-user",
        "--",
        "sh",
        "-c",
        refuse,
        "sh",
        args=[str(compiled), "scratch", str(directory)],
    )

    refused = str(report["refused"])
    assert "the tasks tally mount PVCs, which rok run bind-mounts at their mount paths" in refused
    assert "this machine refuses a new user and mount namespace" in refused
    assert "the limit on namespaces is reached" in refused
    assert not (directory / "output.txt").exists()
