"""Who may do what on the bus: one NATS user per component, with the subjects it may publish and subscribe to.

The table is built from the subjects (:mod:`rokcommon.subjects`) and the streams and consumers
(:mod:`rokcommon.streams`), so it follows them when they change. Besides rok's own subjects each user gets the
JetStream API subjects its work needs (``$JS.API.…`` for stream and consumer info and for creating its own
durable consumers, ``$JS.ACK.<stream>.<durable>.>`` to ack what they deliver, ``$KV.<bucket>.>`` for its
key-value bucket), and replies only on its own inbox, ``_INBOX.<user>.>`` (each client connects with that
inbox prefix, :func:`inbox_prefix`), so that no user reads another's replies.

:func:`render` writes the table as a nats-server ``authorization`` block (nats-server 2.9 syntax); passwords
are given as ``$VARIABLE`` references, which nats-server resolves from its environment, or as literal values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rokcommon import streams, subjects

WATCHER, SNAPSHOTTER, REGISTRY, RESTORER, GUARD, CLI, OPERATOR, RUNNER = (
    "pipeline-watcher",
    "snapshotter",
    "registry",
    "restorer",
    "guard",
    "cli",
    "operator",
    "runner",
)
# the users of a cluster; the local runner (``rok run``) exists on one machine only
CLUSTER_USERS = (WATCHER, SNAPSHOTTER, REGISTRY, RESTORER, GUARD, CLI, OPERATOR)
LOCAL_USERS = (*CLUSTER_USERS, RUNNER)

API = "$JS.API"
REGISTRY_QUERIES = f"{subjects.REGISTRY_QUERY_PREFIX}.*.v1"
REGISTRY_RETENTION = f"{subjects.REGISTRY_RETENTION_PREFIX}.*.v1"
# a person's changes to what is kept; what the store's gc asks (every namespace's snapshots) is the operator's
FORGET_AND_PIN = (subjects.registry_retention("forget"), subjects.registry_retention("pin"))
RECORDED_SNAPSHOTS = subjects.registry_retention("snapshots")
RESTORE_PROGRESS_ALL = f"{subjects.RESTORE_PROGRESS}.*"
RESTORE_WATCHES_ALL = f"{subjects.RESTORE_WATCHES}.*"
RESTORE_OUTCOMES = (subjects.RESTORE_COMPLETED, subjects.RESTORE_FAILED)
RUN_AND_STEP_EVENTS = (
    f"{subjects.RUN_STARTED}.*",
    subjects.RUN_FINISHED,
    f"{subjects.STEP_STARTED}.*",
    f"{subjects.STEP_FINISHED}.*",
)
SNAPSHOT_RESULTS = (subjects.SNAPSHOT_COMPLETED, subjects.SNAPSHOT_FAILED)
ROK_STREAMS = tuple(spec.name for spec in streams.STREAMS)


@dataclass(frozen=True)
class Permissions:
    """What one NATS user may publish and subscribe to; ``allow_responses``: may reply to requests it receives."""

    user: str
    role: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def inbox_prefix(user: str) -> str:
    """The inbox prefix a user's client connects with; its replies arrive on ``<prefix>.<id>``."""
    return f"_INBOX.{user}"


def _inbox(user: str) -> str:
    return f"{inbox_prefix(user)}.>"


def manage_streams(names: Iterable[str] = ROK_STREAMS) -> tuple[str, ...]:
    """Look up, create and update the named streams (what :func:`rokcommon.streams.ensure_streams` does)."""
    return tuple(f"{API}.STREAM.{verb}.{name}" for name in names for verb in ("INFO", "CREATE", "UPDATE"))


def durable(stream: str, name: str) -> tuple[str, ...]:
    """Create, look up and pull from one durable consumer, and ack what it delivers."""
    return (
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
        f"{API}.CONSUMER.CREATE.{stream}.{name}",
        f"{API}.CONSUMER.CREATE.{stream}.{name}.>",
        f"{API}.CONSUMER.INFO.{stream}.{name}",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
    )


def dead_lettering(stream: str, name: str) -> tuple[str, ...]:
    """A service consumer's dead letters: its advisory consumer, the original message, the dead-letter stream."""
    advisories = "*" if name == "*" else f"{name}-dlq"  # '*': the consumers of every node
    return (
        *durable(streams.ADVISORIES.name, advisories),
        f"{API}.STREAM.MSG.GET.{stream}",
        subjects.dead_letter(stream, name),
    )


def consumer(stream: str, name: str) -> tuple[str, ...]:
    return durable(stream, name) + dead_lettering(stream, name)


def following(stream: str) -> tuple[str, ...]:
    """Read a stream with ordered (ephemeral) consumers, as :mod:`rokcommon.follow` does."""
    return (
        f"{API}.STREAM.NAMES",
        f"{API}.STREAM.INFO.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.DELETE.{stream}.*",
        f"{API}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    )


def kv_bucket(bucket: str) -> tuple[str, ...]:
    """Create, read and write one key-value bucket (a stream ``KV_<bucket>`` on subjects ``$KV.<bucket>.>``)."""
    stream = f"KV_{bucket}"
    return (
        *manage_streams((stream,)),
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"$KV.{bucket}.>",
    )


def _node(node: str | None) -> str:
    return subjects.node_token(node) if node else "*"


def watcher() -> Permissions:
    return Permissions(WATCHER, "publishes run and step events", (*RUN_AND_STEP_EVENTS, *manage_streams()), ())


def snapshotter(node: str | None = None, records_bucket: str = "rok-snapshots") -> Permissions:
    """A node's snapshotter; ``node=None`` is one user shared by the snapshotters of every node (a DaemonSet).

    The snapshot results carry no node in their subject, so any snapshotter may publish any node's results;
    its consumers (and so the events it may take) are its node's when ``node`` is given.
    """
    token = _node(node)
    steps, runs = f"snapshotter-{token}", f"snapshotter-{token}-runs"
    if node is None:  # the durable names of every node: one token each, matched by '*'
        steps = runs = "*"
    pipeline = streams.PIPELINE.name
    return Permissions(
        SNAPSHOTTER if node is None else f"{SNAPSHOTTER}-{token}",
        "publishes snapshot results",
        (
            *SNAPSHOT_RESULTS,
            *manage_streams(),
            *consumer(pipeline, steps),
            *consumer(pipeline, runs),
            *kv_bucket(records_bucket),
        ),
        (),
    )


def registry() -> Permissions:
    """The registry: version announcements and query replies; its HTTP API and pages also request restores and
    diffs (the registry reads no store: the restorer compares)."""
    return Permissions(
        REGISTRY,
        "announces versions, answers queries, requests restores and diffs for its HTTP API",
        (
            subjects.VERSION_COMMITTED,
            subjects.RESTORE_REQUESTED,
            subjects.STORE_DIFF,
            subjects.STORE_BROWSE,
            *manage_streams(),
            *consumer(streams.PIPELINE.name, "registry-pipeline"),
            *consumer(streams.SNAPSHOTS.name, "registry-snapshots"),
            *following(streams.RESTORES.name),  # the outcome of a restore its pages asked for
            RESTORE_WATCHES_ALL,  # a restore another replica accepted: asked of the replicas
        ),
        (REGISTRY_QUERIES, REGISTRY_RETENTION, RESTORE_PROGRESS_ALL, *RESTORE_OUTCOMES, RESTORE_WATCHES_ALL),
        allow_responses=True,
    )


def restorer(bucket: str = "rok_restores") -> Permissions:
    return Permissions(
        RESTORER,
        "publishes restore outcomes and progress, answers diffs and looks inside versions",
        (
            *RESTORE_OUTCOMES,
            RESTORE_PROGRESS_ALL,
            REGISTRY_QUERIES,
            *manage_streams(),
            *consumer(streams.RESTORES.name, "restorer"),
            *kv_bucket(bucket),
        ),
        (subjects.STORE_DIFF, subjects.STORE_BROWSE),
        allow_responses=True,
    )


def guard() -> Permissions:
    """The step guard in every KFP step pod: it only follows version commits."""
    return Permissions(GUARD, "follows version commits", following(streams.VERSIONS.name), ())


def cli() -> Permissions:
    """A person's ``rok``: restore requests, registry queries, forget and pin, and following its restores."""
    return Permissions(
        CLI,
        "requests restores and diffs, looks inside versions, asks the registry, forgets and pins",
        (
            subjects.RESTORE_REQUESTED,
            subjects.STORE_DIFF,
            subjects.STORE_BROWSE,
            REGISTRY_QUERIES,
            *FORGET_AND_PIN,
            *manage_streams(),
            *following(streams.RESTORES.name),  # the outcome of its restores
        ),
        (RESTORE_PROGRESS_ALL, *RESTORE_OUTCOMES),
    )


def operator() -> Permissions:
    """Whoever runs ``rok dlq``: reads the dead letters (and the originals of truncated ones), and replays them
    to the subjects rok's consumers take — which is why it is a user of its own, not a person's ``cli``; and
    ``rok repo gc --registry``, which asks the registry which of every namespace's snapshots it still records."""
    dlq = streams.DLQ.name
    return Permissions(
        OPERATOR,
        "inspects and replays dead letters (rok dlq), asks which snapshots are recorded (rok repo gc --registry)",
        (
            RECORDED_SNAPSHOTS,
            *RUN_AND_STEP_EVENTS,
            *SNAPSHOT_RESULTS,
            subjects.RESTORE_REQUESTED,
            subjects.dead_letter_replayed("*"),
            *manage_streams(),
            *(f"{API}.STREAM.MSG.GET.{stream}" for stream in ROK_STREAMS),
            f"{API}.STREAM.INFO.{dlq}",
        ),
        (),
    )


def runner() -> Permissions:
    """The local runner (``rok run``), which plays KFP and the watcher: run and step events, the clone's restore."""
    return Permissions(
        RUNNER,
        "publishes run and step events, requests the clone of a run's volumes",
        (
            *RUN_AND_STEP_EVENTS,
            subjects.RESTORE_REQUESTED,
            REGISTRY_QUERIES,  # whether the registry recorded the run's end
            *manage_streams(),
            *following(streams.VERSIONS.name),
            *following(streams.RESTORES.name),
        ),
        # its progress lines: each volume's snapshot as it lands, the clone's progress
        (subjects.SNAPSHOT_COMPLETED, subjects.SNAPSHOT_FAILED, RESTORE_PROGRESS_ALL),
    )


def table(users: Iterable[str] = CLUSTER_USERS, *, node: str | None = None) -> tuple[Permissions, ...]:
    """The permissions of ``users``; ``node`` narrows the snapshotter to one node's consumers."""
    make = {
        WATCHER: watcher,
        SNAPSHOTTER: lambda: snapshotter(node),
        REGISTRY: registry,
        RESTORER: restorer,
        GUARD: guard,
        CLI: cli,
        OPERATOR: operator,
        RUNNER: runner,
    }
    return tuple(make[user]() for user in users)


def _list(values: Iterable[str], indent: str) -> str:
    unique = dict.fromkeys(values)  # in order, each once
    return "[\n" + "".join(f"{indent}  {json.dumps(v)}\n" for v in unique) + f"{indent}]"


def render(table: Iterable[Permissions], passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block of a nats-server config for ``table``.

    ``passwords`` maps a user to its password: a literal (quoted), or ``$NAME`` to let nats-server read it
    from its environment variable ``NAME``.
    """
    lines = ["authorization {", "  users = ["]
    for p in table:
        secret = passwords[p.user]
        password = secret if secret.startswith("$") else json.dumps(secret)
        lines.append(f"    # {p.user}: {p.role}")
        lines.append(f"    {{user: {json.dumps(p.user)}, password: {password}, permissions: {{")
        lines.append(f"      publish: {{allow: {_list(p.publish, '      ')}}}")
        lines.append(f"      subscribe: {{allow: {_list((*p.subscribe, _inbox(p.user)), '      ')}}}")
        if p.allow_responses:
            lines.append("      allow_responses: true")
        lines.append("    }}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def password_variable(user: str) -> str:
    """The environment variable of nats-server that holds ``user``'s password in a cluster."""
    return "ROK_NATS_PASSWORD_" + user.upper().replace("-", "_")


def render_cluster() -> str:
    """``deploy/base/nats/auth.conf``: the cluster's users, each password read from nats-server's environment."""
    header = (
        "# Generated by rokcommon.permissions.render_cluster() (tests/deploy checks it is current): one NATS user\n"
        "# per rok component. Each password comes from nats-server's environment, filled from the Secret\n"
        "# rok-nats-<user> (key: password) by the StatefulSet.\n"
    )
    passwords = {user: "$" + password_variable(user) for user in CLUSTER_USERS}
    return header + render(table(CLUSTER_USERS), passwords)
