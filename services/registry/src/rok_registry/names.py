"""Names the registry gives: bucket and file names with a short suffix, and short URL-safe version ids.

A bucket is ``<experiment>-<suffix>`` (the suffix random, like Rok's ``3mis2``, so that an experiment
deleted and created again gets a new bucket name); the fallback bucket of runs without an experiment is
``default-<suffix>``. A run's file is ``<run name>-<bucket suffix>-<4 characters of its workflow uid>``: the
bucket's suffix shows in it, and it is stable. A version id is derived from the version's natural key
(workflow uid, step, attempt, phase), so a replayed event names the same version.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string

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
    return f"{slug(run_name or run_id)}-{bucket_suffix}-{_digest(workflow_uid, 4)}"


def version_id(workflow_uid: str, step_id: str | None, attempt: int, phase: str) -> str:
    """Ten characters of ``[a-z2-7]``: short, URL-safe, and the same for the same version everywhere."""
    return _digest(f"{workflow_uid}\x1f{step_id or ''}\x1f{attempt}\x1f{phase}", 10)


def _digest(text: str, length: int) -> str:
    raw = hashlib.blake2b(text.encode(), digest_size=10).digest()
    return base64.b32encode(raw).decode().lower()[:length]
