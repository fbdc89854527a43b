"""What a notebook run costs: each step's time in its own process and the snapshot overhead around it, measured
on ``rok run examples/notebook/churn.ipynb`` against ``rok up``, next to the same cells run top to bottom in one
Python process (what "Run all" in a kernel costs, with no steps, no marshaling and no snapshots).

Run: ``uv run python bench/notebook_run.py [--runs 3]``. ``rok up`` starts nats-server and the four services in a
temporary state directory on free ports (``rok down`` at the end). Each run's progress lines (stderr) are
timestamped as they arrive:

* *before*: from ``step X: waiting for its before-snapshot`` (its StepStarted published) to ``step X: running``
  (its before-version committed);
* *step*: from ``running`` to ``succeeded; waiting for its after-snapshot``: the step's process, from its start
  through loading its variables, its cells and saving its variables and executed notebook;
* *after*: from there to the after-snapshot's ``stored`` line (the SnapshotCompleted the run follows; the
  registry's commit comes a few milliseconds later).

Prints the median of each over the runs, per step; the run's start (the runner's start, the notebook's initial
snapshot and its clone) and end (the registry settling the run); and the run's wall time next to the one-process
run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from roktesting.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "notebook"
ROK = str(Path(sys.executable).parent / "rok")
STEPS = ("load", "features", "baseline", "train", "evaluate")

_WAITING = re.compile(r"^step (\S+): waiting for its before-snapshot")
_RUNNING = re.compile(r"^step (\S+): running ")
_DONE = re.compile(r"^step (\S+): succeeded; waiting for its after-snapshot")
_STORED = re.compile(r"^after-snapshot of step (\S+): volume \S+ stored")


def one_run(env: dict[str, str], notebook: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The run's wall time, its start (to the first step's announcement) and end (from the last after-snapshot
    stored to the exit), and per step the seconds of its before-wait, its process and its after-wait."""
    marks: dict[str, dict[str, float]] = defaultdict(dict)
    start = time.monotonic()
    process = subprocess.Popen(
        [ROK, "run", str(notebook)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        now = time.monotonic()
        for kind, pattern in (("waiting", _WAITING), ("running", _RUNNING), ("done", _DONE), ("stored", _STORED)):
            match = pattern.match(line)
            if match:
                marks[match.group(1)][kind] = now
    if process.wait() != 0:
        raise SystemExit(f"rok run failed with exit code {process.returncode}")
    end = time.monotonic()
    run = {
        "wall": end - start,
        "start": min(m["waiting"] for m in marks.values()) - start,
        "end": end - max(m["stored"] for m in marks.values()),
    }
    figures = {
        step: {
            "before": m["running"] - m["waiting"],
            "step": m["done"] - m["running"],
            "after": m["stored"] - m["done"],
        }
        for step, m in marks.items()
    }
    return run, figures


def one_process(notebook: Path) -> float:
    """The notebook's code cells, skip cells left out, run top to bottom in one fresh Python process."""
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join(
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code" and "skip" not in c.get("metadata", {}).get("tags", [])
    )
    script = notebook.parent / "all_cells.py"
    script.write_text(code)
    start = time.monotonic()
    subprocess.run([sys.executable, str(script)], cwd=notebook.parent, check=True, capture_output=True)
    elapsed = time.monotonic() - start
    script.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rok-notebook-bench-") as tmp:
        root = Path(tmp)
        notebook_dir = root / "notebook"
        shutil.copytree(EXAMPLE, notebook_dir)
        env = {
            **os.environ,
            "ROK_STATE_DIR": str(root / "state"),
            "ROK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "ROK_REGISTRY_PORT": str(free_port()),
            "ROK_VOLUME_ROOTS": str(root),
        }
        up = subprocess.run([ROK, "up"], env=env, capture_output=True, text=True, timeout=180)
        if up.returncode != 0:
            raise SystemExit(f"rok up failed: {up.stderr}")
        try:
            runs: dict[str, list[float]] = defaultdict(list)
            per_step: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for _ in range(args.runs):
                times, figures = one_run(env, notebook_dir / "churn.ipynb")
                for part, seconds in times.items():
                    runs[part].append(seconds)
                for step, measured in figures.items():
                    for part, seconds in measured.items():
                        per_step[step][part].append(seconds)
            alone = [one_process(notebook_dir / "churn.ipynb") for _ in range(args.runs)]
        finally:
            subprocess.run([ROK, "down"], env=env, capture_output=True, timeout=120)

    load = os.getloadavg()[0]
    print(
        f"rok run examples/notebook/churn.ipynb, {args.runs} runs, medians "
        f"(load average {load:.1f} on {os.cpu_count()} cores)"
    )
    print(f"{'step':<10} {'before-wait':>12} {'step process':>13} {'after-wait':>11}")
    for step in STEPS:
        parts = per_step[step]
        print(
            f"{step:<10} {statistics.median(parts['before']):>11.2f}s {statistics.median(parts['step']):>12.2f}s "
            f"{statistics.median(parts['after']):>10.2f}s"
        )
    print(f"{'rok run: start, initial snapshot, clone':<40} {statistics.median(runs['start']):>7.2f}s")
    print(f"{'rok run: last snapshot to exit (settle)':<40} {statistics.median(runs['end']):>7.2f}s")
    print(f"{'rok run, whole':<40} {statistics.median(runs['wall']):>7.2f}s")
    print(f"{'the cells in one Python process':<40} {statistics.median(alone):>7.2f}s")


if __name__ == "__main__":
    main()
