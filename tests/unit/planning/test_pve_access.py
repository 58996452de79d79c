"""PVE's tag and bridge rules as the operator reads them (issue 15 §7, §8).

Follows pve-guest-common ``src/PVE/GuestHelpers.pm``: ``get_allowed_tags`` (which tags a user without
``Sys.Modify`` on ``/`` may set under each ``user-tag-access`` mode), ``assert_tag_permissions`` (the 403
text) and ``check_vnet_access`` (the ``SDN.Use`` path of a bridge, or of bridge/VLAN).
"""

from __future__ import annotations

import pytest

from pve_operator.planning.pve_access import (
    TagRules,
    UserTagAccess,
    missing_sdn_use,
    refused_tag_in,
    sdn_use_path,
)

WANTED = {"pve-operator", "pve-operator-offloaded", "ctp-0123456789"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, TagRules()),
        # PVE's API returns format options parsed (an object, lists as JSON lists) ...
        (
            {"user-tag-access": {"user-allow": "list", "user-allow-list": ["A", "b"]}, "registered-tags": ["x"]},
            TagRules(UserTagAccess.LIST, frozenset({"a", "b"}), frozenset({"x"})),
        ),
        # ... and datacenter.cfg's own spelling is understood too.
        (
            {"user-tag-access": "user-allow=existing,user-allow-list=a;b", "registered-tags": "x;y"},
            TagRules(UserTagAccess.EXISTING, frozenset({"a", "b"}), frozenset({"x", "y"})),
        ),
        ({"user-tag-access": {"user-allow": "bogus"}}, TagRules()),
    ],
)
def test_cluster_options_are_read_in_both_spellings(options: dict[str, object], expected: TagRules) -> None:
    assert TagRules.from_cluster_options(options) == expected


def test_free_allows_every_tag_but_registered_ones() -> None:
    rules = TagRules(registered=frozenset({"pve-operator"}))
    assert rules.refused(WANTED, privileged=False, existing=()) == {"pve-operator"}
    assert rules.refused(WANTED, privileged=True, existing=()) == frozenset()


def test_existing_allows_tags_already_on_guests_and_the_list() -> None:
    rules = TagRules(UserTagAccess.EXISTING, allow_list=frozenset({"ctp-0123456789"}))
    assert rules.refused(WANTED, privileged=False, existing={"pve-operator"}) == {"pve-operator-offloaded"}


def test_list_allows_only_the_list_and_none_nothing_even_listed() -> None:
    listed = TagRules(UserTagAccess.LIST, allow_list=frozenset({"pve-operator"}))
    assert listed.refused(WANTED, privileged=False, existing=WANTED) == {"pve-operator-offloaded", "ctp-0123456789"}
    nothing = TagRules(UserTagAccess.NONE, allow_list=frozenset({"pve-operator"}))
    assert nothing.refused(WANTED, privileged=False, existing=WANTED) == WANTED
    assert nothing.refused(WANTED, privileged=True, existing=()) == frozenset()


def test_the_explanation_names_the_setting_and_the_fix() -> None:
    rules = TagRules(UserTagAccess.LIST, allow_list=frozenset({"web"}), registered=frozenset({"pve-operator"}))
    text = rules.explain({"pve-operator", "ctp-0123456789"})
    assert "user-allow=list" in text and "user-allow-list=ctp-0123456789;web" in text
    assert "registered-tags" in text and "Sys.Modify on /" in text


def test_pves_tag_refusal_is_recognised() -> None:
    assert refused_tag_in("Permission check failed (/, Sys.Modify for modifying tag 'ctp-01')") == "ctp-01"
    assert refused_tag_in("Permission check failed (/vms/100, VM.Allocate)") is None


def test_sdn_use_paths_and_what_is_missing() -> None:
    assert sdn_use_path("vmbr0", None) == "/sdn/zones/localnetwork/vmbr0"
    assert sdn_use_path("vmbr1", 20) == "/sdn/zones/localnetwork/vmbr1/20"
    answers = {
        "/sdn/zones/localnetwork/vmbr0": {"/sdn/zones/localnetwork/vmbr0": {"SDN.Use": 1}},
        "/sdn/zones/localnetwork/vmbr1/20": {"/sdn/zones/localnetwork/vmbr1/20": {"SDN.Audit": 1}},
    }
    assert missing_sdn_use(list(answers), answers) == ["/sdn/zones/localnetwork/vmbr1/20"]


def test_the_pools_verdict_worst_first() -> None:
    from pve_operator.planning.model import ClusterSnapshot
    from pve_operator.planning.ownership import policy_tag
    from pve_operator.planning.pve_access import PolicyNeeds, TagAccess, access_problems
    from tests.builders import build_ct, build_node

    snapshot = ClusterSnapshot.of(0.0, [build_node("n1")], [build_ct(100, "n1", tags=frozenset({"pve-operator"}))])
    web = PolicyNeeds("web", "uid-web", frozenset({("vmbr0", None)}), frozenset())
    db = PolicyNeeds("db", "uid-db", frozenset({("vmbr1", 20)}), frozenset({"db"}))
    granted = {p: {p: {"SDN.Use": 1}} for p in ("/sdn/zones/localnetwork/vmbr0", "/sdn/zones/localnetwork/vmbr1/20")}
    free = TagAccess(TagRules(), privileged=False)

    no_sdn = access_problems(free, snapshot, [web, db], {k: v for k, v in granted.items() if "vmbr0" in k})
    assert no_sdn.blocking is not None and no_sdn.blocking[0] == "PermissionDenied"
    assert "/sdn/zones/localnetwork/vmbr1/20" in no_sdn.blocking[1] and "ContainerPolicy db" in no_sdn.blocking[1]

    assert access_problems(free, snapshot, [web, db], granted) == type(no_sdn)()
    assert access_problems(TagAccess(None, False), snapshot, [web, db], granted) == type(no_sdn)()

    listed = TagRules(UserTagAccess.EXISTING, allow_list=frozenset({"db"}))
    pool_wide = access_problems(TagAccess(listed, False), snapshot, [web, db], granted)
    assert pool_wide.blocking is not None and pool_wide.blocking[0] == "TagsNotAllowed"
    assert "pve-operator-offloaded" in pool_wide.blocking[1] and "pve-operator," not in pool_wide.blocking[1]

    allowed = listed.allow_list | {"pve-operator-offloaded", policy_tag("uid-web")}
    per_policy = access_problems(TagAccess(replace_allow(listed, allowed), False), snapshot, [web, db], granted)
    assert per_policy.blocking is None
    assert per_policy.warning.startswith(f"Proxmox VE refuses the tags of ContainerPolicy db: {policy_tag('uid-db')}")
    assert access_problems(TagAccess(listed, True), snapshot, [web, db], granted) == type(no_sdn)()


def replace_allow(rules: TagRules, allow_list: frozenset[str]) -> TagRules:
    from dataclasses import replace

    return replace(rules, allow_list=allow_list)
