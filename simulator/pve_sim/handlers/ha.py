"""``/cluster/ha``: HA resources, HA rules (PVE 9) and the HA status views.

From pve-ha-manager 5.2.0 (commit b71218f): ``src/PVE/API2/HA/Resources.pm``,
``src/PVE/API2/HA/Rules.pm``, ``src/PVE/API2/HA/Status.pm``, ``src/PVE/HA/Config.pm``, with
pve-common ``src/PVE/SectionConfig.pm`` ``check_config``/``delete_from_config`` for the option
checks. Errors are PVE's ``die`` messages (HTTP 500), including the ``create resource failed:``
style prefixes ``lock_ha_domain`` adds; an infeasible rule is ``create ha rule failed: 400 Rule
'<id>' is invalid.`` followed by one ``<property>: <messages>`` line (the 400 exception is
stringified by ``lock_ha_domain``, so the answer is a 500).

Permissions as PVE declares them: Sys.Audit on ``/`` to read, Sys.Console on ``/`` to change.
What the HA manager then does with the configuration is :mod:`pve_sim.ha`.

Not modelled: VM resources (``vm:<id>``; the simulator has no QEMU guests, so they fail as
"does not exist in cluster"), the ``error`` service state (hence ``check_service_state`` never
refuses), HA groups endpoints and the persistent migration of groups to rules.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from pve_sim.errors import internal
from pve_sim.formats import split_list
from pve_sim.ha_rules import check_feasibility, full_rules, next_ordinal, parse_node_priority, sorted_rules
from pve_sim.handlers.lxc import purge_ha_resource
from pve_sim.handlers.registry import Perm, route
from pve_sim.state import HaResource, HaRule

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

AUDIT = Perm("/", ("Sys.Audit",))
CONSOLE = Perm("/", ("Sys.Console",))

_RESOURCE_OPTIONS = ("state", "group", "comment", "failback", "max_restart", "max_relocate")
"""``PVE::HA::Resources::PVECT::options`` (all optional)."""

_RULE_OPTIONS: dict[str, dict[str, bool]] = {
    "node-affinity": {"resources": False, "nodes": False, "strict": True, "disable": True, "comment": True},
    "resource-affinity": {"resources": False, "affinity": False, "disable": True, "comment": True},
}
"""Each rule plugin's ``options``: name -> optional (``Rules/NodeAffinity.pm``, ``ResourceAffinity.pm``)."""

_CONFIG_CHANGED = "detected modified configuration - file changed by other user? Try again."


# ================================================================================= helpers


def parse_sid(cluster: SimCluster, raw: str) -> tuple[str, str, str]:
    """``PVE::HA::Config::parse_sid``: ``<vmid>`` becomes ``ct:<vmid>`` for an existing CT."""
    if re.fullmatch(r"\d+", raw):
        if int(raw) in cluster.state.containers:
            return f"ct:{raw}", "ct", raw
        raise internal(f"unable to detect SID from VMID - VM/CT {raw} does not exist")
    match = re.fullmatch(r"(\S+):(\S+)", raw)
    if match is None:
        raise internal(f"unable to parse service id '{raw}'")
    return raw, match.group(1), match.group(2)


def _groups_migrated(cluster: SimCluster) -> bool:
    """``have_groups_been_migrated``: no HA group is left in groups.cfg."""
    return not cluster.state.ha_groups


def _resource_entry(cluster: SimCluster, resource: HaResource, digest: str) -> dict[str, object]:
    """``$api_copy_config``: the section as stored plus ``sid``, ``type`` and the file's digest."""
    entry: dict[str, object] = {"sid": resource.sid, "type": resource.type, "digest": digest}
    for key in ("comment", "failback", "max_relocate", "max_restart", "state"):
        value = getattr(resource, key)
        if value is not None:
            entry[key] = int(value) if isinstance(value, bool) else value
    if resource.group and not _groups_migrated(cluster):
        entry["group"] = resource.group
    return entry


def _check_resource(cluster: SimCluster, sid: str, kind: str, name: str) -> None:
    """The plugin's ``verify_name`` and ``exists`` (``Resources/PVECT.pm``, ``PVEVM.pm``)."""
    if kind not in ("ct", "vm"):
        raise internal(f"unknown section type '{kind}'")
    if not re.fullmatch(r"[1-9][0-9]+", name):
        raise internal("invalid VMID")
    vmid = int(name)
    if kind == "vm":
        if vmid in cluster.state.containers:
            raise internal(f"resource 'vm:{vmid}' - guest with ID {vmid} is not a VM")
        raise internal(f"resource 'vm:{vmid}' does not exist in cluster")
    if vmid not in cluster.state.containers:
        raise internal(f"resource 'ct:{vmid}' does not exist in cluster")


def _apply_resource_params(resource: HaResource, req: Request) -> None:
    for key in _RESOURCE_OPTIONS:
        value = req.get(key)
        if value is None:
            continue
        if key == "failback":
            resource.failback = bool(value)
        elif key in ("max_restart", "max_relocate"):
            setattr(resource, key, int(str(value)))
        else:
            setattr(resource, key, str(value))


# ================================================================================= resources


@route("GET", "/cluster/ha/resources", perm=AUDIT)
def resources_index(cluster: SimCluster, req: Request) -> object:
    """``index``: every resource (``type`` filters), with ``errors.group`` for a missing group."""
    wanted = req.opt_text("type")
    digest = cluster.state.ha_resources_digest()
    result = []
    for sid in sorted(cluster.state.ha_resources):
        resource = cluster.state.ha_resources[sid]
        if wanted and resource.type != wanted:
            continue
        entry = _resource_entry(cluster, resource, digest)
        if resource.group and not _groups_migrated(cluster) and resource.group not in cluster.state.ha_groups:
            entry["errors"] = {"group": f"group '{resource.group}' does not exist"}
        result.append(entry)
    return result


@route("GET", "/cluster/ha/resources/{sid}", perm=AUDIT)
def resource_read(cluster: SimCluster, req: Request) -> object:
    sid, _kind, _name = parse_sid(cluster, req.text("sid"))
    resource = cluster.state.ha_resources.get(sid)
    if resource is None:
        raise internal(f"no such resource '{sid}'")
    return _resource_entry(cluster, resource, cluster.state.ha_resources_digest())


@route("POST", "/cluster/ha/resources", perm=CONSOLE)
def resource_create(cluster: SimCluster, req: Request) -> object:
    """``create``: quorum, the sid, the type, the guest, then ``resource ID ... already defined``."""
    cluster.check_quorum()
    sid, kind, name = parse_sid(cluster, req.text("sid"))
    param_type = req.opt_text("type")
    if param_type and param_type != kind:
        raise internal("types does not match")
    if req.get("group") is not None and _groups_migrated(cluster):
        raise internal("invalid parameter 'group': ha groups have been migrated to rules")
    _check_resource(cluster, sid, kind, name)
    if sid in cluster.state.ha_resources:
        raise internal(f"create resource failed: resource ID '{sid}' already defined")
    resource = HaResource(sid=sid, state=None, max_restart=None, max_relocate=None, failback=None)
    _apply_resource_params(resource, req)
    cluster.state.ha_resources[sid] = resource
    cluster.ha.act_soon(sid)
    return None


@route("PUT", "/cluster/ha/resources/{sid}", perm=CONSOLE)
def resource_update(cluster: SimCluster, req: Request) -> object:
    """``update``: group checks, then ``update_resources_config`` (digest, set, ``delete``)."""
    sid, kind, _name = parse_sid(cluster, req.text("sid"))
    param_type = req.opt_text("type")
    if param_type and param_type != kind:
        raise internal("types does not match")
    group = req.opt_text("group")
    if group:
        if _groups_migrated(cluster):
            raise internal("invalid parameter 'group': ha groups have been migrated to rules")
        if group not in cluster.state.ha_groups:
            raise internal(f"HA group '{group}' does not exist")
    state = cluster.state
    digest = req.opt_text("digest")
    if digest and digest != state.ha_resources_digest():
        raise internal(f"update resources config failed: {_CONFIG_CHANGED}")
    resource = state.ha_resources.get(sid)
    if resource is None:
        raise internal(f"update resources config failed: no such resource '{sid}'")
    deletes = split_list(req.opt_text("delete") or "")
    for key in deletes:
        if key not in _RESOURCE_OPTIONS:
            raise internal(f"update resources config failed: no such option '{key}'")
    _apply_resource_params(resource, req)
    for key in deletes:
        setattr(resource, key, None)
    cluster.ha.act_soon(sid)
    return None


@route("DELETE", "/cluster/ha/resources/{sid}", perm=CONSOLE)
def resource_delete(cluster: SimCluster, req: Request) -> object:
    """``delete``: ``purge`` (default 1) also removes the resource from rules, deleting a rule it
    was the only resource of. The CRM then forgets the service; the CT keeps its state."""
    sid, _kind, _name = parse_sid(cluster, req.text("sid"))
    purge = req.get("purge")
    if sid not in cluster.state.ha_resources:
        raise internal(f"cannot delete service '{sid}', not HA managed!")
    purge_ha_resource(cluster, sid, purge_rules=purge is None or bool(purge))
    cluster.ha.sync()
    return None


def _motion(cluster: SimCluster, req: Request, task: str) -> object:
    """``migrate``/``relocate``: queue the CRM command and answer what moves along and what blocks."""
    sid, _kind, _name = parse_sid(cluster, req.text("sid"))
    target = req.text("node")
    resource = cluster.state.ha_resources.get(sid)
    if resource is None or resource.state == "ignored":
        raise internal(f"resource '{sid}' is not HA managed")
    comigrated, blocking = cluster.ha.motion_info(sid)
    cluster.ha.command(task, sid, target)
    result: dict[str, object] = {"sid": sid, "requested-node": target}
    if comigrated:
        result["comigrated-resources"] = comigrated
    if blocking.get(target):
        result["blocking-resources"] = blocking[target]
    return result


@route("POST", "/cluster/ha/resources/{sid}/migrate", perm=CONSOLE)
def resource_migrate(cluster: SimCluster, req: Request) -> object:
    return _motion(cluster, req, "migrate")


@route("POST", "/cluster/ha/resources/{sid}/relocate", perm=CONSOLE)
def resource_relocate(cluster: SimCluster, req: Request) -> object:
    return _motion(cluster, req, "relocate")


# ================================================================================= rules


def _rule_entry(rule: HaRule, digest: str, errors: dict[str, list[str]] | None) -> dict[str, object]:
    """``$get_api_ha_rule``: the rule's keys, ``rule``, ``digest``, ``order``, encoded lists and the
    feasibility ``errors`` (``set_rule_defaults`` adds nothing: ``strict``'s default is 0)."""
    entry: dict[str, object] = {
        "rule": rule.rule,
        "type": rule.type,
        "digest": digest,
        "order": rule.order,
        "resources": rule.resources_text(),
    }
    if rule.type == "node-affinity":
        entry["nodes"] = rule.nodes_text()
        if rule.strict is not None:
            entry["strict"] = int(rule.strict)
    if rule.affinity is not None:
        entry["affinity"] = rule.affinity
    if rule.disable is not None:
        entry["disable"] = int(rule.disable)
    if rule.comment is not None:
        entry["comment"] = rule.comment
    if errors:
        entry["errors"] = {prop: ", ".join(messages) for prop, messages in sorted(errors.items())}
    return entry


@route("GET", "/cluster/ha/rules", perm=AUDIT)
def rules_index(cluster: SimCluster, req: Request) -> object:
    """``index``: the rules (HA groups read as ``ha-group-<group>`` node-affinity rules), sorted by
    order, filtered by ``type`` and ``resource``, each with its feasibility errors."""
    wanted_type = req.opt_text("type")
    wanted_resource = req.opt_text("resource")
    rules = full_rules(cluster.state)
    errors = check_feasibility(rules, list(cluster.state.nodes))
    digest = cluster.state.ha_rules_digest()
    result = []
    for rule in sorted_rules(rules):
        if wanted_type is not None and rule.type != wanted_type:
            continue
        if wanted_resource is not None and wanted_resource not in rule.resources:
            continue
        result.append(_rule_entry(rule, digest, errors.get(rule.rule)))
    return result


@route("GET", "/cluster/ha/rules/{rule}", perm=AUDIT)
def rule_read(cluster: SimCluster, req: Request) -> object:
    rule_id = req.text("rule")
    rules = full_rules(cluster.state)
    if rule_id not in rules:
        raise internal(f"no such ha rule '{rule_id}'")
    errors = check_feasibility(rules, list(cluster.state.nodes))
    return _rule_entry(rules[rule_id], cluster.state.ha_rules_digest(), errors.get(rule_id))


def _check_rule_options(rule_type: str, req: Request, *, create: bool) -> dict[str, object]:
    """``check_config``: every given option must belong to the type (``unexpected property``);
    on create every required one must be there. Returns the decoded options."""
    options = _RULE_OPTIONS[rule_type]
    given: dict[str, object] = {}
    for key in ("resources", "nodes", "strict", "affinity", "disable", "comment"):
        value = req.get(key)
        if value is None or (key == "disable" and not value):
            continue  # the API deletes a false 'disable' before check_config
        given[key] = value
    param_type = req.opt_text("type")
    if not create and param_type is not None and param_type != rule_type:
        raise internal("update HA rules failed: unexpected property 'type'")
    prefix = "" if create else "update HA rules failed: "
    for key in sorted(given):
        if key not in options:
            raise internal(f"{prefix}unexpected property '{key}'")
    if create:
        for key in sorted(options):
            if not options[key] and key not in given:
                raise internal(f"missing value for required option '{key}'")
    decoded: dict[str, object] = {}
    for key, value in given.items():
        if key == "resources":
            decoded[key] = {sid for sid in split_list(str(value)) if re.fullmatch(r"[a-z]+:\S+", sid)}
        elif key == "nodes":
            decoded[key] = dict(parse_node_priority(entry) for entry in split_list(str(value)))
        elif key in ("strict", "disable"):
            decoded[key] = bool(value)
        else:
            decoded[key] = str(value)
    return decoded


def _assert_resources(cluster: SimCluster, resources: set[str], prefix: str) -> None:
    """``$assert_valid_resources_param``."""
    if not resources:
        raise internal(f"{prefix}no resources were specified")
    unmanaged = sorted(sid for sid in resources if sid not in cluster.state.ha_resources)
    if unmanaged:
        raise internal(f"{prefix}cannot use unmanaged resource(s) {', '.join(unmanaged)}.")


def _assert_nodes(cluster: SimCluster, nodes: dict[str, int], prefix: str) -> None:
    """``$assert_valid_nodes_param``."""
    if not nodes:
        raise internal(f"{prefix}no nodes were specified")
    missing = sorted(node for node in nodes if node not in cluster.state.nodes)
    if missing:
        raise internal(f"{prefix}cannot use non-existent node(s) {', '.join(missing)}.")


def _assert_feasible(cluster: SimCluster, rules: dict[str, HaRule], rule_id: str, prefix: str) -> None:
    """``$assert_feasibility``: the rule set with groups migrated, checked against every node the
    CRM knows; the rule's own errors make the 400 exception (stringified by ``lock_ha_domain``)."""
    state = cluster.state
    candidate = full_rules(state)
    for rid in list(candidate):
        if rid in state.ha_rules or rid in rules:
            candidate.pop(rid)
    candidate.update(rules)
    errors = check_feasibility(candidate, list(state.nodes)).get(rule_id)
    if not errors:
        return
    lines = "".join(f"\n{prop}: {', '.join(messages)}" for prop, messages in errors.items())
    raise internal(f"{prefix}400 Rule '{rule_id}' is invalid.{lines}")


def _copy_rules(cluster: SimCluster) -> dict[str, HaRule]:
    return {
        rule_id: HaRule(
            rule=r.rule,
            type=r.type,
            resources=set(r.resources),
            order=r.order,
            nodes=dict(r.nodes),
            strict=r.strict,
            affinity=r.affinity,
            disable=r.disable,
            comment=r.comment,
        )
        for rule_id, r in cluster.state.ha_rules.items()
    }


@route("POST", "/cluster/ha/rules", perm=CONSOLE)
def rule_create(cluster: SimCluster, req: Request) -> object:
    cluster.check_quorum()
    if not _groups_migrated(cluster):
        raise internal("cannot create ha rule: ha groups have not been migrated yet")
    rule_type = req.text("type")
    rule_id = req.text("rule")
    options = _check_rule_options(rule_type, req, create=True)
    prefix = "create ha rule failed: "
    rules = _copy_rules(cluster)
    if rule_id in rules:
        raise internal(f"{prefix}HA rule '{rule_id}' already defined")
    resources = options.get("resources")
    assert isinstance(resources, set)
    _assert_resources(cluster, resources, prefix)
    nodes = options.get("nodes")
    if isinstance(nodes, dict) and nodes:
        _assert_nodes(cluster, nodes, prefix)
    rule = HaRule(rule=rule_id, type=rule_type, resources=resources, order=next_ordinal(rules))
    _set_rule_options(rule, options)
    rules[rule_id] = rule
    _assert_feasible(cluster, rules, rule_id, prefix)
    cluster.state.ha_rules = rules
    cluster.ha.act_soon()
    return None


@route("PUT", "/cluster/ha/rules/{rule}", perm=CONSOLE)
def rule_update(cluster: SimCluster, req: Request) -> object:
    if not _groups_migrated(cluster):
        raise internal("cannot update ha rule: ha groups have not been migrated yet")
    rule_id = req.text("rule")
    prefix = "update HA rules failed: "
    digest = req.opt_text("digest")
    if digest and digest != cluster.state.ha_rules_digest():
        raise internal(f"{prefix}{_CONFIG_CHANGED}")
    rules = _copy_rules(cluster)
    rule = rules.get(rule_id)
    if rule is None:
        raise internal(f"{prefix}HA rule '{rule_id}' does not exist")
    options = _check_rule_options(rule.type, req, create=False)
    resources = options.get("resources")
    if isinstance(resources, set) and resources:
        _assert_resources(cluster, resources, prefix)
    nodes = options.get("nodes")
    if isinstance(nodes, dict) and nodes:
        _assert_nodes(cluster, nodes, prefix)
    schema = _RULE_OPTIONS[rule.type]
    for key in split_list(req.opt_text("delete") or ""):
        if key not in schema:
            raise internal(f"{prefix}no such option '{key}'")
        if not schema[key]:
            raise internal(f"{prefix}unable to delete required option '{key}'")
        if key in options:
            raise internal(f"{prefix}cannot set and delete property '{key}' at the same time!")
        setattr(rule, key, None)
    _set_rule_options(rule, options)
    _assert_feasible(cluster, rules, rule_id, prefix)
    cluster.state.ha_rules = rules
    cluster.ha.act_soon()
    return None


def _set_rule_options(rule: HaRule, options: dict[str, object]) -> None:
    for key, value in options.items():
        if key == "resources":
            assert isinstance(value, set)
            rule.resources = value
        elif key == "nodes":
            assert isinstance(value, dict)
            rule.nodes = value
        else:
            setattr(rule, key, value)


@route("DELETE", "/cluster/ha/rules/{rule}", perm=CONSOLE)
def rule_delete(cluster: SimCluster, req: Request) -> object:
    """``delete_rule``: no error for a rule that does not exist."""
    cluster.state.ha_rules.pop(req.text("rule"), None)
    cluster.ha.act_soon()
    return None


# ================================================================================= status


def _ha_master(cluster: SimCluster) -> str:
    online = [name for name, node in cluster.state.nodes.items() if node.online]
    return online[0] if online else next(iter(cluster.state.nodes), "")


def _localtime(epoch: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(epoch))


@route("GET", "/cluster/ha/status/current", perm=AUDIT)
def ha_status_current(cluster: SimCluster, req: Request) -> object:
    state = cluster.state
    cluster.ha.sync()
    entry_node = next(iter(state.nodes), "")
    quorate = cluster.is_quorate()
    now = int(cluster.now())
    result: list[dict[str, object]] = [
        {
            "id": "quorum",
            "type": "quorum",
            "node": entry_node,
            "status": "OK" if quorate else f"No quorum on node '{entry_node}'!",
            "quorate": 1 if quorate else 0,
        }
    ]
    if not state.ha_resources:
        result.append(
            {
                "id": "fencing",
                "type": "fencing",
                "node": entry_node,
                "status": "standby (CRM watchdog standby)",
                "armed-state": "standby",
            }
        )
        return result
    master = _ha_master(cluster)
    result.append(
        {
            "id": "master",
            "type": "master",
            "node": master,
            "status": f"{master} (active, {_localtime(now)})",
            "timestamp": now,
        }
    )
    result.append(
        {
            "id": "fencing",
            "type": "fencing",
            "node": master,
            "status": "armed (CRM watchdog active)",
            "armed-state": "armed",
        }
    )
    services = cluster.ha.services
    for name in sorted(state.nodes):
        node = state.nodes[name]
        hosted = [s for s in services.values() if s.node == name]
        if not node.online:
            result.append(
                {
                    "id": f"lrm:{name}",
                    "type": "lrm",
                    "node": name,
                    "status": f"{name} (old timestamp - dead?, watchdog standby, {_localtime(now - 60)})",
                    "timestamp": now - 60,
                }
            )
            continue
        lrm_state = "active" if hosted else "idle"
        watchdog = "watchdog active" if hosted else "watchdog standby"
        result.append(
            {
                "id": f"lrm:{name}",
                "type": "lrm",
                "node": name,
                "status": f"{name} ({lrm_state}, {watchdog}, {_localtime(now)})",
                "timestamp": now,
            }
        )
    for sid in sorted(state.ha_resources):
        resource = state.ha_resources[sid]
        service = services.get(sid)
        ct = state.containers.get(resource.vmid)
        service_node = service.node if service is not None else (ct.node if ct is not None else "---")
        crm_state = service.state if service is not None else (resource.state or "started")
        shown = crm_state
        if ct is not None and crm_state == "started" and not ct.running:
            shown = "starting"
        entry: dict[str, object] = {
            "id": f"service:{sid}",
            "type": "service",
            "sid": sid,
            "node": service_node,
            "crm_state": crm_state,
            "request_state": resource.requested,
            "state": shown,
            "status": f"{sid} ({service_node}, {shown})",
            "max_restart": 1 if resource.max_restart is None else resource.max_restart,
            "max_relocate": 1 if resource.max_relocate is None else resource.max_relocate,
            "failback": 1 if resource.effective_failback else 0,
        }
        result.append(entry)
    return result


@route("GET", "/cluster/ha/status/manager_status", perm=AUDIT)
def ha_manager_status(cluster: SimCluster, req: Request) -> object:
    state = cluster.state
    cluster.ha.sync()
    now = int(cluster.now())
    entry_node = next(iter(state.nodes), "")
    manager: dict[str, object] = {}
    if state.ha_resources:
        service_status: dict[str, object] = {}
        for sid, service in sorted(cluster.ha.services.items()):
            item: dict[str, object] = {"node": service.node, "state": service.state, "uid": service.uid}
            if service.target:
                item["target"] = service.target
            service_status[sid] = item
        manager = {
            "master_node": _ha_master(cluster),
            "node_status": dict(cluster.ha.node_status)
            or {name: "online" if node.online else "unknown" for name, node in state.nodes.items()},
            "service_status": service_status,
            "timestamp": now,
        }
    return {
        "manager_status": manager,
        "quorum": {"node": entry_node, "quorate": "1" if cluster.is_quorate() else "0"},
        "lrm_status": {
            name: {
                "mode": "active",
                "results": {},
                "state": "active" if state.ha_resources else "wait_for_agent_lock",
                "timestamp": now,
            }
            for name, node in state.nodes.items()
            if node.online
        },
    }
