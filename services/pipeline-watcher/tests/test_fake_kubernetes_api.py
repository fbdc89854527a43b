"""The fake API server speaks list/watch as the real ``kubernetes`` client expects it."""

from __future__ import annotations

import pytest
from kubernetes import client, watch

PODS = "/api/v1/namespaces/ns/pods"


def pod(name, **labels):
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "main", "image": "x"}]}}


def test_created_objects_get_uid_resource_version_and_creation_time_and_list_by_label(fake_kube):
    core = client.CoreV1Api(fake_kube.api_client)
    created = core.create_namespaced_pod("ns", pod("a", app="x"))
    core.create_namespaced_pod("ns", pod("b", app="y"))

    listed = core.list_namespaced_pod("ns", label_selector="app=x")

    assert created.metadata.uid and created.metadata.creation_timestamp
    assert [p.metadata.name for p in listed.items] == ["a"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    assert core.read_namespaced_pod("b", "ns").metadata.labels == {"app": "y"}


def test_custom_resources_are_created_patched_and_deleted_through_the_generic_paths(fake_kube):
    custom = client.CustomObjectsApi(fake_kube.api_client)
    body = {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "metadata": {"name": "nb"}, "spec": {"a": 1}}
    custom.create_namespaced_custom_object("kubeflow.org", "v1", "ns", "notebooks", body)

    custom.patch_namespaced_custom_object("kubeflow.org", "v1", "ns", "notebooks", "nb", {"spec": {"b": 2}})
    got = custom.get_namespaced_custom_object("kubeflow.org", "v1", "ns", "notebooks", "nb")
    custom.delete_namespaced_custom_object("kubeflow.org", "v1", "ns", "notebooks", "nb")

    assert got["spec"] == {"a": 1, "b": 2}
    with pytest.raises(client.ApiException) as gone:
        custom.get_namespaced_custom_object("kubeflow.org", "v1", "ns", "notebooks", "nb")
    assert gone.value.status == 404


def test_a_watch_replays_changes_after_its_resource_version_and_a_compacted_one_is_gone(fake_kube):
    core = client.CoreV1Api(fake_kube.api_client)
    first = core.create_namespaced_pod("ns", pod("a"))
    core.create_namespaced_pod("ns", pod("b"))
    core.delete_namespaced_pod("a", "ns")

    events = watch.Watch().stream(
        core.list_namespaced_pod, "ns", resource_version=first.metadata.resource_version, timeout_seconds=1
    )
    seen = [(e["type"], e["object"].metadata.name) for e in events]

    assert seen == [("ADDED", "b"), ("DELETED", "a")]
    fake_kube.compact()
    with pytest.raises(client.ApiException) as gone:
        list(
            watch.Watch().stream(
                core.list_namespaced_pod, "ns", resource_version=first.metadata.resource_version, timeout_seconds=1
            )
        )
    assert gone.value.status == 410
