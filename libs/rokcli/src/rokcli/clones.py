"""``rok clone-pvc PVC --run RUN_ID --name-file FILE``: a ``create-volume-N`` task of a run (``rok compile``,
``rok_pipeline_watcher.kfp.clones``), in a cluster.

The task's pod names the notebook pod (annotation ``rok/notebook-pod``), so the pipeline-watcher starts the run
from the notebook's volumes: the snapshotter takes the run's initial version of them, as for every run. This
command waits until the registry has that version, then asks for a restore of the notebook volume ``PVC`` from
it into a new PVC of the run (the restorer's PVC target: bound, filled and verified before it exists), labelled
``rok.kubeflow.org/run=RUN_ID`` so that retention finds it, and writes the new PVC's name to ``FILE``: the
run's steps mount it, and the notebook's own PVC is never written by the run.

It reaches the registry through its HTTP API (``ROK_REGISTRY_URL``, the pod's service account token), as
``rok restore --pvc`` does.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click
from rokcommon.errors import InvalidRequest, NotFound, PermanentError, TemporaryError
from rokcommon.registry_http import Remote

from rokcli.restore import RestoreAsked, RestoreFailed
from rokcli.user import exit_codes

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def clone_name(pvc: str, run_id: str) -> str:
    """The run's clone of ``pvc``: ``<pvc>-run-<12 characters of the run id>``, a DNS label (63 at most)."""
    run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:12] or "run"
    base = re.sub(r"[^a-z0-9-]", "-", pvc.lower())[:46].strip("-") or "volume"
    return f"{base}-run-{run}"


@click.command("clone-pvc")
@click.argument("pvc")
@click.option("--run", "run_id", required=True, help="the KFP run id the clone belongs to")
@click.option(
    "--name-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="where the new PVC's name is written (the task's output)",
)
@click.option("--namespace", metavar="NS", help="the run's namespace; default: this pod's")
@click.option("--name", metavar="NAME", help="the new PVC's name; default: <PVC>-run-<run id>")
@click.option("--timeout", default=1800.0, show_default=True, help="seconds to wait for the snapshot and the clone")
@exit_codes
def clone_pvc(pvc: str, run_id: str, name_file: Path, namespace: str | None, name: str | None, timeout: float) -> None:
    """Clone the notebook's PVC for the run RUN_ID: wait for the run's initial snapshot of it, restore it into a
    new PVC of the run, and write that PVC's name to FILE (a create-volume-N task; docs/restore.md)."""
    remote = Remote.from_environment()
    if remote is None:
        raise InvalidRequest("rok clone-pvc runs in a cluster: set ROK_REGISTRY_URL to the registry's address")
    namespace = namespace or os.environ.get("ROK_NAMESPACE") or _pod_namespace()
    name = name or clone_name(pvc, run_id)
    deadline = time.monotonic() + timeout
    url = initial_volume_url(remote, namespace, run_id, pvc, deadline)
    asked = RestoreAsked(url, "pvc", name, namespace=namespace, run_id=run_id)
    result = remote.restore(asked, max(deadline - time.monotonic(), 1.0))
    if result["state"] == "failed":
        raise RestoreFailed(f"the clone of {pvc} for run {run_id} failed: {result.get('reason')}")
    name_file.parent.mkdir(parents=True, exist_ok=True)
    name_file.write_text(name)
    click.echo(f"cloned {pvc} ({url}) into PVC {namespace}/{name} for run {run_id}")


def initial_volume_url(remote: Remote, namespace: str, run_id: str, pvc: str, deadline: float) -> str:
    """The URL of ``pvc`` in the run's initial version, once the registry has it whole (waiting until then)."""
    api = f"/api/v1/namespaces/{quote(namespace)}"
    waiting_for = "the run"
    while True:
        lineage = _lineage(remote, api, run_id)
        initial = (lineage or {}).get("initial")
        if initial is not None:
            waiting_for = "its initial snapshot"
            if initial.get("status") != "pending":
                for member in initial.get("members") or ():
                    if member["volume"] == pvc:
                        return str(member["url"])
                stored = ", ".join(m["volume"] for m in initial.get("members") or ()) or "none"
                failed = {f["volume"]: f["reason"] for f in initial.get("failed") or ()}
                reason = f" ({failed[pvc]})" if pvc in failed else ""
                raise PermanentError(
                    f"the initial version of run {run_id} holds no volume {pvc}{reason}; it holds: {stored}"
                )
        if time.monotonic() > deadline:
            raise TemporaryError(f"the registry has no {waiting_for} of run {run_id} in {namespace} yet")
        time.sleep(remote.poll)


def _lineage(remote: Remote, api: str, run_id: str) -> dict[str, Any] | None:
    hits: Any = remote.call("GET", f"{api}/search?{urlencode({'q': run_id})}")
    for hit in hits if isinstance(hits, list) else ():
        if hit.get("kind") != "file":
            continue
        path = f"{api}/buckets/{quote(hit['bucket'])}/files/{quote(hit['file'])}/lineage"
        try:
            lineage = remote.call("GET", path)
        except NotFound:
            continue
        if (lineage.get("file") or {}).get("run_id") == run_id:
            return lineage
    return None


def _pod_namespace() -> str:
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError:
        raise InvalidRequest("give --namespace (this is not a pod with a service account)") from None
