"""PVE's permission model in ``pve_sim.access``: inheritance, propagation, tokens, groups, pools."""

from __future__ import annotations

import pytest

from pve_sim.access import AccessControl
from pve_sim.errors import PveApiError

NOW = 1_750_000_000.0


@pytest.fixture
def acl() -> AccessControl:
    access = AccessControl()
    access.add_role("CTOperator", ["VM.Audit", "VM.PowerMgmt", "VM.Allocate", "Sys.Audit"])
    access.add_role("Auditor", ["VM.Audit"])
    access.add_user("alice@pve", "alice-password")
    access.add_token("alice@pve", "sep", "sep-secret", privsep=True)
    access.add_token("alice@pve", "full", "full-secret", privsep=False)
    return access


def test_root_holds_every_privilege_but_its_tokens_do_not(acl: AccessControl) -> None:
    acl.add_user("root@pam", "root-password")
    acl.add_token("root@pam", "auto", "x", privsep=True)

    assert acl.allowed("root@pam", "/vms/100", ["VM.Allocate", "Sys.Modify", "Permissions.Modify"])
    assert not acl.allowed("root@pam!auto", "/vms/100", ["VM.Audit"])


def test_propagating_entry_applies_below_and_non_propagating_only_at_its_path(acl: AccessControl) -> None:
    acl.add_acl("/vms", "Auditor", user="alice@pve", propagate=False)
    acl.add_acl("/nodes", "CTOperator", user="alice@pve", propagate=True)

    assert acl.allowed("alice@pve", "/vms", ["VM.Audit"])
    assert not acl.allowed("alice@pve", "/vms/101", ["VM.Audit"])
    assert acl.allowed("alice@pve", "/nodes/pve1", ["Sys.Audit"])


def test_deeper_entry_replaces_inherited_roles(acl: AccessControl) -> None:
    acl.add_acl("/", "CTOperator", user="alice@pve")
    acl.add_acl("/vms/101", "Auditor", user="alice@pve")

    assert acl.allowed("alice@pve", "/vms/100", ["VM.PowerMgmt"])
    assert acl.allowed("alice@pve", "/vms/101", ["VM.Audit"])
    assert not acl.allowed("alice@pve", "/vms/101", ["VM.PowerMgmt"])


def test_no_access_at_a_level_wins_over_roles_set_with_it(acl: AccessControl) -> None:
    acl.add_acl("/vms/102", "CTOperator", user="alice@pve")
    acl.add_acl("/vms/102", "NoAccess", user="alice@pve")

    assert acl.permissions("alice@pve", "/vms/102") == {}


def test_user_entry_beats_group_entry_at_the_same_level(acl: AccessControl) -> None:
    acl.add_group("ops", ["alice@pve"])
    acl.add_acl("/vms", "CTOperator", group="ops")
    acl.add_acl("/vms", "Auditor", user="alice@pve")

    assert acl.allowed("alice@pve", "/vms/100", ["VM.Audit"])
    assert not acl.allowed("alice@pve", "/vms/100", ["VM.PowerMgmt"])


def test_group_entry_applies_to_members_only(acl: AccessControl) -> None:
    acl.add_user("bob@pve", "bob-password")
    acl.add_group("ops", ["alice@pve"])
    acl.add_acl("/", "CTOperator", group="ops")

    assert acl.allowed("alice@pve", "/vms/100", ["VM.PowerMgmt"])
    assert not acl.allowed("bob@pve", "/vms/100", ["VM.Audit"])


def test_privsep_token_holds_the_intersection_of_its_acl_and_its_users(acl: AccessControl) -> None:
    acl.add_acl("/", "Auditor", user="alice@pve")
    acl.add_acl("/", "CTOperator", token="alice@pve!sep")

    # The token's own ACL grants VM.PowerMgmt, but the user lacks it: the intersection drops it.
    assert acl.allowed("alice@pve!sep", "/vms/100", ["VM.Audit"])
    assert not acl.allowed("alice@pve!sep", "/vms/100", ["VM.PowerMgmt"])


def test_privsep_token_without_acl_of_its_own_has_nothing(acl: AccessControl) -> None:
    acl.add_acl("/", "CTOperator", user="alice@pve")

    assert acl.permissions("alice@pve!sep", "/vms/100") == {}


def test_token_without_privsep_has_exactly_its_users_privileges(acl: AccessControl) -> None:
    acl.add_acl("/", "CTOperator", user="alice@pve")

    assert acl.permissions("alice@pve!full", "/vms/100") == acl.permissions("alice@pve", "/vms/100")


def test_pool_roles_apply_to_pool_members_without_propagation(acl: AccessControl) -> None:
    acl.create_pool("lab")
    acl.add_vm_to_pool(101, "lab")
    acl.add_acl("/pool/lab", "CTOperator", user="alice@pve")

    assert acl.allowed("alice@pve", "/vms/101", ["VM.PowerMgmt"])
    assert not acl.allowed("alice@pve", "/vms/102", ["VM.Audit"])
    assert acl.permissions("alice@pve", "/vms/101")["VM.PowerMgmt"] is False


def test_check_raises_pves_403_naming_path_and_privilege(acl: AccessControl) -> None:
    acl.add_acl("/", "Auditor", user="alice@pve")

    with pytest.raises(PveApiError) as single:
        acl.check("alice@pve", "/vms/101", ["VM.Audit", "VM.PowerMgmt"])
    with pytest.raises(PveApiError) as any_of:
        acl.check("alice@pve", "/storage/local", ["Datastore.AllocateSpace", "Datastore.Audit"], any_of=True)

    assert (single.value.status, single.value.message) == (403, "Permission check failed (/vms/101, VM.PowerMgmt)")
    assert any_of.value.message == "Permission check failed (/storage/local, Datastore.AllocateSpace|Datastore.Audit)"


def test_acl_changes_invalidate_cached_answers(acl: AccessControl) -> None:
    assert not acl.allowed("alice@pve", "/vms/100", ["VM.Audit"])

    acl.add_acl("/vms", "Auditor", user="alice@pve")

    assert acl.allowed("alice@pve", "/vms/100", ["VM.Audit"])


def test_vm_with_its_own_acl_node_does_not_share_the_generic_cache(acl: AccessControl) -> None:
    acl.add_acl("/vms", "Auditor", user="alice@pve")
    acl.add_acl("/vms/105", "NoAccess", user="alice@pve")

    assert acl.allowed("alice@pve", "/vms/104", ["VM.Audit"])
    assert not acl.allowed("alice@pve", "/vms/105", ["VM.Audit"])
    assert acl.allowed("alice@pve", "/vms/106", ["VM.Audit"])


def test_passwords_and_tokens_verify_only_when_enabled_unexpired_and_matching(acl: AccessControl) -> None:
    acl.add_user("old@pve", "old-password", expire=int(NOW) - 1)
    acl.add_token("alice@pve", "stale", "stale-secret", expire=int(NOW) - 1)

    assert acl.check_password("alice@pve", "alice-password", NOW)
    assert not acl.check_password("alice@pve", "wrong", NOW)
    assert not acl.check_password("old@pve", "old-password", NOW)
    assert acl.check_token("alice@pve", "sep", "sep-secret", NOW)
    assert not acl.check_token("alice@pve", "sep", "other", NOW)
    assert not acl.check_token("alice@pve", "stale", "stale-secret", NOW)
    assert not acl.check_token("alice@pve", "missing", "x", NOW)


def test_pool_name_rules_and_duplicates(acl: AccessControl) -> None:
    acl.create_pool("lab", "the lab")

    with pytest.raises(PveApiError) as duplicate:
        acl.create_pool("lab")
    with pytest.raises(PveApiError) as digit:
        acl.create_pool("1lab")
    with pytest.raises(PveApiError) as orphan:
        acl.create_pool("missing/child")

    assert duplicate.value.message == "create pool failed: pool 'lab' already exists"
    assert digit.value.message == "create pool failed: pool name must start with a letter"
    assert orphan.value.message == "create pool failed: parent 'missing' of pool 'missing/child' does not exist"


def test_pool_with_existing_guest_cannot_be_deleted(acl: AccessControl) -> None:
    acl.create_pool("lab")
    acl.add_vm_to_pool(101, "lab")

    with pytest.raises(PveApiError) as busy:
        acl.delete_pool("lab", existing_vmids=[101], existing_storages=[])
    acl.delete_pool("lab", existing_vmids=[], existing_storages=[])

    assert busy.value.message == "delete pool failed: pool 'lab' is not empty (contains VM 101)"
    assert "lab" not in acl.pools and 101 not in acl.vm_pool


def test_effective_permissions_list_paths_with_privileges(acl: AccessControl) -> None:
    acl.add_acl("/vms", "Auditor", user="alice@pve")

    perms = acl.effective_permissions("alice@pve")

    assert perms == {"/vms": {"VM.Audit": 1}}


def test_login_capabilities_group_privileges_by_section(acl: AccessControl) -> None:
    acl.add_acl("/", "CTOperator", user="alice@pve")

    cap = acl.api_capabilities("alice@pve")

    assert cap["vms"] == {"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Allocate": 1}
    assert cap["nodes"] == {"Sys.Audit": 1}
    assert cap["dc"] == {"Sys.Audit": 1}
