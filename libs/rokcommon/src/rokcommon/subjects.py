"""NATS subjects, declared once.

Subjects are ``rok.<domain>.<event>.v1[.<node>]``. Events that a node's snapshotter must act on end with the
node's name written as one subject token: Kubernetes node names are DNS names full of dots, and a dot separates
subject tokens, so each ``.`` becomes ``_`` (node names never contain ``_``). The payload carries the real name.
"""

from __future__ import annotations

import re

RUN_STARTED = "rok.run.started.v1"  # + .<node>: the node that holds the notebook's volumes
RUN_FINISHED = "rok.run.finished.v1"
STEP_STARTED = "rok.step.started.v1"  # + .<node>
STEP_FINISHED = "rok.step.finished.v1"  # + .<node>
SNAPSHOT_COMPLETED = "rok.snapshot.completed.v1"
SNAPSHOT_FAILED = "rok.snapshot.failed.v1"
VERSION_COMMITTED = "rok.version.committed.v1"
RESTORE_REQUESTED = "rok.restore.requested.v1"
RESTORE_COMPLETED = "rok.restore.completed.v1"
RESTORE_FAILED = "rok.restore.failed.v1"
RESTORE_PROGRESS = "rok.restore.progress.v1"  # + .<request id>; core NATS only, never stored
DEAD_LETTER = "rok.dlq.v1"  # + .<stream>.<consumer>; + .replayed.<letter>: that letter was replayed

# Request-reply: the full diff between two versions, answered by a service that holds the store (the restorer)
STORE_DIFF = "rok.store.diff.v1"
# Request-reply: a look inside one volume of a version (an entry, a directory, a file's bytes), answered the same way
STORE_BROWSE = "rok.store.browse.v1"

# Request-reply queries answered by the registry: rok.registry.<query>.v1
REGISTRY_QUERY_PREFIX = "rok.registry"
# Request-reply requests that change what the registry keeps (forget, pin) or ask what its forgetting left
# (the store's gc): rok.registry.retention.<request>.v1, apart from the queries so that who may ask is apart too
REGISTRY_RETENTION_PREFIX = "rok.registry.retention"

# Request-reply between the registry's replicas: the state of a restore one of them accepted, asked by the one a
# client's poll reached (rok.web.restores.v1.<request id>); only the registry may publish or subscribe
RESTORE_WATCHES = "rok.web.restores.v1"

# Subjects whose last token is a node name.
NODE_ROUTED = (RUN_STARTED, STEP_STARTED, STEP_FINISHED)

# Kubernetes node names are DNS-1123 subdomains: dot-separated labels of lower-case letters, digits and '-', each
# starting and ending with a letter or digit, 253 characters at most.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NODE_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def check_node_name(name: str) -> str:
    """``name`` if it is a Kubernetes node name (a DNS-1123 subdomain), else a one-line ValueError naming it."""
    if len(name) > 253 or not _NODE_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid node name: a DNS-1123 subdomain of at most 253 characters, "
            "lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit"
        )
    return name


def node_token(node_name: str) -> str:
    """The subject token for a Kubernetes node name: ``ip-10-0-0-12.ec2.internal`` → ``ip-10-0-0-12_ec2_internal``."""
    return check_node_name(node_name).replace(".", "_")


def node_name(token: str) -> str:
    """The node name a subject token stands for (the inverse of :func:`node_token`)."""
    return check_node_name(token.replace("_", "."))


def for_node(subject: str, node_name: str) -> str:
    """``for_node(STEP_STARTED, "a.b")`` → ``rok.step.started.v1.a_b``."""
    if subject not in NODE_ROUTED:
        raise ValueError(f"{subject} is not routed by node")
    return f"{subject}.{node_token(node_name)}"


def node_filter(node_name: str) -> str:
    """The filter that selects every node-routed event of one node (run started, step started and finished)."""
    return f"rok.*.*.v1.{node_token(node_name)}"


def registry_query(name: str) -> str:
    """The request-reply subject of a registry query, e.g. ``registry_query("resolve")``."""
    return f"{REGISTRY_QUERY_PREFIX}.{name}.v1"


def registry_retention(name: str) -> str:
    """The request-reply subject of a retention request, e.g. ``registry_retention("forget")``."""
    return f"{REGISTRY_RETENTION_PREFIX}.{name}.v1"


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def restore_progress(request_id: str) -> str:
    """``rok.restore.progress.v1.<request_id>``, where each character a subject token cannot hold becomes ``_``."""
    return f"{RESTORE_PROGRESS}.{_NOT_TOKEN.sub('_', request_id)}"


def restore_watch(request_id: str) -> str:
    """``rok.web.restores.v1.<request_id>``, each character a subject token cannot hold as ``_``."""
    return f"{RESTORE_WATCHES}.{_NOT_TOKEN.sub('_', request_id)}"


def dead_letter(stream: str, consumer: str) -> str:
    return f"{DEAD_LETTER}.{stream}.{consumer}"


def dead_letter_replayed(letter: int | str) -> str:
    """The subject of the mark that dead letter ``letter`` (its sequence in the dead-letter stream) was replayed."""
    return f"{DEAD_LETTER}.replayed.{letter}"
