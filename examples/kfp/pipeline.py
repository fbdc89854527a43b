# ruff: noqa: T201  (an example talks to its user on stdout)
"""The churn model as a KFP SDK pipeline: three lightweight Python components, a parameter, artifacts passed
from task to task, and a PVC (``churn-data``) mounted by every task (see docs/pipelines.md, "KFP SDK pipelines").

    python examples/kfp/pipeline.py pipeline.yaml        # compile it with the KFP SDK
    rok up
    rok run pipeline.yaml --volume churn-data=examples/kfp/data -p max_tenure=48
    rok submit pipeline.yaml                             # or run it on Kubeflow

Every task reads and writes the PVC at its mount path, ``/data``: in a cluster the PVC is mounted there, and
under ``rok run`` the run's clone of the directory given with ``--volume`` is, in the task's own mount namespace.
"""

import sys

from kfp import compiler, dsl, kubernetes

PVC = "churn-data"
MOUNT = "/data"


@dsl.component(base_image="python:3.11")
def prepare(clean: dsl.Output[dsl.Dataset]) -> int:
    """Drop the customers whose tenure is unknown; keep the table in the volume and as an artifact."""
    import csv
    import shutil
    from pathlib import Path

    data = Path("/data")
    with (data / "customers.csv").open() as raw, (data / "clean.csv").open("w", newline="") as out:
        rows = [r for r in csv.DictReader(raw) if r["tenure"]]
        writer = csv.DictWriter(out, fieldnames=["tenure", "monthly", "churned"])
        writer.writeheader()
        writer.writerows(rows)
    shutil.copyfile(data / "clean.csv", clean.path)
    print(f"prepared {len(rows)} customers")
    return len(rows)


@dsl.component(base_image="python:3.11")
def train(clean: dsl.Input[dsl.Dataset], customers: int, max_tenure: int, model: dsl.Output[dsl.Model]) -> int:
    """Fit a one-feature threshold (churn if tenure is below it); keep the model in the volume and as an artifact."""
    import csv
    import json
    from pathlib import Path

    rows = list(csv.DictReader(Path(clean.path).read_text().splitlines()))
    assert len(rows) == customers, (len(rows), customers)
    best = max((sum((float(r["tenure"]) < t) == (r["churned"] == "1") for r in rows), t) for t in range(1, max_tenure))
    fitted = json.dumps({"tenure_below": best[1], "train_hits": best[0]})
    Path(model.path).write_text(fitted)
    Path("/data/model.json").write_text(fitted)
    model.metadata["tenure_below"] = best[1]
    print(f"trained: churn if tenure < {best[1]}")
    return best[1]


@dsl.component(base_image="python:3.11")
def evaluate(clean: dsl.Input[dsl.Dataset], model: dsl.Input[dsl.Model], metrics: dsl.Output[dsl.Metrics]) -> float:
    """Score the model against always guessing 'stays'."""
    import csv
    import json
    from pathlib import Path

    rows = list(csv.DictReader(Path(clean.path).read_text().splitlines()))
    threshold = json.loads(Path(model.path).read_text())["tenure_below"]
    hits = sum((float(r["tenure"]) < threshold) == (r["churned"] == "1") for r in rows)
    accuracy = hits / len(rows)
    metrics.log_metric("accuracy", accuracy)
    Path("/data/metrics.json").write_text(json.dumps({"accuracy": accuracy}))
    print(f"accuracy {accuracy:.2f}")
    return accuracy


@dsl.pipeline(name="churn-kfp", description="The churn model, written with the KFP SDK")
def churn(max_tenure: int = 73) -> None:
    prepared = prepare()
    trained = train(clean=prepared.outputs["clean"], customers=prepared.outputs["Output"], max_tenure=max_tenure)
    scored = evaluate(clean=prepared.outputs["clean"], model=trained.outputs["model"])
    for task in (prepared, trained, scored):
        task.set_caching_options(False)
        kubernetes.mount_pvc(task, pvc_name=PVC, mount_path=MOUNT)


if __name__ == "__main__":
    compiler.Compiler().compile(churn, sys.argv[1] if len(sys.argv) > 1 else "pipeline.yaml")
    print(f"compiled {sys.argv[1] if len(sys.argv) > 1 else 'pipeline.yaml'}")
