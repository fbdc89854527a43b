"""Loads a KFP-compiled pipeline as ``rok run`` does and runs its one task's step as the runner starts it (its
command, in the volume's directory, with the runner's variables), inside ``mount_points``; prints what it saw
as JSON, with the mounts that its own mount namespace gained during the step (none):
``python kfp_mount_driver.py PIPELINE.yaml PVC DIR``.

The tests run it as another user (``setpriv``), or where namespaces are refused, with a Python that user can run:
``sys.path`` is whatever ``PYTHONPATH`` gives."""

import asyncio
import json
import os
import sys
from pathlib import Path

from rok_pipeline_watcher.kfp.local import load_any, mount_points
from rok_pipeline_watcher.kfp.mounts import volume_variable
from rok_pipeline_watcher.runner.engine import ShellSteps
from rok_pipeline_watcher.runner.pipeline import PipelineError, load


def main(pipeline_file: Path, pvc: str, directory: Path) -> dict[str, object]:
    try:
        pipeline = load_any(pipeline_file, volumes=[f"{pvc}={directory}"], parameters=[], loader=load)
    except PipelineError as error:
        return {"refused": str(error)}
    (step,) = pipeline.steps
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory.parent),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        volume_variable(pvc): str(directory),
        "ROK_WORKSPACE": str(directory),
        "ROK_RUN_ID": "mounts",
        "ROK_STEP": step.name,
    }
    with mount_points(pipeline_file) as created:
        before = mountinfo()
        code = asyncio.run(ShellSteps(pipeline).launch(step.name, directory, env))
        left = sorted(set(mountinfo()) - set(before))  # the test keeps those at its paths
        during = [str(p) for p in created if p.is_dir()]
    return {"code": code, "created": [str(p) for p in created], "existed_during": during, "left_mounted": left}


def mountinfo() -> list[str]:
    """The mounts of this process's namespace, the mount ids left out."""
    return sorted(" ".join(line.split()[2:]) for line in Path("/proc/self/mountinfo").read_text().splitlines())


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))))
