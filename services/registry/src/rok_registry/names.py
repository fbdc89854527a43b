"""Names the registry gives: bucket and file names with a short suffix, and short URL-safe version ids.

A bucket is ``<experiment>-<suffix>`` (the suffix random, like Rok's ``3mis2``, so that an experiment
deleted and created again gets a new bucket name); the fallback bucket of runs without an experiment is
``default-<suffix>``. A run's file is ``<run name>-<bucket suffix>-<4 characters of its workflow uid>``: the
bucket's suffix shows in it, and it is stable; a run named with the suffix already (as ``rok submit`` names them,
``<pipeline>-<suffix>-…``) does not get it twice. An experiment named as a bucket (``churn-ab3cd``, the name
``rok submit`` gives the KFP experiment) is that bucket (:mod:`rok_registry.rows`). A version's id is its key's
(:attr:`rokcommon.versions.VersionKey.version_id`), so a replayed event names the same version.
"""

from __future__ import annotations

import re
import secrets
import string

from rokcommon.versions import base32_digest

SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
FALLBACK_BUCKET = "default"
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def slug(text: str | None, *, max_length: int = 40, default: str = "run") -> str:
    """``"My Experiment #2"`` → ``my-experiment-2``: lower-case letters, digits and single dashes."""
    cleaned = _NOT_NAME.sub("-", (text or "").lower()).strip("-")[:max_length].strip("-")
    return cleaned or default


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(length))


def bucket_name(experiment: str | None, suffix: str) -> str:
    return f"{slug(experiment, default=FALLBACK_BUCKET) if experiment else FALLBACK_BUCKET}-{suffix}"


def file_name(run_name: str | None, run_id: str, bucket_suffix: str, workflow_uid: str) -> str:
    name = slug(run_name or run_id)
    if f"-{bucket_suffix}-" not in f"-{name}-":
        name = f"{name}-{bucket_suffix}"
    return f"{name}-{base32_digest(workflow_uid, 4)}"
