"""What the cluster-flow run's steps do to its two volumes, as a program a step pod runs for real
(``python pipeline_steps.py STEP WORKSPACE DATA``) and as a function the test builds the expected states with.

Step 0 is the notebook's volumes as the run finds them; each step's content is fixed (seeded), so the state after
step N is the same wherever it is made.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

STEPS = ("prepare", "train", "evaluate")


def apply(step: int, workspace: Path, data: Path) -> None:
    """Step ``step``'s changes (0: the notebook's own content)."""
    noise = random.Random(step)
    if step == 0:
        (workspace / ".rok").mkdir(parents=True, exist_ok=True)
        (workspace / "train.ipynb").write_text('{"cells": []}\n')
        (data / "raw.csv").write_bytes(b"x,y\n" + b"1,2\n" * 4000)
    elif step == 1:
        (data / "clean.parquet").write_bytes(noise.randbytes(20_000))
        (workspace / ".rok" / "prepare.pickle").write_bytes(b"prepared" * 100)
    elif step == 2:
        (workspace / "model.pt").write_bytes(noise.randbytes(50_000))
        (workspace / ".rok" / "train.pickle").write_bytes(b"trained" * 100)
    elif step == 3:
        (workspace / "report.md").write_text("accuracy 0.93\n")


def state_after(root: Path, step: int) -> tuple[Path, Path]:
    """The two volumes after ``step`` steps, made under ``root``."""
    workspace, data = root / f"s{step}" / "workspace", root / f"s{step}" / "data"
    workspace.mkdir(parents=True)
    data.mkdir(parents=True)
    for done in range(step + 1):
        apply(done, workspace, data)
    return workspace, data


if __name__ == "__main__":
    apply(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
