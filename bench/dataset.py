"""The benchmark's data set: a few large binary files and a tree of >10,000 small files (site-packages)."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

SMALL_FILES_MIN = 12_000


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def build(root: Path, size: int) -> dict[str, int]:
    """Create ``root`` (about ``size`` bytes) unless it is already there; return counts."""
    marker = root / ".complete"
    if marker.exists():
        return _count(root)
    if root.exists():
        shutil.rmtree(root)
    tree = root / "env"
    tree.mkdir(parents=True)
    small_budget = max(size // 4, 50 << 20)
    files = used = 0
    for top in sorted(_site_packages().iterdir()):
        if files >= SMALL_FILES_MIN and used >= small_budget:
            break
        if top.name.startswith("rok") or top.name in ("__pycache__",):
            continue
        dest = tree / top.name
        if top.is_dir() and not top.is_symlink():
            shutil.copytree(top, dest, symlinks=True)
        elif top.is_file():
            shutil.copy2(top, dest)
        else:
            continue
        for _, _, names in os.walk(dest):
            files += len(names)
        used += sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.is_symlink())
    big = max(size - used, 64 << 20)
    # Three kinds of large binary file: incompressible (random), like model weights (float noise that zstd
    # shrinks a little), and compressible (a log/CSV-like text).
    _write_random(root / "data" / "random.bin", big * 2 // 5)
    _write_weights(root / "data" / "weights.bin", big * 2 // 5)
    _write_text(root / "data" / "metrics.csv", big - 2 * (big * 2 // 5))
    marker.write_text("ok\n")
    return _count(root)


def _write_random(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = n
        while left:
            step = min(left, 8 << 20)
            f.write(os.urandom(step))
            left -= step


def _write_weights(path: Path, n: int) -> None:
    import random
    import struct

    rng = random.Random(7)
    block = bytearray()
    for _ in range(1 << 16):
        block += struct.pack("<f", rng.gauss(0, 0.02))
    with open(path, "wb") as f:
        left = n
        while left:
            noise = os.urandom(len(block) // 4)
            mixed = bytearray(block)
            mixed[0::4] = noise  # low mantissa bytes differ: partially compressible
            step = min(left, len(mixed))
            f.write(mixed[:step])
            left -= step


def _write_text(path: Path, n: int) -> None:
    import random

    rng = random.Random(11)
    with open(path, "wb") as f:
        left = n
        step_no = 0
        while left:
            lines = [
                f"{step_no + i},{rng.random():.6f},{rng.random() * 10:.4f},train,{rng.randint(0, 99999)}\n"
                for i in range(20000)
            ]
            step_no += 20000
            data = "".join(lines).encode()[:left]
            f.write(data)
            left -= len(data)


def _count(root: Path) -> dict[str, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                files += 1
                size += os.path.getsize(p)
    return {"files": files, "bytes": size}


def small_change(root: Path) -> list[Path]:
    """Append one byte to a large file and touch one small file; returns the two."""
    big = root / "data" / "weights.bin"
    with open(big, "ab") as f:
        f.write(b"\x01")
    small = next(p for p in sorted((root / "env").rglob("*.py")) if p.is_file())
    os.utime(small)
    return [big, small]
