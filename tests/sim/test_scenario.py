"""Scenario files: the examples load, and every mistake gets one error that says where and why."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_sim.load import ConstantProfile, PeriodicProfile, RampProfile
from pve_sim.scenario import (
    BUILTIN_ROLES,
    VALID_PRIVILEGES,
    NodeOfflineEvent,
    Scenario,
    ScenarioError,
    SetContainerUsageEvent,
    load_scenario,
    parse_scenario,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
LAB_YAML = EXAMPLES / "two-nodes.yaml"


@pytest.fixture
def lab() -> dict[str, Any]:
    """The lab scenario as plain data, for tests to break."""
    data: dict[str, Any] = yaml.safe_load(LAB_YAML.read_text())
    return copy.deepcopy(data)


# --------------------------------------------------------------------------------------------------
# Examples


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads_and_survives_a_round_trip(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.nodes
    dumped = scenario.model_dump(by_alias=True)
    assert parse_scenario(dumped, "dump") == scenario


def test_lab_scenario_is_read_as_written() -> None:
    lab = load_scenario(LAB_YAML)
    assert [node.name for node in lab.nodes] == ["srv-px1", "srv-px2"]
    assert lab.nodes[0].memory_gib == 32 and lab.nodes[0].base_load.values_at(0).memory == 0.08
    assert lab.cluster.stats_lag_seconds == 10 and lab.timing.migrate_mib_per_second == 400
    legacy = lab.containers[0]
    assert (legacy.vmid, legacy.node, legacy.hostname, legacy.status) == (3150, "srv-px2", "legacy-db", "running")
    assert legacy.usage is not None and isinstance(legacy.usage.memory, PeriodicProfile)
    assert legacy.usage.memory.value_at(150) == pytest.approx(0.6)
    operator = lab.users[1]
    assert operator.tokens[0].id == "operator" and operator.tokens[0].privsep
    assert lab.templates[0].storage == "local"
    assert lab.storage("local-lvm") is not None and lab.storage("missing") is None


def test_usage_rules_pick_the_first_match_and_fill_gaps_from_default() -> None:
    lab = load_scenario(LAB_YAML)
    matched = lab.usage.profiles_for("ct-web-1", [], "srv-px1").values_at(0)
    assert (matched.memory, matched.cpu, matched.disk) == (0.55, 0.10, 0.30)
    assert lab.usage.profiles_for("db-1", [], "srv-px1").values_at(0).memory == 0.25


def test_rule_without_some_metrics_takes_them_from_default(lab: dict[str, Any]) -> None:
    lab["usage"]["rules"] = [{"match": {"tag": "hot", "node": "srv-px1"}, "cpu": 0.9}]
    usage = parse_scenario(lab, "lab").usage
    hot = usage.profiles_for("x", ["hot"], "srv-px1").values_at(0)
    assert (hot.memory, hot.cpu) == (0.25, 0.9)
    assert usage.profiles_for("x", ["hot"], "srv-px2").values_at(0).cpu == 0.05


def test_large_example_expands_its_generators() -> None:
    large = load_scenario(EXAMPLES / "large.yaml")
    assert large.generate is None
    assert [node.name for node in large.nodes][:2] == ["node01", "node02"] and large.nodes[-1].name == "node50"
    assert len(large.containers) == 5000
    assert len({ct.vmid for ct in large.containers}) == 5000
    per_node = {node.name: 0 for node in large.nodes}
    for ct in large.containers:
        per_node[ct.node] += 1
    assert set(per_node.values()) == {100}
    web, db = large.containers[0], large.containers[4000]
    assert (web.vmid, web.hostname, web.memory_mib, web.tags) == (10000, "web-10000", 1024, ("bench", "web"))
    assert (db.vmid, db.hostname, db.cores) == (14000, "db-14000", 2)
    assert large.usage.profiles_for(db.hostname, db.tags, db.node).values_at(0).memory == 0.8


def test_spike_example_timeline() -> None:
    spike = load_scenario(EXAMPLES / "spike.yaml")
    timeline = spike.timeline()
    assert [event.at_seconds for event in timeline] == [60, 420, 600, 780]
    first = timeline[0]
    assert isinstance(first, SetContainerUsageEvent) and first.match is not None
    assert first.match.matches("ct-1", [], "srv-px1") and not first.match.matches("ct-1", [], "srv-px2")
    assert isinstance(first.memory, RampProfile) and first.memory.value_at(90) == 0.92
    assert isinstance(timeline[2], NodeOfflineEvent) and timeline[2].node == "srv-px2"


def test_timeline_sorts_events_stably(lab: dict[str, Any]) -> None:
    lab["events"] = [
        {"action": "nodeOnline", "at": 50, "node": "srv-px1"},
        {"action": "nodeOffline", "at": 10, "node": "srv-px1"},
        {"action": "setNodeLoad", "at": 50, "node": "srv-px2", "cpu": 0.5},
    ]
    actions = [event.action for event in parse_scenario(lab, "lab").timeline()]
    assert actions == ["nodeOffline", "nodeOnline", "setNodeLoad"]


# --------------------------------------------------------------------------------------------------
# Generators


def test_block_spread_fills_nodes_in_turn(lab: dict[str, Any]) -> None:
    lab["generate"] = {
        "containers": [
            {"count": 4, "vmidStart": 200, "spread": "block", "hostnamePattern": "ct-{index:02d}",
             "rootfs": {"storage": "local-lvm", "sizeGiB": 4}},
        ]
    }
    scenario = parse_scenario(lab, "lab")
    generated = scenario.containers[1:]
    assert [(ct.vmid, ct.hostname, ct.node) for ct in generated] == [
        (200, "ct-00", "srv-px1"), (201, "ct-01", "srv-px1"), (202, "ct-02", "srv-px2"), (203, "ct-03", "srv-px2"),
    ]
    assert generated[0].usage is None  # chosen by the usage rules, like API-created CTs


def test_generated_nodes_follow_literal_ones(lab: dict[str, Any]) -> None:
    lab["generate"] = {"nodes": {"count": 3, "namePattern": "edge{index}", "startIndex": 7, "cores": 4,
                                 "memoryGiB": 16, "rootfsGiB": 50}}
    names = [node.name for node in parse_scenario(lab, "lab").nodes]
    assert names == ["srv-px1", "srv-px2", "edge7", "edge8", "edge9"]


# --------------------------------------------------------------------------------------------------
# Built-in roles


def test_builtin_roles_match_pve() -> None:
    assert BUILTIN_ROLES["NoAccess"] == frozenset()
    assert BUILTIN_ROLES["PVEDatastoreUser"] == {"Datastore.AllocateSpace", "Datastore.Audit"}
    assert BUILTIN_ROLES["PVESDNUser"] == {"SDN.Use", "SDN.Audit"}
    assert BUILTIN_ROLES["PVEPoolUser"] == {"Pool.Audit"}
    assert {"VM.Allocate", "VM.Migrate", "VM.PowerMgmt", "VM.Audit"} <= BUILTIN_ROLES["PVEVMAdmin"]
    assert "VM.Allocate" not in BUILTIN_ROLES["PVEVMUser"] and "VM.PowerMgmt" in BUILTIN_ROLES["PVEVMUser"]
    assert all(priv.endswith(".Audit") for priv in BUILTIN_ROLES["PVEAuditor"])
    # Root-only privileges belong to Administrator alone.
    for root_only in ("Sys.Modify", "Sys.PowerMgmt", "Permissions.Modify", "Realm.Allocate"):
        assert root_only in BUILTIN_ROLES["Administrator"]
        assert root_only not in BUILTIN_ROLES["PVEAdmin"]
    assert "Mapping.Modify" not in BUILTIN_ROLES["PVEAdmin"]
    assert BUILTIN_ROLES["Administrator"] == VALID_PRIVILEGES


def test_builtin_roles_work_in_acl_without_declaration(lab: dict[str, Any]) -> None:
    lab["acl"].append({"path": "/storage/local-lvm", "role": "PVEDatastoreUser", "token": "ctoperator@pve!operator"})
    assert parse_scenario(lab, "lab").acl[-1].role == "PVEDatastoreUser"


# --------------------------------------------------------------------------------------------------
# One clear error per bad scenario

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """Set a dotted path (ints index lists) in the scenario data."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = data
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _rename_key(path: str, old: str, new: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for part in filter(None, path.split(".")):
            target = target[int(part) if part.isdigit() else part]
        target[new] = target.pop(old)

    return mutate


def _append(section: str, item: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data.setdefault(section, []).append(item)

    return mutate


def _second_container(**changes: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["containers"].append({**copy.deepcopy(data["containers"][0]), "hostname": "other", **changes})

    return mutate


BAD_SCENARIOS: list[tuple[str, Mutation, str, str]] = [
    ("unknown storage", _set("containers.0.rootfs.storage", "nope"),
     "containers[0].rootfs.storage", "storage 'nope' is not declared in storages"),
    ("storage without rootdir", _set("containers.0.rootfs.storage", "local"),
     "containers[0].rootfs.storage", "storage 'local' does not have 'rootdir' in its content"),
    ("storage not on the CT's node", _set("storages.1.nodes", ["srv-px1"]),
     "containers[0].rootfs.storage", "storage 'local-lvm' is not available on node 'srv-px2'"),
    ("unknown node", _set("containers.0.node", "srv-px9"),
     "containers[0].node", "node 'srv-px9' is not declared in nodes"),
    ("duplicate node", _set("nodes.1.name", "srv-px1"),
     "nodes[1].name", "duplicate node name 'srv-px1' (first at nodes[0].name)"),
    ("duplicate vmid", _second_container(),
     "containers[1].vmid", "duplicate vmid 3150 (first at containers[0].vmid)"),
    ("vmid below 100", _set("containers.0.vmid", 99),
     "containers[0].vmid", "Input should be greater than or equal to 100 (got 99)"),
    ("misspelt field", _rename_key("nodes.0", "memoryGiB", "memoryGib"),
     "nodes[0].memoryGib", "unknown field (did you mean 'memoryGiB'?)"),
    ("unknown top-level section", _rename_key("", "containers", "container"),
     "container", "unknown field (did you mean 'containers'?)"),
    ("unknown role in acl", _set("acl.0.role", "CTOperatr"),
     "acl[0].role", "role 'CTOperatr' is neither built in nor declared in roles"),
    ("undeclared acl user", _set("acl.0.user", "ghost@pve"),
     "acl[0].user", "user 'ghost@pve' is not declared in users"),
    ("undeclared token", _set("acl.1.token", "ctoperator@pve!nope"),
     "acl[1].token", "user 'ctoperator@pve' has no token 'nope'"),
    ("acl with two grantees", _set("acl.0.group", "admins"),
     "acl[0]", "an ACL entry needs exactly one of user, token or group"),
    ("invalid acl path", _set("acl.0.path", "/vm/101"), "acl[0].path", "invalid ACL path '/vm/101'"),
    ("template storage without vztmpl", _set("templates.0.volid", "local-lvm:vztmpl/debian.tar.zst"),
     "templates[0].volid", "storage 'local-lvm' does not have 'vztmpl' in its content"),
    ("content the storage type cannot hold", _set("storages.1.content", ["rootdir", "images", "vztmpl"]),
     "storages[1].content[2]", "storage type 'lvmthin' cannot hold 'vztmpl' content (allowed: images, rootdir)"),
    ("invalid privilege", _set("roles.0.privileges", ["VM.Alocate"]),
     "roles[0].privileges[0]", "invalid privilege 'VM.Alocate' (did you mean 'VM.Allocate'?)"),
    ("redefined built-in role", _set("roles.0.id", "PVEAdmin"),
     "roles[0].id", "'PVEAdmin' is a built-in role and cannot be redefined"),
    ("usage fraction above 1", _set("usage.default.memory.value", 1.2),
     "usage.default.memory.value", "Input should be less than or equal to 1 (got 1.2)"),
    ("bare-number fraction above 1", _set("containers.0.usage.cpu", 2),
     "containers[0].usage.cpu", "Input should be less than or equal to 1 (got 2)"),
    ("profile missing a field", _set("containers.0.usage.memory", {"type": "periodic", "base": 0.5, "amplitude": 0.1}),
     "containers[0].usage.memory.periodSeconds", "required field is missing"),
    ("unknown profile type", _set("usage.default.cpu", {"type": "sawtooth"}),
     "usage.default.cpu",
     "Input tag 'sawtooth' found using 'type' does not match any of the expected tags: "
     "'constant', 'step', 'ramp', 'periodic', 'trace'"),
    ("unordered trace", _set("containers.0.usage.disk", {"type": "trace", "points": [[10, 0.1], [5, 0.2]]}),
     "containers[0].usage.disk", "trace points must be in strictly increasing time order"),
    ("event for an unknown CT",
     _append("events", {"action": "setContainerUsage", "at": 5, "vmid": 4242, "memory": 0.5}),
     "events[0].vmid", "CT 4242 is not declared in containers"),
    ("event for an unknown node", _append("events", {"action": "nodeOffline", "at": 5, "node": "srv-px3"}),
     "events[0].node", "node 'srv-px3' is not declared in nodes"),
    ("unknown event action", _append("events", {"action": "explode", "at": 5}),
     "events[0]",
     "Input tag 'explode' found using 'action' does not match any of the expected tags: "
     "'setContainerUsage', 'setNodeLoad', 'nodeOffline', 'nodeOnline', 'failTasks'"),
    ("usage event without change", _append("events", {"action": "setContainerUsage", "at": 5, "vmid": 3150}),
     "events[0]", "setContainerUsage needs at least one of memory, cpu or disk"),
    ("undeclared pool", _set("containers.0.pool", "prod"),
     "containers[0].pool", "pool 'prod' is not declared in pools"),
    ("running template", _set("containers.0.template", True),
     "containers[0].status", "a template CT cannot be running"),
    ("bad status", _set("containers.0.status", "started"),
     "containers[0].status", "Input should be 'running' or 'stopped' (got 'started')"),
    ("invalid storage id", _set("storages.0.name", "x"),
     "storages[0].name",
     "'x' is not a valid storage ID (letters, digits, - _ . ; starting with a letter, 2+ characters)"),
    ("HA resource for an unknown CT", _set("ha", {"resources": [{"sid": "ct:101"}]}),
     "ha.resources[0].sid", "CT 101 is not declared in containers"),
    ("wrong apiVersion", _set("apiVersion", "pve-sim/v2"),
     "apiVersion", "Input should be 'pve-sim/v1' (got 'pve-sim/v2')"),
    ("generated CTs on an unknown storage",
     _set("generate", {"containers": {"count": 2, "vmidStart": 500, "rootfs": {"storage": "ceph", "sizeGiB": 4}}}),
     "generate.containers.rootfs.storage", "storage 'ceph' is not declared in storages"),
    ("generated CTs on an unknown node",
     _set("generate", {"containers": [{"count": 2, "vmidStart": 500, "nodes": ["srv-px1", "px9"],
                                        "rootfs": {"storage": "local-lvm", "sizeGiB": 4}}]}),
     "generate.containers[0].nodes[1]", "node 'px9' is not declared in nodes"),
    ("generated vmids collide",
     _set("generate", {"containers": {"count": 2, "vmidStart": 3149,
                                      "rootfs": {"storage": "local-lvm", "sizeGiB": 4}}}),
     "generate.containers.vmidStart", "duplicate vmid 3150 (first at containers[0].vmid)"),
    ("generator pattern with an unknown placeholder",
     _set("generate", {"nodes": {"count": 2, "namePattern": "n{name}", "cores": 1, "memoryGiB": 1, "rootfsGiB": 1}}),
     "generate.nodes.namePattern", "pattern 'n{name}' may only use {index}"),
    ("no nodes at all", _set("nodes", []), "nodes", "a scenario needs at least one node (in nodes or generate.nodes)"),
]


@pytest.mark.parametrize(
    ("mutate", "path", "rule"),
    [pytest.param(mutate, path, rule, id=name) for name, mutate, path, rule in BAD_SCENARIOS],
)
def test_bad_scenario_names_the_field_and_the_rule(
    lab: dict[str, Any], mutate: Mutation, path: str, rule: str
) -> None:
    mutate(lab)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(lab, "examples/x.yaml")
    assert (caught.value.path, caught.value.rule) == (path, rule)
    assert str(caught.value) == f"examples/x.yaml: {path}: {rule}"


def test_error_from_a_file_names_the_file_and_line(tmp_path: Path) -> None:
    text = LAB_YAML.read_text().replace("{storage: local-lvm, sizeGiB: 16}", "{storage: nope, sizeGiB: 16}")
    path = tmp_path / "x.yaml"
    path.write_text(text)
    expected_line = 1 + text.splitlines().index("    rootfs: {storage: nope, sizeGiB: 16}")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}: containers[0].rootfs.storage: storage 'nope' is not declared in storages (line {expected_line})"
    )


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: pve-sim/v1\nnodes:\n  - name: a\n    cores: [1, 2\n    memoryGiB: 4\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid YAML: ")
    assert caught.value.line == 5
    assert message.endswith(f"(line {caught.value.line}, column {caught.value.column})")


def test_duplicate_yaml_keys_are_an_error_not_last_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("nodes:\n  - name: a\n    cores: 2\n    cores: 4\n    memoryGiB: 4\n    rootfsGiB: 8\n")
    with pytest.raises(ScenarioError, match=r"found duplicate key 'cores' \(line 4, column 5\)"):
        load_scenario(path)


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(
        "nodes:\n"
        "  - &node {name: a, cores: 2, memoryGiB: 4, rootfsGiB: 8}\n"
        "  - {<<: *node, name: b}\n"
    )
    assert [node.name for node in load_scenario(path).nodes] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "rule"),
    [("", "the scenario is empty"), ("- 1\n", "a scenario is a mapping (apiVersion, kind, cluster, nodes, ...)")],
)
def test_file_that_is_not_a_scenario(tmp_path: Path, content: str, rule: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(content)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}: {rule}"


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the scenario"):
        load_scenario(tmp_path / "absent.yaml")


def test_minimal_scenario_gets_documented_defaults() -> None:
    scenario = parse_scenario({"nodes": [{"name": "pve1", "cores": 4, "memoryGiB": 8, "rootfsGiB": 32}]}, "min")
    assert isinstance(scenario, Scenario)
    assert scenario.cluster.pve_version == "9.1.2" and scenario.timing.create_seconds == 6
    assert scenario.nodes[0].online and isinstance(scenario.nodes[0].base_load.cpu, ConstantProfile)
    assert scenario.usage.profiles_for("anything", [], "pve1").values_at(0) == (0.0, 0.0, 0.0)
