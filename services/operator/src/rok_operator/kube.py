"""The operator's calls on the Kubernetes API, beside kopf's own (which watch and patch the RokClusters).

Children are written with server-side apply (``PATCH`` ``application/apply-patch+yaml``, field manager
``rok-operator``, forced): one idempotent call creates a missing object, restores an edited one and leaves
fields that others own alone. :data:`CALLS` says which verbs the operator uses on its children; RBAC grants
patch, list and delete on exactly the kinds of :mod:`rok_operator.bundle` (get on its workloads, for their status),
and a test checks that against the requests the operator makes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from rokcommon.errors import TemporaryError

from rok_operator.spec import API_VERSION, PLURAL

Obj = dict[str, Any]

FIELD_MANAGER = "rok-operator"
_IRREGULAR = {"NetworkPolicy": "networkpolicies", "Endpoints": "endpoints"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CustomResourceDefinition",
    "PersistentVolume",
}


def plural(kind: str) -> str:
    return _IRREGULAR.get(kind) or kind.lower() + ("es" if kind.endswith("s") else "s")


def cluster_scoped(kind: str) -> bool:
    return kind in _CLUSTER_SCOPED


def collection(api_version: str, kind: str, namespace: str | None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if cluster_scoped(kind) or namespace is None:
        return f"{prefix}/{plural(kind)}"
    return f"{prefix}/namespaces/{namespace}/{plural(kind)}"


def path_of(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{collection(obj['apiVersion'], obj['kind'], meta.get('namespace'))}/{quote(meta['name'])}"


class NotFound(Exception):
    pass


@dataclass
class Kube:
    """Calls on the API server through a ``kubernetes.client.ApiClient`` (its credentials, its TLS)."""

    api_client: Any

    async def _call(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                    body: Any = None, content_type: str = "application/json") -> Obj:  # fmt: skip
        return await asyncio.to_thread(self._call_sync, method, path, query or [], body, content_type)

    def _call_sync(self, method: str, path: str, query: list[tuple[str, str]], body: Any, content_type: str) -> Obj:
        from kubernetes.client.exceptions import ApiException

        method, url, headers, payload, _ = self.api_client.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(method, url, header_params=headers, body=payload)
            data = response.read()
        except ApiException as error:
            raise TemporaryError(f"{method} {path}: {error.reason}", delay=10) from error
        except OSError as error:  # urllib3 wraps connection failures in OSError subclasses
            raise TemporaryError(f"{method} {path}: the API server is unreachable ({error})", delay=10) from error
        status = response.status
        answer = json.loads(data or b"{}")
        if status == 404:
            raise NotFound(answer.get("message", path))
        if status >= 400:
            raise TemporaryError(f"{method} {path}: {status} {answer.get('message', '')}", delay=10)
        return answer

    async def apply(self, obj: Obj) -> Obj:
        body = {k: v for k, v in obj.items() if k != "status"}
        try:
            return await self._call(
                "PATCH",
                path_of(obj),
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                body=body,
                content_type="application/apply-patch+yaml",
            )
        except NotFound:  # apply creates what is missing: a 404 is a kind the cluster does not serve
            raise TemporaryError(
                f"the cluster serves no {obj['apiVersion']} {obj['kind']} (for {obj['metadata']['name']}): "
                "install what provides it (cert-manager for Certificates and Issuers)",
                delay=30,
            ) from None

    async def owned(self, api_version: str, kind: str, namespace: str | None, cluster: str, label: str) -> list[Obj]:
        """The objects of one kind that carry the label of RokCluster ``cluster``."""
        try:
            answer = await self._call(
                "GET", collection(api_version, kind, namespace), query=[("labelSelector", f"{label}={cluster}")]
            )
        except NotFound:  # a kind the cluster does not serve holds nothing
            return []
        items = answer.get("items", [])
        for item in items:  # a List's items carry no kind of their own
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    async def delete(self, obj: Obj) -> None:
        try:
            await self._call("DELETE", path_of(obj), body={"propagationPolicy": "Background"})
        except NotFound:
            pass

    async def read_status(self, obj: Obj) -> Obj | None:
        try:
            return (await self._call("GET", path_of(obj))).get("status") or {}
        except NotFound:
            return None

    async def read_cluster(self, name: str) -> Obj | None:
        """The RokCluster as the API server has it now (kopf hands handlers a view that may be a change behind)."""
        try:
            return await self._call("GET", f"/apis/{API_VERSION}/{PLURAL}/{quote(name)}")
        except NotFound:
            return None

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's keys, or None when it does not exist (its values stay in memory, never in a log)."""
        import base64

        try:
            secret = await self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{quote(name)}")
        except NotFound:
            return None
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}
