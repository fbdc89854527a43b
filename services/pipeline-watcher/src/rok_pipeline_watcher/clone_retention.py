"""Retention of the runs' clones: the PVCs ``rok clone-pvc`` made for a run (label ``rok.kubeflow.org/run`` =
the KFP run id), which its steps mounted.

The rule (docs/operations.md, "Clones of a run"):

* a clone is **never** deleted while its run's workflow is active (not Succeeded, Failed or Error);
* it is deleted once its run has finished and ``ROK_CLONE_RETENTION_HOURS`` (default 24) have passed since the
  workflow's ``finishedAt``: its content is in the run's versions, which restore it;
* a clone whose workflow is gone (deleted, archived) is deleted once it is as old as that; and while the
  workflow exists, the clone gets an ``ownerReference`` to it, so deleting the workflow removes its clones too
  (Kubernetes' garbage collector);
* removing the label keeps a clone for good.

The pipeline-watcher applies it every ``ROK_CLONE_SWEEP_SECONDS``, from the workflows it already watches, once
its watches have listed them (so a workflow not known then is gone); with several replicas, the leader does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from rokcommon.events.restores import RUN_LABEL

from rok_pipeline_watcher import argo
from rok_pipeline_watcher.translator import timestamp

log = logging.getLogger(__name__)


class CloneRetention:
    """Deletes the clones that the rule says are done with, and ties the others to their workflow."""

    def __init__(
        self,
        api_client: Any,
        workflows: Callable[[], Iterable[Mapping[str, Any]]],
        *,
        keep: timedelta,
        namespace: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.workflows = workflows
        self.keep = keep
        self.namespace = namespace
        self.clock = clock

    async def sweep(self) -> list[str]:
        """Apply the rule once; the clones deleted (``namespace/name``)."""
        runs: dict[tuple[str, str], Mapping[str, Any]] = {}
        for known in list(self.workflows()):
            run_id = argo.labels(known).get(argo.RUN_ID_LABEL)
            if run_id:
                runs[(argo.metadata(known).get("namespace") or "", run_id)] = known
        now = self.clock()
        deleted = []
        for claim in await self._clones():
            meta = claim.get("metadata") or {}
            namespace, name = meta.get("namespace") or "", meta.get("name") or ""
            run_id = (meta.get("labels") or {}).get(RUN_LABEL, "")
            workflow = runs.get((namespace, run_id))
            if workflow is not None and (workflow.get("status") or {}).get("phase") not in argo.DONE:
                await self._own(claim, workflow)
                continue  # the run is active: its steps may mount the clone
            if workflow is not None:
                since = timestamp((workflow.get("status") or {}).get("finishedAt"))
                why = f"its run {run_id} finished at {since.isoformat()}"
            else:
                since = timestamp(meta.get("creationTimestamp"))
                why = f"its run {run_id} has no workflow any more"
            if now - since < self.keep:
                continue
            if await self._delete(namespace, name):
                log.info("deleted the clone %s/%s: %s, over %s ago", namespace, name, why, self.keep)
                deleted.append(f"{namespace}/{name}")
        return deleted

    async def run(self, ready: asyncio.Event, interval: float) -> None:
        await ready.wait()  # the watches have listed the workflows: one not known now is gone
        while True:
            try:
                await self.sweep()
            except Exception as error:  # a failed sweep is tried again at the next one
                log.warning("the sweep of the runs' clones failed: %s", error)
            await asyncio.sleep(interval)

    async def _clones(self) -> list[dict[str, Any]]:
        def listed() -> Any:  # a plain list (no watch): one sweep reads the clones as they are
            if self.namespace:
                return self.core.list_namespaced_persistent_volume_claim(self.namespace, label_selector=RUN_LABEL)
            return self.core.list_persistent_volume_claim_for_all_namespaces(label_selector=RUN_LABEL)

        found = await asyncio.to_thread(listed)
        return [self.core.api_client.sanitize_for_serialization(item) for item in found.items]

    async def _own(self, claim: Mapping[str, Any], workflow: Mapping[str, Any]) -> None:
        meta, owner = claim.get("metadata") or {}, argo.metadata(workflow)
        if not owner.get("uid") or any(r.get("uid") == owner["uid"] for r in meta.get("ownerReferences") or ()):
            return
        reference = {"apiVersion": argo.API_VERSION, "kind": "Workflow", "name": owner.get("name"), "uid": owner["uid"]}
        patch = {"metadata": {"ownerReferences": [*(meta.get("ownerReferences") or ()), reference]}}
        try:
            await asyncio.to_thread(
                self.core.patch_namespaced_persistent_volume_claim, meta["name"], meta["namespace"], patch
            )
        except client.ApiException as error:
            log.info(
                "clone %s/%s: no owner reference (%s %s)", meta["namespace"], meta["name"], error.status, error.reason
            )

    async def _delete(self, namespace: str, name: str) -> bool:
        try:
            await asyncio.to_thread(self.core.delete_namespaced_persistent_volume_claim, name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True
