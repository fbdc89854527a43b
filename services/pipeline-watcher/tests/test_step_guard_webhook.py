"""The mutating webhook adds the step guard to KFP step pods, as a native sidecar, and to nothing else."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess

import aiohttp
import pytest
from rok_pipeline_watcher.guard import GuardConfig, review
from rok_pipeline_watcher.guard.webhook import start
from watcher_testkit import load

CONFIG = GuardConfig(image="rok-guard:test", nats_url="nats://nats.rok:4222", before_timeout=300, after_timeout=120)


def apply_patch(doc, ops):
    """RFC 6902 add, enough to see what the API server would make of the patch."""
    doc = json.loads(json.dumps(doc))
    for op in ops:
        assert op["op"] == "add"
        *parents, last = op["path"].split("/")[1:]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return doc


def patched_pod(admission_review):
    answer = review(admission_review, CONFIG)
    response = answer["response"]
    assert response["uid"] == admission_review["request"]["uid"]
    assert response["allowed"] is True
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    return apply_patch(admission_review["request"]["object"], json.loads(base64.b64decode(response["patch"])))


def env(container):
    return {e["name"]: e.get("value") for e in container["env"]}


def test_a_kfp_step_pod_gets_the_guard_as_a_native_sidecar_before_every_other_container():
    admission = load("admission_review_kfp_v2_executor.json")
    pod = admission["request"]["object"]

    patched = patched_pod(admission)

    guard, *others = patched["spec"]["initContainers"]
    assert [c["name"] for c in others] == [c["name"] for c in pod["spec"]["initContainers"]]
    assert guard["name"] == "rok-guard"
    assert guard["restartPolicy"] == "Always"
    assert guard["startupProbe"]["exec"]["command"] == ["rok-guard", "probe"]
    assert guard["startupProbe"]["periodSeconds"] * guard["startupProbe"]["failureThreshold"] > CONFIG.before_timeout
    assert env(guard)["ROK_GUARD_STEP_ID"] == pod["metadata"]["annotations"]["workflows.argoproj.io/node-id"]
    assert env(guard)["ROK_GUARD_WORKFLOW_UID"] == pod["metadata"]["ownerReferences"][0]["uid"]
    assert env(guard)["ROK_NATS_URL"] == CONFIG.nats_url
    assert patched["spec"]["terminationGracePeriodSeconds"] > CONFIG.after_timeout
    assert patched["spec"]["containers"] == pod["spec"]["containers"]


def test_a_step_pod_without_init_containers_gets_a_list_with_the_guard():
    admission = load("admission_review_kfp_v2_executor.json")
    del admission["request"]["object"]["spec"]["initContainers"]

    patched = patched_pod(admission)

    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["rok-guard"]


@pytest.mark.parametrize(
    "fixture", ["admission_review_kfp_v2_driver.json", "admission_review_notebook.json"], ids=["driver", "notebook"]
)
def test_driver_pods_and_pods_outside_kfp_are_allowed_untouched_even_when_they_mount_a_claim(fixture):
    admission = load(fixture)
    spec = admission["request"]["object"]["spec"]
    spec["volumes"].append({"name": "ws", "persistentVolumeClaim": {"claimName": "ws-nb-1-run-8xfss"}})

    assert patched_pod(admission) is None


def test_a_kfp_v1_step_whose_name_ends_in_driver_is_still_a_step():
    admission = load("admission_review_kfp_v2_executor.json")
    pod = admission["request"]["object"]
    pod["metadata"]["name"] = "retry-random-failures-p9snt-1189960944"
    pod["metadata"]["annotations"]["workflows.argoproj.io/node-name"] = "retry-random-failures-p9snt.screw-driver"

    assert patched_pod(admission) is not None


def test_pods_reused_from_the_cache_without_volumes_or_already_guarded_are_allowed_untouched():
    cached = load("admission_review_kfp_v2_executor.json")
    cached["request"]["object"]["metadata"]["labels"]["pipelines.kubeflow.org/reused_from_cache"] = "true"
    no_volumes = load("admission_review_kfp_v2_executor.json")
    spec = no_volumes["request"]["object"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if "persistentVolumeClaim" not in v]
    guarded = load("admission_review_kfp_v2_executor.json")
    guarded["request"]["object"] = patched_pod(load("admission_review_kfp_v2_executor.json"))

    assert [patched_pod(a) for a in (cached, no_volumes, guarded)] == [None, None, None]


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_the_webhook_answers_admission_reviews_over_https(certificate, unused_tcp_port):
    cert, key = certificate
    runner = await start(CONFIG, "127.0.0.1", unused_tcp_port, cert, key)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"https://127.0.0.1:{unused_tcp_port}/mutate",
                json=load("admission_review_kfp_v2_executor.json"),
                ssl=trust,
            ) as response:
                answer = await response.json()
    finally:
        await runner.cleanup()

    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert ops[0]["path"] == "/spec/initContainers/0"
    assert ops[0]["value"]["name"] == "rok-guard"
