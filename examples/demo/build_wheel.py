"""Build the demo's wheel (tinyfit) with the standard library only: offline, no build backend needed.

A pure-Python wheel is a zip of the package plus ``*.dist-info/`` (METADATA, WHEEL, RECORD), which is all
``pip install`` / ``uv pip install`` needs. Usage: ``python build_wheel.py OUT_DIR`` → prints the wheel's path.
"""

# ruff: noqa: T201  (a demo script: printing is what it is for)

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

NAME, VERSION = "tinyfit", "0.1.0"
SOURCE = Path(__file__).resolve().parent / "tinyfit"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)  # the same bytes every time, so the demo's second run stores nothing new


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(out_dir: Path) -> Path:
    dist_info = f"{NAME}-{VERSION}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((SOURCE / NAME).rglob("*.py")):
        files[f"{NAME}/{path.relative_to(SOURCE / NAME).as_posix()}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\nSummary: least-squares lines (rok demo)\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: rok-demo\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
