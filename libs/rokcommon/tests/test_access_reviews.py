"""Access reviews through the real ``kubernetes`` client, answered by the fake API server from Kubeflow's RBAC."""

from __future__ import annotations

from pathlib import Path

import pytest
from rokcommon.authz import (
    READ,
    RESTORE_INTO_NOTEBOOK,
    RESTORE_INTO_PVC,
    Identity,
    KubernetesAccess,
    LocalAccess,
    Permission,
    inside_roots,
    require,
)
from rokcommon.errors import Forbidden
from roktesting.kubeflow import RBAC_API, add_contributor, add_profile, install_profile_roles
from roktesting.kubernetes import FakeKube

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture
def kubeflow(fake_kube: FakeKube) -> FakeKube:
    install_profile_roles(fake_kube)
    add_profile(fake_kube, "team-a", ALICE)
    add_profile(fake_kube, "team-b", BOB)
    add_contributor(fake_kube, "team-a", CAROL, "kubeflow-view")
    return fake_kube


async def test_profile_roles_grant_what_rok_checks_in_the_profiles_namespace_only(kubeflow: FakeKube) -> None:
    access = KubernetesAccess(kubeflow.api_client, ttl=0)
    alice, bob, carol = Identity(ALICE), Identity(BOB), Identity(CAROL)
    for permission in (READ, RESTORE_INTO_PVC, RESTORE_INTO_NOTEBOOK):
        assert await access.allowed(alice, "team-a", permission), permission  # owner: kubeflow-admin ⊃ edit ⊃ view
        assert not await access.allowed(alice, "team-b", permission), permission
        assert not await access.allowed(bob, "team-a", permission), permission
    assert await access.allowed(carol, "team-a", READ)  # a viewer reads
    assert not await access.allowed(carol, "team-a", RESTORE_INTO_PVC)  # and creates nothing
    assert not await access.allowed(carol, "team-b", READ)
    assert not await access.allowed(alice, "team-a", Permission("delete", "namespaces"))


async def test_service_account_tokens_are_reviewed_and_their_bindings_apply(kubeflow: FakeKube) -> None:
    access = KubernetesAccess(kubeflow.api_client, ttl=0)
    token = kubeflow.tokens.service_account("team-b", "default-editor")
    who = await access.authenticate(token)
    assert who is not None and who.user == "system:serviceaccount:team-b:default-editor"
    assert "system:serviceaccounts:team-b" in who.groups
    assert await access.allowed(who, "team-b", RESTORE_INTO_PVC)
    assert not await access.allowed(who, "team-a", READ)
    assert await access.authenticate("not-a-token") is None


async def test_a_group_binding_and_a_namespaced_role_grant_like_the_api_server(kubeflow: FakeKube) -> None:
    kubeflow.create(
        f"{RBAC_API}/namespaces/team-b/roles",
        {"metadata": {"name": "claims-reader"}, "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["list"]}]},
    )
    kubeflow.create(
        f"{RBAC_API}/namespaces/team-b/rolebindings",
        {
            "metadata": {"name": "auditors"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "claims-reader"},
            "subjects": [{"kind": "Group", "name": "auditors"}],
        },
    )
    access = KubernetesAccess(kubeflow.api_client, ttl=0)
    assert await access.allowed(Identity("dave", ("auditors",)), "team-b", READ)
    assert not await access.allowed(Identity("dave", ("auditors",)), "team-b", RESTORE_INTO_PVC)
    assert not await access.allowed(Identity("dave"), "team-b", READ)
    assert not await access.allowed(Identity("dave", ("auditors",)), "team-a", READ)  # a Role grants at home only


async def test_answers_are_cached_for_a_while_and_asked_again_after(kubeflow: FakeKube) -> None:
    access = KubernetesAccess(kubeflow.api_client, ttl=3600)
    alice = Identity(ALICE)
    reviews = lambda: [r for r in kubeflow.requests if r.path.endswith("/subjectaccessreviews")]  # noqa: E731
    assert await access.allowed(alice, "team-a", READ)
    assert await access.allowed(alice, "team-a", READ)
    assert not await access.allowed(alice, "team-b", READ)
    assert len(reviews()) == 2  # one per (user, namespace, permission)
    uncached = KubernetesAccess(kubeflow.api_client, ttl=0)
    await uncached.allowed(alice, "team-a", READ)
    await uncached.allowed(alice, "team-a", READ)
    assert len(reviews()) == 4


async def test_refusals_name_the_permission_and_nothing_of_what_exists() -> None:
    class Nobody(LocalAccess):
        async def allowed(self, who: Identity, namespace: str, permission: Permission) -> bool:
            return False

    with pytest.raises(Forbidden) as refused:
        await require(Nobody("t"), Identity("eve"), "team-a", READ)
    assert str(refused.value) == (
        "eve may not read rok's lineage in namespace 'team-a' (it needs list persistentvolumeclaims there)"
    )


def test_local_restore_targets_stay_under_their_roots_whatever_the_symlinks_say(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inner").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert inside_roots(str(root / "inner" / "new"), (root,)) == (root / "inner" / "new").resolve()
    for path in (root / "escape" / "x", root / "inner" / ".." / ".." / "outside", outside, Path("relative")):
        with pytest.raises(Forbidden):
            inside_roots(str(path), (root,))
