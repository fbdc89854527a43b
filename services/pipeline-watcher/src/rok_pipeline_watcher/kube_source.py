"""The Kubernetes source: Argo workflows of KFP runs and their pods, watched, translated, published.

It keeps the latest version of every watched object in memory (that is all the state it has), and after
each change re-translates the workflow it concerns. What the translator emits is published; what it emitted
before is not emitted again, and after a restart the deterministic event ids make the replay harmless.

A run that ends while the watch is down is often deleted soon after (the Workflow's TTL, pod GC), and its
end must still be told, once. So nothing a run was seen with is dropped before the run is done with:

* a deleted pod keeps its final state (the ``DELETED`` event carries it) as long as its workflow is known;
  so does a pod that a re-list no longer finds (its last state seen);
* a deleted workflow (its final state, from the ``DELETED`` event) or one that a re-list no longer finds (its
  last state seen) is *gone*: once the pods seen are as recent as the moment it went, it is translated one
  last time, as it ended (:func:`argo.concluded`: what was not seen done ended in ``Error``), and forgotten.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes import client
from rokcommon.errors import PermanentError
from rokcommon.events import Event

from rok_pipeline_watcher import argo
from rok_pipeline_watcher.kfp_api import KfpApi
from rok_pipeline_watcher.kube_watch import BOOKMARK, LISTED, Change, ResourceWatch
from rok_pipeline_watcher.translator import RunInfo, RunState, Translator

log = logging.getLogger(__name__)


Key = tuple[str, str]  # namespace, workflow name
Publish = Callable[[Event], Awaitable[Any]]


class KubeSource:
    def __init__(
        self,
        api_client: client.ApiClient,
        publish: Publish,
        *,
        kfp: KfpApi | None = None,
        namespace: str = "",
        watch_timeout: int = 300,
        retry_delay: float = 1.0,
        translator: Translator | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.publish = publish
        self.kfp = kfp
        self.translator = translator or Translator()
        self.ready = asyncio.Event()  # set once the first lists of workflows and pods are translated
        self.workflows: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, dict[str, Any]]] = {}  # by workflow, then node id
        self._pvs: dict[tuple[str, str], str] = {}  # (namespace, claim) → bound PV
        self._notebooks: dict[tuple[str, str], dict[str, Any] | None] = {}  # None: asked, not there
        self._notebook_claims: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen: dict[str, int] = {}  # kind → the resourceVersion its applied changes reach
        self._gone: set[Key] = set()  # workflows deleted, or not found by a re-list: translated once more
        self._pods_at: dict[Key, int] = {}  # resourceVersion of the last pod change seen, per workflow
        self._retry_delay = retry_delay
        options: dict[str, Any] = {"timeout_seconds": watch_timeout, "retry_delay": retry_delay}
        if namespace:
            self.watches = [
                ResourceWatch(
                    argo.WORKFLOWS,
                    self.custom.list_namespaced_custom_object,
                    argo.GROUP,
                    argo.VERSION,
                    namespace,
                    argo.WORKFLOWS,
                    label_selector=argo.RUN_ID_LABEL,
                    **options,
                ),
                ResourceWatch(
                    "pods", self.core.list_namespaced_pod, namespace, label_selector=argo.WORKFLOW_LABEL, **options
                ),
            ]
        else:
            self.watches = [
                ResourceWatch(
                    argo.WORKFLOWS,
                    self.custom.list_cluster_custom_object,
                    argo.GROUP,
                    argo.VERSION,
                    argo.WORKFLOWS,
                    label_selector=argo.RUN_ID_LABEL,
                    **options,
                ),
                ResourceWatch(
                    "pods", self.core.list_pod_for_all_namespaces, label_selector=argo.WORKFLOW_LABEL, **options
                ),
            ]

    async def run(self) -> None:
        """Watch until cancelled."""
        queue: asyncio.Queue[Change] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for w in self.watches:
            w.start(loop, queue)
        listed: set[str] = set()
        try:
            while True:
                change = await queue.get()
                await self.apply(change)
                if change.type == LISTED and not self.ready.is_set():
                    listed.add(change.kind)
                    if listed >= {w.kind for w in self.watches}:
                        self.ready.set()
        finally:
            for w in self.watches:  # at once, so that the threads stop even if this task is never resumed
                w.stop()
            await asyncio.gather(*(asyncio.to_thread(w.join) for w in self.watches))

    async def apply(self, change: Change) -> None:
        """Take one change into the picture and publish what it implies."""
        affected: set[Key]
        if change.resource_version and change.resource_version.isdigit():
            self._seen[change.kind] = int(change.resource_version)
        if change.type == BOOKMARK:
            affected = set(self.workflows) if change.kind == "pods" else set()
        elif change.kind == argo.WORKFLOWS:
            affected = self._apply_workflows(change)
        else:
            affected = self._apply_pods(change)
        if change.kind == argo.WORKFLOWS:
            self._drop_stray_pods()
        for key in sorted(affected):
            await self._translate(key)

    def _apply_workflows(self, change: Change) -> set[Key]:
        if change.type == LISTED:
            fresh = {_key(w): w for w in change.objects}
            for key, last in self.workflows.items():
                if key not in fresh and key not in self._gone:
                    # gone while nobody watched: it went at the latest when this list was taken
                    self.workflows[key] = _at(last, change.resource_version)
                    self._gone.add(key)
            for key, workflow in fresh.items():
                self._gone.discard(key)
                self.workflows[key] = workflow
            return set(self.workflows)
        (workflow,) = change.objects
        key = _key(workflow)
        self.workflows[key] = workflow  # a deleted workflow's final state, too
        if change.type == "DELETED":
            self._gone.add(key)
        else:
            self._gone.discard(key)
        return {key}

    def _apply_pods(self, change: Change) -> set[Key]:
        given = change.resource_version or ""
        version = int(given) if given.isdigit() else 0
        if change.type == LISTED:
            last_seen = self.pods
            self.pods = {}
            for pod in change.objects:
                self._index(pod, version)
            for key, by_node in last_seen.items():  # pods deleted while nobody watched: their last state
                if key in self.workflows:
                    for node_id, pod in by_node.items():
                        self.pods.setdefault(key, {}).setdefault(node_id, pod)
                    self._pods_at[key] = version
            return set(self.workflows)
        (pod,) = change.objects
        return {self._index(pod, version)}  # a deleted pod's final state, too

    def _drop_stray_pods(self) -> None:
        """Forget the pods of workflows that are not runs (or long gone), once the workflow watch is past them."""
        reached = self._seen.get(argo.WORKFLOWS, 0)
        for key in [k for k in self.pods if k not in self.workflows and self._pods_at.get(k, 0) <= reached]:
            del self.pods[key]
            self._pods_at.pop(key, None)

    def _index(self, pod: dict[str, Any], version: int) -> Key:
        key = _pod_workflow(pod)
        node_id = argo.pod_node_id(pod)
        if node_id:
            self.pods.setdefault(key, {})[node_id] = pod
            self._pods_at[key] = max(version, self._pods_at.get(key, 0))
        return key

    async def _translate(self, key: Key) -> None:
        workflow = self.workflows.get(key)
        if workflow is None:
            return
        namespace = key[0]
        pods = self.pods.get(key, {})
        gone = key in self._gone
        caught_up = self._pods_caught_up(workflow)
        if gone:
            if not caught_up:
                return  # a step pod may still be on its way: the last translation waits for it
            workflow = self._conclude(key, workflow, pods)
        run_id = argo.labels(workflow).get(argo.RUN_ID_LABEL, "")
        info = await self.kfp.run_info(run_id) if self.kfp and run_id else RunInfo()
        notebook = await self._notebook_pod(namespace, notebook_pod_name(workflow, pods))
        notebook_claims: dict[str, dict[str, Any]] = {}
        for volume in argo.mounted_volumes(notebook, container=None) if notebook else ():
            if volume.claim and (pvc := await self._claim(namespace, volume.claim)) is not None:
                notebook_claims[volume.claim] = pvc
        claims: dict[str, str | None] = {}
        for pod in [*pods.values(), *([notebook] if notebook else [])]:
            for volume in argo.mounted_volumes(pod, container=None):
                if volume.claim:
                    claims[volume.claim] = await self._pv(namespace, volume.claim)
        state = RunState(
            workflow=workflow,
            pods=pods,
            info=info,
            claims=claims,
            notebook_pod=notebook,
            notebook_claims=notebook_claims,
            pods_complete=caught_up,
        )
        for event in self.translator.translate(state):
            await self._publish(event)
        if gone:  # told to the end: forget it
            self.workflows.pop(key, None)
            self.pods.pop(key, None)
            self._pods_at.pop(key, None)
            self._gone.discard(key)
            self.translator.forget(argo.metadata(workflow).get("uid", ""))

    def _conclude(self, key: Key, workflow: dict[str, Any], pods: dict[str, dict[str, Any]]) -> dict[str, Any]:
        phase = (workflow.get("status") or {}).get("phase")
        if phase not in argo.DONE:
            log.warning(
                "workflow %s/%s is gone before it was seen to end (last seen %s): "
                "its steps not seen done, and the run, are finished as errors",
                *key,
                phase or "pending",
                extra={"run_id": argo.labels(workflow).get(argo.RUN_ID_LABEL, "")},
            )
        return argo.concluded(workflow, pods)  # a finished one: nodes not done were stopped with it

    def _pods_caught_up(self, workflow: dict[str, Any]) -> bool:
        """Whether the pods seen so far are as recent as the workflow: a step pod missing now is gone for good.

        (resourceVersions are opaque to clients in principle; they are etcd revisions, increasing, in
        practice. When one is not a number, the source assumes it has caught up.)
        """
        version = argo.metadata(workflow).get("resourceVersion") or ""
        if "pods" not in self._seen:
            return False
        return not version.isdigit() or self._seen["pods"] >= int(version)

    async def _publish(self, event: Event) -> None:
        delay = self._retry_delay
        while True:
            try:
                await self.publish(event)
            except PermanentError as error:  # e.g. an event too large for the bus: retrying cannot help
                log.error(
                    "cannot publish %s, skipping it: %s",
                    event.subject_for(),
                    error,
                    extra={"event_id": event.event_id},
                )
                return
            except Exception as error:
                log.warning(
                    "publishing %s failed (%s); retrying",
                    event.subject_for(),
                    error,
                    extra={"event_id": event.event_id},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                log.info("published %s", type(event).__name__, extra={"event_id": event.event_id})
                return

    async def _pv(self, namespace: str, claim: str) -> str | None:
        """The PersistentVolume a claim is bound to (remembered once bound)."""
        if (namespace, claim) in self._pvs:
            return self._pvs[(namespace, claim)]
        try:
            pvc = await asyncio.to_thread(
                self.core.read_namespaced_persistent_volume_claim, claim, namespace, _preload_content=False
            )
            volume = _json(pvc).get("spec", {}).get("volumeName")
        except client.ApiException as error:
            log.info("claim %s/%s: %s %s", namespace, claim, error.status, error.reason)
            return None
        if volume:
            self._pvs[(namespace, claim)] = volume
        return volume

    async def _claim(self, namespace: str, claim: str) -> dict[str, Any] | None:
        """A notebook's claim as JSON (what it asked for: size, access modes, class), read once."""
        if (namespace, claim) in self._notebook_claims:
            return self._notebook_claims[(namespace, claim)]
        try:
            pvc = await asyncio.to_thread(
                self.core.read_namespaced_persistent_volume_claim, claim, namespace, _preload_content=False
            )
        except client.ApiException as error:
            log.info("claim %s/%s: %s %s", namespace, claim, error.status, error.reason)
            return None
        self._notebook_claims[(namespace, claim)] = found = _json(pvc)
        return found

    async def _notebook_pod(self, namespace: str, name: str | None) -> dict[str, Any] | None:
        if not name:
            return None
        if (namespace, name) in self._notebooks:
            return self._notebooks[(namespace, name)]
        try:
            response = await asyncio.to_thread(self.core.read_namespaced_pod, name, namespace, _preload_content=False)
        except client.ApiException as error:
            if error.status == 404:
                self._notebooks[(namespace, name)] = None
            log.warning(
                "notebook pod %s/%s: %s %s; the run starts from its first step's volumes",
                namespace,
                name,
                error.status,
                error.reason,
            )
            return None
        self._notebooks[(namespace, name)] = pod = _json(response)
        return pod


def notebook_pod_name(workflow: Mapping[str, Any], pods: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The notebook pod a run came from: the workflow's annotation ``rok/notebook-pod``, else that of one of its
    pods (a ``create-volume-N`` task's, as compiled by ``rok compile``; the KFP SDK cannot annotate the workflow)."""
    named = argo.annotations_of(workflow).get(argo.NOTEBOOK_POD_ANNOTATION)
    if named:
        return named
    for _, pod in sorted(pods.items()):
        named = argo.annotations_of(pod).get(argo.NOTEBOOK_POD_ANNOTATION)
        if named:
            return named
    return None


def _json(response: Any) -> dict[str, Any]:
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _at(workflow: dict[str, Any], version: str | None) -> dict[str, Any]:
    """``workflow`` as known at ``version`` (the resourceVersion of the list that no longer found it)."""
    meta = {**argo.metadata(workflow), "resourceVersion": version or argo.metadata(workflow).get("resourceVersion")}
    return {**workflow, "metadata": meta}


def _key(workflow: dict[str, Any]) -> Key:
    meta = argo.metadata(workflow)
    return meta.get("namespace") or "default", meta.get("name") or ""


def _pod_workflow(pod: dict[str, Any]) -> Key:
    return argo.metadata(pod).get("namespace") or "default", argo.labels(pod).get(argo.WORKFLOW_LABEL, "")
