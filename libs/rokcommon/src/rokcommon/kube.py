"""The Kubernetes API client every rok process that talks to a cluster builds the same way (``ROK_KUBE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Kube = Literal["off", "incluster", "kubeconfig"]


def api_client(kube: Kube, kubeconfig: Path | None = None, *, needed_by: str = "this service") -> Any:
    """A ``kubernetes.client.ApiClient`` from the pod's service account (``incluster``) or from a kubeconfig file
    (``kubeconfig``; default ``~/.kube/config``). ``off`` is an error naming who needed the API."""
    from kubernetes import client, config  # ~0.3 s to import: only where a cluster is used

    if kube == "incluster":
        config.load_incluster_config()
        return client.ApiClient()
    if kube == "kubeconfig":
        return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    raise ValueError(f"{needed_by} needs the Kubernetes API: set ROK_KUBE=incluster or ROK_KUBE=kubeconfig")
