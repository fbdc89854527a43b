"""The objects of the `prod` overlay, as `kubectl kustomize deploy/overlays/prod` renders them.

deploy/ stays the one source: ``make manifests`` writes that rendering into this package
(``manifests/prod.yaml``) and a test fails while the file differs from what kustomize renders now. The
operator applies a RokCluster's spec to these objects (:mod:`rok_operator.rendering`) the way an overlay patches
the base; a RokCluster with the defaults renders exactly the overlay.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

Obj = dict[str, Any]

BUNDLE = "prod.yaml"


@functools.cache
def _load() -> tuple[Obj, ...]:
    text = resources.files("rok_operator").joinpath("manifests", BUNDLE).read_text()
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def objects() -> list[Obj]:
    """A fresh copy of every object of the overlay, in kustomize's order."""
    return copy.deepcopy(list(_load()))
