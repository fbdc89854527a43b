"""``rok mount`` shows a version as it was snapshotted: ``find``, ``cat`` and ``diff -r`` of the mount agree with a
restore of the same version byte for byte and entry for entry, on the file and the S3 backend; a damaged chunk
reads as an I/O error on its file alone; Ctrl-C and ``rok umount`` unmount; another namespace's version is refused.

The store, the restorer (in this process) and the FUSE mount (a ``rok mount`` process) are real; the registry is
a stand-in answering ``resolve`` on its real subject with the real reply models, as in the restorer's own tests.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from rok_restorer.main import build
from rok_restorer.settings import RestorerSettings
from rokcli.mount import is_mounted
from rokcommon import subjects
from rokcommon.registry_contract import ErrorBody, Member, Reply, Resolve, Resolved, Version
from rokcommon.urls import format_url, parse_url
from rokstore import init_repository, open_repository, restore, snapshot
from roktesting.nats import NatsServer, running

from .stack import rok

NAMESPACE = "team-a"
VERSION_URL = format_url(NAMESPACE, "exp-1", "run-1", "k3x9q2mf")
ROK = str(Path(sys.executable).with_name("rok"))


def volume(root: Path) -> Path:
    """Everything a volume holds that a mount must show as stored."""
    rnd = random.Random(7)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "big.bin").write_bytes(rnd.randbytes(3 << 20))
    (root / "damaged.bin").write_bytes(rnd.randbytes(300_000))
    (root / "small.txt").write_text("hello\n")
    (root / "empty").write_bytes(b"")
    for i in range(12):
        (root / "sub" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "sub" / "deeper" / "run.sh", 0o755)
    os.chmod(root / "small.txt", 0o640)
    os.chmod(root / "sub" / "deeper", 0o750)
    os.chown(root / "small.txt", 1234, 5678)
    os.link(root / "small.txt", root / "sub" / "also-small.txt")
    (root / "link").symlink_to("sub/f1.txt")
    (root / "dangling").symlink_to("/nowhere/at/all")
    os.mkfifo(root / "pipe")
    with open(root / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(32 << 20)
        f.write(b"tail")
    os.utime(root / "sub" / "f3.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return root


@pytest.fixture
def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A repository on the backend the test names (``indirect`` parameter), the file backend by default."""
    if getattr(request, "param", "file") == "s3":
        return str(request.getfixturevalue("s3_repo_url"))
    return (tmp_path / "repo").as_uri()


def pack_file(repo_url: str, request: pytest.FixtureRequest, pack: str) -> Path:
    """Where a pack's bytes lie on disk (the S3 server serves a directory)."""
    if repo_url.startswith("s3://"):
        bucket, prefix = repo_url.removeprefix("s3://").split("/", 1)
        root = request.getfixturevalue("s3_server").root / bucket / prefix
    else:
        root = Path(repo_url.removeprefix("file://"))
    return root / "packs" / pack[:2] / pack


class Registry:
    """Answers ``rok.registry.resolve.v1`` for VERSION_URL and its one volume, refusing other namespaces."""

    def __init__(self, member: Member, version: Version) -> None:
        self.member, self.version = member, version

    async def on_resolve(self, msg: Msg) -> None:
        query = Resolve.model_validate_json(msg.data)
        if parse_url(query.url).namespace != query.namespace:
            error = ErrorBody(kind="forbidden", message=f"{query.url} is not in namespace {query.namespace!r}")
            reply = Reply(error=error)
        elif query.url in (VERSION_URL, self.member.url):
            resolved = Resolved(url=query.url, version=self.version, members=(self.member,))
            reply = Reply(result=resolved.model_dump(mode="json"))
        else:
            reply = Reply(error=ErrorBody(kind="not_found", message=f"no {query.url}"))
        await msg.respond(reply.model_dump_json().encode())


@pytest.fixture
async def stored(repo_url: str, tmp_path: Path, nc: Client) -> AsyncIterator[tuple[Path, Path, str]]:
    """(the volume, a restore of its snapshot, the snapshot id), the registry stand-in answering for it."""
    source = volume(tmp_path / "vol")
    async with await init_repository(repo_url, cache_dir=tmp_path / "cache") as repo:
        sid = (await snapshot(repo, source)).snapshot_id
        restored = tmp_path / "restored"
        await restore(repo, sid, restored)
    member = Member(
        volume="workspace",
        role="workspace",
        snapshot_id=sid,
        repository=repo_url,
        url=format_url(NAMESPACE, "exp-1", "run-1", "k3x9q2mf", "workspace"),
    )
    version = Version(
        id="k3x9q2mf",
        url=VERSION_URL,
        namespace=NAMESPACE,
        bucket="exp-1",
        file="run-1",
        workflow_uid="wf-1",
        run_id="run-1",
        step_id="s-1",
        step_name="train",
        phase="after",
        taken_at=datetime.now(UTC),
        status="complete",
        volumes=("workspace",),
        members=(member,),
    )
    sub = await nc.subscribe(subjects.registry_query("resolve"), cb=Registry(member, version).on_resolve)
    await nc.flush()
    yield source, restored, sid
    await sub.unsubscribe()


@pytest.fixture
async def restorer(nats_server: NatsServer, tmp_path: Path, js: object) -> AsyncIterator[None]:
    settings = RestorerSettings(nats_url=nats_server.url, state_dir=tmp_path / "state", log_format="text")
    async with running(build(settings)):
        yield


async def start_mount(url: str, where: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    where.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        ROK, "mount", url, str(where), env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
    assert line.startswith("mounted"), line + (await process.stderr.read()).decode()
    assert is_mounted(where)
    return process


def look_inside(mnt: Path, source: Path, restored: Path) -> None:
    assert sorted(os.listdir(mnt)) == ["workspace"]
    inside = mnt / "workspace"
    same = run("diff", "-r", "--no-dereference", "-x", "damaged.bin", "-x", "pipe", str(inside), str(restored))
    assert same.returncode == 0, same.stdout + same.stderr
    assert listing(inside) == listing(restored)
    cat = subprocess.run(["cat", str(inside / "big.bin")], capture_output=True, check=True)
    assert cat.stdout == (source / "big.bin").read_bytes()
    # hard links: one inode, two names; a sparse file's holes take no blocks
    a, b = os.stat(inside / "small.txt"), os.stat(inside / "sub" / "also-small.txt")
    assert (a.st_ino, a.st_nlink, a.st_uid, a.st_gid) == (b.st_ino, 2, 1234, 5678)
    sparse = os.stat(inside / "sparse.img")
    assert sparse.st_size == (32 << 20) + 4 and sparse.st_blocks * 512 < 1 << 20
    assert os.stat(inside / "sub" / "f3.txt").st_mtime_ns == 1_600_000_000_123_456_789
    # the damaged file: an I/O error, never wrong bytes
    bad = run("cat", str(inside / "damaged.bin"))
    assert bad.returncode != 0 and "Input/output error" in bad.stderr
    with pytest.raises(OSError, match="Input/output error") as error:
        (inside / "damaged.bin").read_bytes()
    assert error.value.errno == errno.EIO
    with pytest.raises(OSError, match="Read-only file system") as error:
        (inside / "new.txt").write_text("no")
    assert error.value.errno == errno.EROFS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


async def sh(*args: str) -> subprocess.CompletedProcess[str]:
    """A command run beside the event loop (which answers the mount's requests meanwhile)."""
    return await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, check=False)


def listing(root: Path) -> str:
    """``find``'s view of every entry: type, mode, owner, size, mtime (not a symlink's), link target."""
    out = subprocess.run(
        [
            "find",
            ".",
            "-printf",
            r"%P %y %m %U %G %l\n",
            "-not",
            "-type",
            "l",
            "-printf",
            r"%P %T@\n",
            "-type",
            "f",
            "-printf",
            r"%P %s\n",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(sorted(out.splitlines()))


def env_for(nats_server: NatsServer, tmp_path: Path, namespace: str = NAMESPACE) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROK_")}
    return env | {"ROK_NATS_URL": nats_server.url, "ROK_NAMESPACE": namespace, "ROK_STATE_DIR": str(tmp_path / "cli")}


@pytest.mark.parametrize("repo_url", ["file", "s3"], indirect=True)
async def test_a_mounted_version_is_its_restore_entry_for_entry_and_byte_for_byte(
    stored: tuple[Path, Path, str],
    restorer: None,
    nats_server: NatsServer,
    tmp_path: Path,
    repo_url: str,
    request: pytest.FixtureRequest,
) -> None:
    source, restored, sid = stored
    # a chunk of one file is damaged after the restore was made: that file, and only it, fails to read
    async with await open_repository(repo_url, cache_dir=tmp_path / "cache") as repo:
        view_entries = await repo.load_entries(await repo.load_record(sid))
        damaged = next(e for e in view_entries if e.path == "damaged.bin")
        chunk = bytes.fromhex(damaged.content[0][0])
        where = (await repo.load_index()).chunks[chunk]
    pack = pack_file(repo_url, request, where.pack.hex())
    data = bytearray(pack.read_bytes())
    data[where.offset + where.length // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))

    mnt = tmp_path / "mnt"
    process = await start_mount(VERSION_URL, mnt, env_for(nats_server, tmp_path))
    try:
        # the file system is read beside the event loop, which answers the mount's requests meanwhile
        await asyncio.to_thread(look_inside, mnt, source, restored)
    finally:
        if request.node.callspec.params["repo_url"] == "s3":
            process.send_signal(signal.SIGINT)  # Ctrl-C
        else:
            umount = await sh(ROK, "umount", str(mnt))
            assert umount.returncode == 0, umount.stderr
        assert await asyncio.wait_for(process.wait(), 20) == 0
    assert not is_mounted(mnt)
    assert os.listdir(mnt) == []


async def test_another_namespaces_version_is_not_mounted(
    stored: tuple[Path, Path, str],
    restorer: None,
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for key, value in env_for(nats_server, tmp_path, "team-b").items():
        if key.startswith("ROK_"):
            monkeypatch.setenv(key, value)
    done = await asyncio.to_thread(rok, "mount", VERSION_URL, str(mnt))
    assert done.code == 4, done.err
    assert "team-a" in done.err
    assert not is_mounted(mnt)
