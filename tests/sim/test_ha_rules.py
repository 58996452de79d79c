"""``/cluster/ha/rules`` (PVE 9 node-affinity and resource-affinity rules) with pve-ha-manager
5.2.0's validation (``src/PVE/API2/HA/Rules.pm``, ``src/PVE/HA/Rules.pm`` and its plugins), through
the real proxmoxer client over HTTPS. One test per feasibility check, each with PVE's wording."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.sim import SimServerFactory, SimTestServer
from tests.sim.ha_support import ha_scenario, pve_error

CTS = {201: "srv-px1", 202: "srv-px2", 203: "srv-px3", 204: "srv-px1"}


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server(ha_scenario(CTS, ha=list(CTS)))


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


def infeasible(root: Any, **rule: Any) -> str:
    """The whole message of a rule creation PVE refuses as infeasible: proxmoxer shows the reason
    phrase (the first line); the JSON body's ``message`` has the per-property lines too."""
    error = pve_error(root.cluster.ha.rules.post, **rule)
    assert error.status_code == 500
    body = raw(root, "POST", "/cluster/ha/rules", rule)
    assert str(body["message"]).startswith(str(error.content))
    return str(body["message"]).rstrip("\n")


def raw(api: Any, method: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
    """A call with proxmoxer's own authenticated session, returning the JSON body as is."""
    backend = api._store["session"]
    response = backend.request(method, api._store["base_url"] + path, data=data)
    result: dict[str, Any] = response.json()
    return result


def test_create_list_read_filter_and_delete(root: Any) -> None:
    root.cluster.ha.rules.post(
        rule="pin", type="node-affinity", nodes="srv-px2:2,srv-px1", resources="ct:201", strict=1
    )
    root.cluster.ha.rules.post(
        rule="apart", type="resource-affinity", affinity="negative", resources="ct:202,ct:203", comment="spread"
    )

    rules = root.cluster.ha.rules.get()
    pin = root.cluster.ha.rules("pin").get()

    assert [(r["rule"], r["order"]) for r in rules] == [("pin", 1), ("apart", 2)]
    assert {k: pin[k] for k in ("type", "nodes", "resources", "strict")} == {
        "type": "node-affinity",
        "nodes": "srv-px1,srv-px2:2",
        "resources": "ct:201",
        "strict": 1,
    }
    assert rules[1]["affinity"] == "negative" and rules[1]["comment"] == "spread" and "errors" not in rules[1]
    assert [r["rule"] for r in root.cluster.ha.rules.get(type="resource-affinity")] == ["apart"]
    assert [r["rule"] for r in root.cluster.ha.rules.get(resource="ct:201")] == ["pin"]
    root.cluster.ha.rules("pin").delete()
    root.cluster.ha.rules("nothing").delete()  # PVE does not complain
    assert [r["rule"] for r in root.cluster.ha.rules.get()] == ["apart"]
    assert pve_error(root.cluster.ha.rules("pin").get).content == "no such ha rule 'pin'"


def test_options_are_checked_per_rule_type(root: Any) -> None:
    missing = pve_error(root.cluster.ha.rules.post, rule="rule1", type="node-affinity", resources="ct:201")
    foreign = pve_error(
        root.cluster.ha.rules.post,
        rule="rule1",
        type="node-affinity",
        nodes="srv-px1",
        resources="ct:201",
        affinity="positive",
    )
    no_affinity = pve_error(
        root.cluster.ha.rules.post, rule="rule1", type="resource-affinity", resources="ct:201,ct:202"
    )

    assert missing.content == "missing value for required option 'nodes'"
    assert foreign.content == "unexpected property 'affinity'"
    assert no_affinity.content == "missing value for required option 'affinity'"


def test_resources_and_nodes_must_exist(root: Any) -> None:
    root.cluster.ha.resources("ct:204").delete()
    unmanaged = pve_error(
        root.cluster.ha.rules.post, rule="rule1", type="node-affinity", nodes="srv-px1", resources="ct:204,ct:999"
    )
    nonexistent = pve_error(
        root.cluster.ha.rules.post, rule="rule1", type="node-affinity", nodes="srv-px9,srv-px8", resources="ct:201"
    )
    root.cluster.ha.rules.post(rule="rule1", type="node-affinity", nodes="srv-px1", resources="ct:201")
    duplicate = pve_error(
        root.cluster.ha.rules.post, rule="rule1", type="node-affinity", nodes="srv-px1", resources="ct:202"
    )
    bad_node = pve_error(
        root.cluster.ha.rules.post, rule="bad-node", type="node-affinity", nodes="srv_px1", resources="ct:202"
    )

    assert unmanaged.content == "create ha rule failed: cannot use unmanaged resource(s) ct:204, ct:999."
    assert nonexistent.content == "create ha rule failed: cannot use non-existent node(s) srv-px8, srv-px9."
    assert duplicate.content == "create ha rule failed: HA rule 'rule1' already defined"
    assert bad_node.status_code == 400 and "valid ha node" in bad_node.errors["nodes"]


def test_a_resource_may_be_in_one_node_affinity_rule_only(root: Any) -> None:
    root.cluster.ha.rules.post(rule="first", type="node-affinity", nodes="srv-px1", resources="ct:201")

    assert infeasible(root, rule="second", type="node-affinity", nodes="srv-px2", resources="ct:201,ct:202") == (
        "create ha rule failed: 400 Rule 'second' is invalid.\n"
        "resources: resource 'ct:201' is already used in another node affinity rule"
    )


def test_resource_affinity_needs_two_resources(root: Any) -> None:
    assert infeasible(root, rule="one", type="resource-affinity", affinity="positive", resources="ct:201") == (
        "create ha rule failed: 400 Rule 'one' is invalid.\n"
        "resources: rule is ineffective as there are less than two resources"
    )


def test_negative_affinity_cannot_have_more_resources_than_nodes(root: Any) -> None:
    message = infeasible(
        root, rule="spread", type="resource-affinity", affinity="negative", resources="ct:201,ct:202,ct:203,ct:204"
    )

    assert message.endswith("resources: rule defines more resources than available nodes")


def test_positive_and_negative_rules_cannot_share_two_resources(root: Any) -> None:
    root.cluster.ha.rules.post(rule="pos", type="resource-affinity", affinity="positive", resources="ct:201,ct:202")

    message = infeasible(root, rule="neg", type="resource-affinity", affinity="negative", resources="ct:201,ct:202")

    assert message.endswith("resources: rule shares two or more resources with a positive resource affinity rule")


def test_resource_affinity_with_a_multi_priority_node_affinity_rule(root: Any) -> None:
    root.cluster.ha.rules.post(rule="prio", type="node-affinity", nodes="srv-px1:2,srv-px2:1", resources="ct:201")

    message = infeasible(root, rule="pos", type="resource-affinity", affinity="positive", resources="ct:201,ct:202")

    assert message.endswith("resources: resources are in node affinity rules with multiple priorities")


def test_positive_affinity_resources_in_two_node_affinity_rules(root: Any) -> None:
    root.cluster.ha.rules.post(rule="na1", type="node-affinity", nodes="srv-px1", resources="ct:201")
    root.cluster.ha.rules.post(rule="na2", type="node-affinity", nodes="srv-px2", resources="ct:202")

    message = infeasible(root, rule="pos", type="resource-affinity", affinity="positive", resources="ct:201,ct:202")

    assert message.endswith("resources: resources are in multiple node affinity rules")


def test_negative_affinity_restricted_to_too_few_nodes(root: Any) -> None:
    root.cluster.ha.rules.post(rule="na", type="node-affinity", nodes="srv-px1", strict=1, resources="ct:201,ct:202")

    message = infeasible(root, rule="neg", type="resource-affinity", affinity="negative", resources="ct:201,ct:202")

    assert message.endswith(
        "resources: two or more resources are restricted to less nodes than available to the resources"
    )


def test_update_checks_options_digest_and_feasibility(root: Any) -> None:
    root.cluster.ha.rules.post(rule="na", type="node-affinity", nodes="srv-px1", resources="ct:201")
    root.cluster.ha.rules.post(rule="nb", type="node-affinity", nodes="srv-px2", resources="ct:202")
    digest = root.cluster.ha.rules("na").get()["digest"]

    root.cluster.ha.rules("na").put(type="node-affinity", nodes="srv-px1,srv-px3", strict=1, digest=digest)
    root.cluster.ha.rules("na").put(type="node-affinity", delete="strict")
    updated = root.cluster.ha.rules("na").get()
    put = root.cluster.ha.rules("na").put

    assert updated["nodes"] == "srv-px1,srv-px3" and "strict" not in updated
    assert pve_error(put, type="node-affinity", comment="x", digest=digest).content == (
        "update HA rules failed: detected modified configuration - file changed by other user? Try again."
    )
    assert pve_error(put, type="node-affinity", delete="nodes").content == (
        "update HA rules failed: unable to delete required option 'nodes'"
    )
    assert pve_error(put, type="node-affinity", comment="x", delete="comment").content == (
        "update HA rules failed: cannot set and delete property 'comment' at the same time!"
    )
    assert pve_error(put, type="resource-affinity", comment="x").content == (
        "update HA rules failed: unexpected property 'type'"
    )
    assert pve_error(root.cluster.ha.rules("zz").put, type="node-affinity", comment="x").content == (
        "update HA rules failed: HA rule 'zz' does not exist"
    )
    refused = pve_error(put, type="node-affinity", resources="ct:201,ct:202")
    body = raw(root, "PUT", "/cluster/ha/rules/na", {"type": "node-affinity", "resources": "ct:201,ct:202"})
    assert refused.content == "update HA rules failed: 400 Rule 'na' is invalid."
    assert body["message"] == (
        "update HA rules failed: 400 Rule 'na' is invalid.\n"
        "resources: resource 'ct:202' is already used in another node affinity rule\n"
    )


def test_disabled_rules_are_not_checked_against_others(root: Any) -> None:
    root.cluster.ha.rules.post(rule="first", type="node-affinity", nodes="srv-px1", resources="ct:201", disable=1)

    root.cluster.ha.rules.post(rule="second", type="node-affinity", nodes="srv-px2", resources="ct:201")

    assert [(r["rule"], r.get("disable")) for r in root.cluster.ha.rules.get()] == [("first", 1), ("second", None)]


def test_ha_groups_read_as_rules_and_block_rule_creation(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(
        ha_scenario(
            CTS,
            ha=[201],
            groups=[{"group": "pair", "nodes": ["srv-px1:2", "srv-px2"], "restricted": True}],
            resource_options={201: {"group": "pair"}},
        )
    )
    root = server.proxmox("root@pam")

    rules = root.cluster.ha.rules.get()

    assert [(r["rule"], r["nodes"], r["strict"], r["comment"]) for r in rules] == [
        ("ha-group-pair", "srv-px1:2,srv-px2", 1, "Generated from HA group 'pair'.")
    ]
    assert pve_error(
        root.cluster.ha.rules.post, rule="rule1", type="node-affinity", nodes="srv-px1", resources="ct:201"
    ).content == ("cannot create ha rule: ha groups have not been migrated yet")


def test_rules_need_sys_console_to_change(server: SimTestServer) -> None:
    operator = server.proxmox("ctoperator@pve", token="operator")

    refused = pve_error(
        operator.cluster.ha.rules.post, rule="rule1", type="node-affinity", nodes="srv-px1", resources="ct:201"
    )

    assert (refused.status_code, refused.content) == (403, "Permission check failed (/, Sys.Console)")
    assert operator.cluster.ha.rules.get() == []
