"""Validators for the custom resources rok's manifests and code create, from the CRDs' own schemas
(fixtures/*-schema.json, each naming its source)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): "cert-manager-certificate-v1-schema.json",
    ("cert-manager.io/v1", "Issuer"): "cert-manager-issuer-v1-schema.json",
    ("kubeflow.org/v1", "Notebook"): "notebook-v1-schema.json",
}


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused: the API server drops them silently, which hides typos."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((FIXTURES / SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft7Validator(strict(schema))


def validate(obj: dict[str, Any]) -> None:
    """Validate a custom resource as the API server would (metadata is checked by the server, not the CRD)."""
    body = {k: v for k, v in obj.items() if k != "metadata"}
    validator(obj["apiVersion"], obj["kind"]).validate({**body, "metadata": {"name": obj["metadata"]["name"]}})
