"""The fake API server's object lifecycle, through the official client, as a real API server behaves: CRDs and
discovery, the status subresource and ``metadata.generation``, finalizers, owner references and garbage
collection, server-side apply, JSON patch tests."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from roktesting.kubernetes import FakeKube

GROUP, VERSION, PLURAL = "example.org", "v1", "widgets"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {"kind": "Widget", "plural": PLURAL, "singular": "widget", "shortNames": ["wd"]},
        "versions": [{"name": VERSION, "served": True, "storage": True, "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {"type": "object"}}}],
    },
}  # fmt: skip
WIDGETS = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    fake_kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    return fake_kube


def test_a_crd_makes_its_resource_discoverable_with_its_scope_and_status_subresource(kube: FakeKube):
    groups = client.ApisApi(kube.api_client).get_api_versions()
    assert GROUP in [g.name for g in groups.groups]
    import json
    import urllib.request

    with urllib.request.urlopen(f"{kube.url}/apis/{GROUP}/{VERSION}") as answer:
        document = json.load(answer)
    names = {r["name"]: r for r in document["resources"]}
    assert names[PLURAL]["kind"] == "Widget" and names[PLURAL]["namespaced"] is False
    assert f"{PLURAL}/status" in names
    kube.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    assert GROUP not in [g.name for g in client.ApisApi(kube.api_client).get_api_versions().groups]


def test_status_is_written_only_through_its_subresource_and_generation_counts_spec_changes(kube: FakeKube):
    api = client.CustomObjectsApi(kube.api_client)
    created = api.create_cluster_custom_object(GROUP, VERSION, PLURAL, {"apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}, "status": {"phase": "forged"}})  # fmt: skip
    assert created["metadata"]["generation"] == 1
    api.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, "w", {"status": {"phase": "Ready"}})
    after_status = api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", {"status": {"phase": "ignored"}})
    assert after_status["status"] == {"phase": "Ready"}
    assert after_status["metadata"]["generation"] == 1, "status writes and no-op patches keep the generation"
    changed = api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", {"spec": {"size": 2}})
    assert changed["metadata"]["generation"] == 2
    assert changed["status"] == {"phase": "Ready"}


def test_a_finalizer_holds_a_deleted_object_until_it_is_removed(kube: FakeKube):
    api = client.CustomObjectsApi(kube.api_client)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "w", "finalizers": ["x/y"]}}
    api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "w")
    held = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "w")
    assert held["metadata"]["deletionTimestamp"]
    since = kube.resource_version
    api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "w")
    assert gone.value.status == 404
    assert [c.type for c in kube._history if c.rv > since] == ["DELETED"]


def _owned_map(kube: FakeKube, name: str, *owners: dict) -> None:
    refs = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": o["metadata"]["name"],
             "uid": o["metadata"]["uid"]} for o in owners]  # fmt: skip
    kube.create("/api/v1/namespaces/ns/configmaps", {"metadata": {"name": name, "ownerReferences": refs}})


def test_deleting_an_owner_collects_its_dependents_unless_another_owner_lives_or_they_are_orphaned(kube: FakeKube):
    a = kube.create(WIDGETS, {"metadata": {"name": "a"}})
    b = kube.create(WIDGETS, {"metadata": {"name": "b"}})
    c = kube.create(WIDGETS, {"metadata": {"name": "c"}})
    _owned_map(kube, "only-a", a)
    _owned_map(kube, "a-and-b", a, b)
    _owned_map(kube, "only-c", c)
    client.CustomObjectsApi(kube.api_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, "a")
    names = {o["metadata"]["name"]: o for o in kube.list_objects("/api/v1/namespaces/ns/configmaps")}
    assert set(names) == {"a-and-b", "only-c"}
    assert [r["name"] for r in names["a-and-b"]["metadata"]["ownerReferences"]] == ["b"]
    body = {"propagationPolicy": "Orphan"}
    client.CustomObjectsApi(kube.api_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, "c", body=body)
    orphan = kube.get("/api/v1/namespaces/ns/configmaps/only-c")
    assert "ownerReferences" not in orphan["metadata"]


def test_server_side_apply_creates_then_merges_and_needs_a_field_manager(kube: FakeKube):
    api = client.CustomObjectsApi(kube.api_client)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "w", "labels": {"a": "1"}},
            "spec": {"k": "v"}}  # fmt: skip
    apply = {"field_manager": "me", "force": True, "_content_type": "application/apply-patch+yaml"}
    api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", body, **apply)
    assert kube.get(f"{WIDGETS}/w")["spec"] == {"k": "v"}
    kube.patch(f"{WIDGETS}/w", {"spec": {"k": "edited", "other": "kept"}})
    api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", body, **apply)
    assert kube.get(f"{WIDGETS}/w")["spec"] == {"k": "v", "other": "kept"}
    with pytest.raises(ApiException) as refused:
        api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", body, _content_type="application/apply-patch+yaml")
    assert refused.value.status == 422


def test_a_json_patch_whose_test_fails_changes_nothing(kube: FakeKube):
    kube.create(WIDGETS, {"metadata": {"name": "w"}, "spec": {"k": "v"}})
    version = kube.get(f"{WIDGETS}/w")["metadata"]["resourceVersion"]
    api = client.CustomObjectsApi(kube.api_client)
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
             {"op": "replace", "path": "/spec/k", "value": "w"}]  # fmt: skip
    with pytest.raises(ApiException) as refused:
        api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", stale)
    assert refused.value.status == 422
    assert kube.get(f"{WIDGETS}/w")["spec"] == {"k": "v"}
    fresh = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, stale[1]]
    api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w", fresh)
    assert kube.get(f"{WIDGETS}/w")["spec"] == {"k": "w"}
