"""spec.ha against pve_sim's PVE 9 HA stack: the operator registers its CTs as HA resources and keeps its
placement as HA rules that PVE accepts, never touches what a user registered, and removes exactly what it
added when spec.ha goes."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from pve_operator.api.v1alpha1 import HaSpec
from pve_operator.execution.ha_registration import apply_ha, read_and_plan
from pve_operator.planning.ha_registration import HaIntent, marker, rule_prefix
from pve_sim.scenario import Scenario, parse_scenario
from tests.integration.test_executor import BLUEPRINT, creates, executor
from tests.sim.ha_support import LAB

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
NODES = ("srv-px1", "srv-px2", "srv-px3")


def ha_lab(*, console: bool = True) -> Scenario:
    """Three nodes (negative rules need room) and, as docs/proxmox-setup.md asks for spec.ha, Sys.Console
    on / in the operator's role."""
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["nodes"] = [{**copy.deepcopy(data["nodes"][0]), "name": name} for name in NODES]
    if console:
        for role in data["roles"]:
            if role["id"] == "CTOperator":
                role["privileges"].append("Sys.Console")
    return parse_scenario(data, "ha-registration")


def intent(spec: HaSpec | None = None, *, spread: bool = True) -> HaIntent:
    return HaIntent("apps", "web", UID, spec, NODES, strict=False, spread_over_nodes=spread)


def test_the_fleet_is_registered_with_rules_pve_accepts_and_only_what_the_operator_added_is_removed(
    pve_sim_server: Any,
) -> None:
    sim = pve_sim_server(ha_lab(), time_scale=0.0)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(5), BLUEPRINT))
    client = run._client
    api = sim.proxmox()
    # A user registered CT 3104 themselves, with a rule of their own: neither is the operator's to change.
    api.cluster.ha.resources.post(sid="ct:3104", state="started", max_restart=3, comment="ours, the DBA team's")
    vmids = {i: 3100 + i for i in range(5)}

    changes = apply_ha(client, read_and_plan(client, intent(HaSpec(max_relocate=2)), vmids))
    assert changes and "registered ct:3100 as an HA resource (started)" in changes
    resources = {r["sid"]: r for r in api.cluster.ha.resources.get()}
    assert set(resources) == {f"ct:{v}" for v in range(3100, 3105)}
    for vmid in range(3100, 3104):
        assert resources[f"ct:{vmid}"]["comment"] == marker("apps", "web", UID)
        assert int(resources[f"ct:{vmid}"]["max_relocate"]) == 2
    assert resources["ct:3104"]["comment"] == "ours, the DBA team's" and int(resources["ct:3104"]["max_restart"]) == 3

    rules = {r["rule"]: r for r in api.cluster.ha.rules.get()}
    prefix = rule_prefix(UID)
    assert rules[f"{prefix}-nodes"]["type"] == "node-affinity"
    assert set(rules[f"{prefix}-nodes"]["nodes"].split(",")) == set(NODES)
    apart = [r for name, r in rules.items() if name.startswith(f"{prefix}-apart-")]
    # 3 nodes: groups of at most 2 (one node left for a recovered CT), every CT of the operator's in one;
    # the user's ct:3104 is in none of the operator's rules. PVE accepted every rule (it refuses infeasible ones).
    assert all(r["affinity"] == "negative" and len(r["resources"].split(",")) == 2 for r in apart)
    assert sorted(sid for r in apart for sid in r["resources"].split(",")) == [f"ct:{v}" for v in range(3100, 3104)]
    assert "ct:3104" not in rules[f"{prefix}-nodes"]["resources"]

    # Planning again on what PVE now holds changes nothing, and says what the operator holds (status.ha).
    again = read_and_plan(client, intent(HaSpec(max_relocate=2)), vmids)
    assert again.changes == 0 and again.foreign_resources == ("ct:3104",)
    assert again.registered == tuple(f"ct:{v}" for v in range(3100, 3104))
    assert again.rules == tuple(sorted([f"{prefix}-nodes", *(r["rule"] for r in apart)]))

    api.cluster.ha.rules.post(rule="dba-node", type="node-affinity", nodes="srv-px3", resources="ct:3104", strict=0)
    removal = read_and_plan(client, intent(None), vmids)
    apply_ha(client, removal)
    assert {r["sid"] for r in api.cluster.ha.resources.get()} == {"ct:3104"}, "the user's resource stays"
    assert {r["rule"] for r in api.cluster.ha.rules.get()} == {"dba-node"}, "only the operator's rules go"


def test_a_ct_scaled_away_leaves_the_rules_consistent(pve_sim_server: Any) -> None:
    sim = pve_sim_server(ha_lab(), time_scale=0.0)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(4), BLUEPRINT))
    client = run._client
    apply_ha(client, read_and_plan(client, intent(HaSpec()), {i: 3100 + i for i in range(4)}))
    # Scale-down to 2: the plan drops the gone CTs from the rules and their resources.
    fewer = {0: 3100, 1: 3101}
    plan = read_and_plan(client, intent(HaSpec()), fewer)
    assert set(plan.delete_resources) == {"ct:3102", "ct:3103"}
    apply_ha(client, plan)
    api = sim.proxmox()
    assert {r["sid"] for r in api.cluster.ha.resources.get()} == {"ct:3100", "ct:3101"}
    named = {sid for r in api.cluster.ha.rules.get() for sid in r["resources"].split(",")}
    assert named == {"ct:3100", "ct:3101"}
    assert read_and_plan(client, intent(HaSpec()), fewer).changes == 0


def test_without_sys_console_the_registration_fails_with_the_privilege_named(pve_sim_server: Any) -> None:
    from pve_operator.pve.errors import PvePermissionError

    sim = pve_sim_server(ha_lab(console=False), time_scale=0.0)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(2), BLUEPRINT))
    client = run._client
    try:
        apply_ha(client, read_and_plan(client, intent(HaSpec()), {0: 3100, 1: 3101}))
    except PvePermissionError as exc:
        assert exc.privilege == "Sys.Console" and exc.path == "/"
    else:
        raise AssertionError("registering HA resources without Sys.Console succeeded")
    assert sim.proxmox().cluster.ha.resources.get() == []
