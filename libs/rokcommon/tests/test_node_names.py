"""Node names are Kubernetes DNS-1123 subdomains at every boundary — ``ROK_NODE_NAME``, every event field that
carries a node, the subjects built from one — and anything else is refused in one line that names the value."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError
from rokcommon import bus, streams, subjects
from rokcommon.events import RunRef, StepRef, StepStarted, VolumeRef
from rokcommon.service import Service
from rokcommon.settings import InvalidSettings, NodeName, RokSettings, load
from roktesting.nats import NatsServer, running

BAD = ["Evil Node!", "../../etc", "<script>", "a..b", "a.-b", "-a", "a_b", "UPPER", "", "a" * 254]
GOOD = ["node-1", "ip-10-0-0-12.ec2.internal", "a", "a" * 253]
STEP = StepRef(run=RunRef(namespace="team-a", run_id="r", workflow_uid="wf"), step_id="wf-1", name="train")


class NodeSettings(RokSettings):
    node_name: NodeName = "node-1"


def started(node: str) -> StepStarted:
    return StepStarted.make(
        step=STEP,
        node=node,
        volumes=(VolumeRef(name="workspace", role="workspace", path="/ws"),),
        started_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("bad", BAD)
def test_a_name_that_is_no_dns_subdomain_is_refused_everywhere_with_its_value(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="not a valid node name") as refused:
        subjects.node_token(bad)
    assert repr(bad) in str(refused.value) and "\n" not in str(refused.value)
    if "_" not in bad:  # "a_b" is the token of "a.b"
        with pytest.raises(ValueError, match="not a valid node name"):
            subjects.node_name(bad.replace(".", "_"))
    with pytest.raises(ValidationError, match="not a valid node name"):
        started(bad)
    monkeypatch.setenv("ROK_NODE_NAME", bad)
    with pytest.raises(InvalidSettings) as setting:
        load(NodeSettings)
    assert str(setting.value).startswith("invalid settings: ROK_NODE_NAME: ")
    assert repr(bad) in str(setting.value) and "\n" not in str(setting.value)


@pytest.mark.parametrize("good", GOOD)
def test_a_kubernetes_node_name_passes_every_boundary(good: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert subjects.node_name(subjects.node_token(good)) == good
    assert started(good).subject_for() == f"{subjects.STEP_STARTED}.{subjects.node_token(good)}"
    monkeypatch.setenv("ROK_NODE_NAME", good)
    assert load(NodeSettings).node_name == good


def test_a_snapshotter_given_a_bad_node_name_exits_with_one_line_naming_it() -> None:
    env = {**os.environ, "ROK_NODE_NAME": "Evil Node!", "ROK_NATS_URL": "nats://127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "rok_snapshotter"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "rok-snapshotter: invalid settings: ROK_NODE_NAME: 'Evil Node!' is not a valid node name: a DNS-1123 "
        "subdomain of at most 253 characters, lower-case letters, digits, '-' and '.', each part starting and "
        "ending with a letter or digit"
    ]


async def test_an_event_with_a_bad_node_is_dead_lettered_naming_it(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    settings = RokSettings(nats_url=nats_server.url, log_format="text")
    service = Service("nodes", settings, graceful_timeout=2.0)
    handled: list[BaseModel] = []

    @service.consumer(service.consumer_spec(streams.PIPELINE, "test-nodes", f"{subjects.STEP_STARTED}.*"))
    async def on_started(event: StepStarted) -> None:
        handled.append(event)

    evil = started("node-1").model_dump_json().replace('"node-1"', '"Evil Node!"').encode()
    async with running(service):
        await js.publish(f"{subjects.STEP_STARTED}.node-1", evil, headers={bus.MSG_ID: "evil"})
        sub = await js.pull_subscribe(f"{subjects.DEAD_LETTER}.>", stream=streams.DLQ.name)
        [letter] = await asyncio.wait_for(sub.fetch(1, timeout=10), 15)
    assert handled == []
    assert "'Evil Node!' is not a valid node name" in letter.headers[bus.DEAD_REASON]
    assert letter.headers[bus.DEAD_CONSUMER] == "test-nodes"
