"""PVE 9's HA rules: feasibility checks, transforms and the compiled form the CRM schedules with.

Modelled on pve-ha-manager 5.2.0 (commit b71218f, April 2026): ``src/PVE/HA/Rules.pm`` (the
inter-plugin checks and the implicit positive-affinity/node-affinity transform),
``src/PVE/HA/Rules/NodeAffinity.pm``, ``src/PVE/HA/Rules/ResourceAffinity.pm``,
``src/PVE/HA/Rules/Helpers.pm`` and ``src/PVE/HA/Groups.pm`` ``migrate_groups_to_rules``. The
error texts are PVE's, per rule and property, as ``check_feasibility`` collects them.

Pure functions over :class:`~pve_sim.state.HaRule` values; nothing here knows about HTTP or time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pve_sim.state import ClusterState, HaRule

RuleErrors = dict[str, dict[str, list[str]]]
"""rule id -> property -> messages (``$global_errors`` of ``check_feasibility``)."""


def parse_node_priority(entry: str) -> tuple[str, int]:
    """``PVE::HA::Tools::parse_node_priority``: ``node`` or ``node:pri``; no priority = 0."""
    node, _, priority = entry.partition(":")
    return node, int(priority) if priority else 0


def full_rules(state: ClusterState) -> dict[str, HaRule]:
    """The rules config plus the rules PVE derives from HA groups that were not migrated yet.

    ``migrate_groups_to_rules``: one ``node-affinity`` rule ``ha-group-<group>`` per group that
    has resources, with the group's nodes and priorities, ``strict`` = ``restricted`` and the
    comment ``Generated from HA group '<group>'.`` (the sim's groups carry no comment), ordered
    after the configured rules (``get_next_ordinal``).
    """
    rules = {rule_id: copy.deepcopy(rule) for rule_id, rule in state.ha_rules.items()}
    members: dict[str, set[str]] = {}
    for sid, resource in state.ha_resources.items():
        if resource.group:
            members.setdefault(resource.group, set()).add(sid)
    for group in sorted(members):
        if group not in state.ha_groups:
            continue
        nodes, restricted = state.ha_groups[group]
        rules[f"ha-group-{group}"] = HaRule(
            rule=f"ha-group-{group}",
            type="node-affinity",
            resources=members[group],
            order=next_ordinal(rules),
            nodes=dict(parse_node_priority(entry) for entry in nodes),
            strict=restricted,
            comment=f"Generated from HA group '{group}'.",
        )
    return rules


def next_ordinal(rules: Mapping[str, HaRule]) -> int:
    """``get_next_ordinal``: PVE sorts the orders ascending and takes the *first* (lowest) + 1.

    (That is what the Perl does -- ``(sort { $a <=> $b } values ...)[0] || 0`` -- so two rules can
    share an order; ties are listed by rule id here.)
    """
    orders = sorted(rule.order for rule in rules.values())
    return (orders[0] if orders else 0) + 1


def sorted_rules(rules: Mapping[str, HaRule]) -> list[HaRule]:
    """``foreach_rule(..., sorted => 1)``: by order (rule id for equal orders)."""
    return sorted(rules.values(), key=lambda r: (r.order, r.rule))


# ============================================================================ checks


@dataclass
class _CheckArgs:
    node_affinity: dict[str, HaRule] = field(default_factory=dict)
    resource_affinity: dict[str, HaRule] = field(default_factory=dict)
    positive: dict[str, HaRule] = field(default_factory=dict)
    negative: dict[str, HaRule] = field(default_factory=dict)


def _check_args(rules: Mapping[str, HaRule]) -> _CheckArgs:
    """``get_check_arguments``: the enabled rules of each kind."""
    args = _CheckArgs()
    for rule_id, rule in rules.items():
        if not rule.enabled:
            continue
        if rule.type == "node-affinity":
            args.node_affinity[rule_id] = rule
        elif rule.type == "resource-affinity":
            args.resource_affinity[rule_id] = rule
            if rule.affinity == "positive":
                args.positive[rule_id] = rule
            elif rule.affinity == "negative":
                args.negative[rule_id] = rule
    return args


def disjoint_resource_sets(rules: Mapping[str, HaRule]) -> list[tuple[list[str], set[str]]]:
    """``Helpers::find_disjoint_rules_resource_sets``: rules grouped by overlapping resources,
    visiting rules by their lowest resource id (then rule id)."""
    lowest = {rule_id: min(rule.resources) if rule.resources else "" for rule_id, rule in rules.items()}
    ordered = sorted(sorted(rules), key=lambda rule_id: lowest[rule_id])
    entries: list[tuple[list[str], set[str]]] = []
    for rule_id in ordered:
        resources = rules[rule_id].resources
        for ruleids, members in entries:
            if members & resources:
                ruleids.append(rule_id)
                members |= resources
                break
        else:
            entries.append(([rule_id], set(resources)))
    return entries


def _has_multiple_priorities(rule: HaRule) -> bool:
    return len(set(rule.nodes.values())) > 1


def _add(errors: RuleErrors, rule_id: str, message: str, prop: str = "resources") -> None:
    errors.setdefault(rule_id, {}).setdefault(prop, []).append(message)


def check_feasibility(rules: Mapping[str, HaRule], nodes: Iterable[str]) -> RuleErrors:
    """``PVE::HA::Rules->check_feasibility``: every registered check, plugins in registration order
    (node-affinity, resource-affinity), then the global (inter-plugin) checks."""
    node_count = len(list(nodes))
    args = _check_args(rules)
    errors: RuleErrors = {}

    # NodeAffinity: check_single_resource_reference
    users: dict[str, list[str]] = {}
    for rule_id, rule in args.node_affinity.items():
        for sid in rule.resources:
            users.setdefault(sid, []).append(rule_id)
    conflicts = sorted((rule_id, sid) for sid, ids in users.items() if len(ids) > 1 for rule_id in ids)
    for rule_id, sid in conflicts:
        _add(errors, rule_id, f"resource '{sid}' is already used in another node affinity rule")

    # ResourceAffinity: check_resource_affinity_resources_count
    for rule_id in sorted(r for r, rule in args.resource_affinity.items() if len(rule.resources) < 2):
        _add(errors, rule_id, "rule is ineffective as there are less than two resources")

    # ResourceAffinity: check_negative_resource_affinity_resources_count
    for rule_id in sorted(r for r, rule in args.negative.items() if len(rule.resources) > node_count):
        _add(errors, rule_id, "rule defines more resources than available nodes")

    # ResourceAffinity: check_inter_resource_affinity_rules_consistency
    pairs: list[tuple[str, str]] = []
    for ruleids, members in disjoint_resource_sets(args.positive):
        for negative_id, negative in args.negative.items():
            if len(members & negative.resources) < 2:
                continue
            pairs.append(("negative", negative_id))
            pairs.extend(("positive", rule_id) for rule_id in ruleids)
    for kind, rule_id in sorted(pairs):
        other = "positive" if kind == "negative" else "negative"
        _add(errors, rule_id, f"rule shares two or more resources with a {other} resource affinity rule")

    # Rules.pm: check_single_priority_node_affinity_in_resource_affinity_rules
    pairs = []
    for affinity_id, affinity_rule in args.resource_affinity.items():
        paired = [na_id for na_id, na in args.node_affinity.items() if affinity_rule.resources & na.resources]
        if any(_has_multiple_priorities(args.node_affinity[na_id]) for na_id in paired):
            pairs.append(("resource-affinity", affinity_id))
            pairs.extend(("node-affinity", na_id) for na_id in paired)
    for kind, rule_id in sorted(pairs):
        if kind == "node-affinity":
            _add(
                errors,
                rule_id,
                "resources are in a resource affinity rule and cannot be in"
                " a node affinity rule with multiple priorities",
            )
        else:
            _add(errors, rule_id, "resources are in node affinity rules with multiple priorities")

    # Rules.pm: check_single_node_affinity_per_positive_resource_affinity_rule
    pairs = []
    for ruleids, members in disjoint_resource_sets(args.positive):
        paired = [na_id for na_id, na in args.node_affinity.items() if members & na.resources]
        if len(paired) > 1:
            pairs.extend(("positive", rule_id) for rule_id in ruleids)
            pairs.extend(("node-affinity", na_id) for na_id in paired)
    for kind, rule_id in sorted(pairs):
        if kind == "positive":
            _add(errors, rule_id, "resources are in multiple node affinity rules")
        else:
            _add(
                errors,
                rule_id,
                "at least one resource is in a positive resource affinity rule and there are other resources in"
                " at least one other node affinity rule already",
            )

    # Rules.pm: check_negative_resource_affinity_node_affinity_consistency
    pairs = []
    for negative_id, negative in args.negative.items():
        allowed: set[str] = set()
        located: set[str] = set()
        paired = []
        for na_id, na in args.node_affinity.items():
            common = negative.resources & na.resources
            if not common:
                continue
            located |= common
            allowed |= set(na.nodes)
            paired.append(na_id)
        if len(allowed) < len(located):
            pairs.append(("negative", negative_id))
            pairs.extend(("node-affinity", na_id) for na_id in paired)
    for kind, rule_id in sorted(pairs):
        if kind == "negative":
            _add(errors, rule_id, "two or more resources are restricted to less nodes than available to the resources")
        else:
            _add(
                errors,
                rule_id,
                "at least one resource is in a negative resource affinity rule and this rule would restrict these"
                " to less nodes than available to the resources",
            )
    return errors


# ============================================================================ transform + compile


def transform(rules: dict[str, HaRule], nodes: Iterable[str]) -> list[str]:
    """``PVE::HA::Rules->transform``: drop infeasible rules (returning the CRM's log lines), then
    merge connected positive rules, add the implicit negative rules and extend node-affinity
    rules to every resource of a positive rule that shares one of their resources."""
    errors = check_feasibility(rules, nodes)
    for rule_id in errors:
        rules.pop(rule_id, None)
    messages = [
        f"Drop rule '{rule_id}', because {message}."
        for rule_id in sorted(errors)
        for prop in sorted(errors[rule_id])
        for message in errors[rule_id][prop]
    ]
    # merge_connected_positive_resource_affinity_rules
    args = _check_args(rules)
    for ruleids, members in disjoint_resource_sets(args.positive):
        if len(ruleids) < 2:
            continue
        merged_id = "_merged-" + "-".join(ruleids)
        order = rules[ruleids[0]].order
        for rule_id in ruleids:
            del rules[rule_id]
        rules[merged_id] = HaRule(merged_id, "resource-affinity", set(members), order, affinity="positive")
    # create_implicit_negative_resource_affinity_rules
    args = _check_args(rules)
    for positive_id, positive in args.positive.items():
        separated_from: dict[str, set[str]] = {}
        for negative in args.negative.values():
            for sid in positive.resources:
                if sid not in negative.resources:
                    continue
                for csid in negative.resources:
                    if csid != sid:
                        separated_from.setdefault(csid, set()).add(sid)
        for csid, sids in separated_from.items():
            for sid in positive.resources - sids:
                new_id = f"_implicit-negative-{positive_id}-{sid}-{csid}"
                rules[new_id] = HaRule(
                    new_id, "resource-affinity", {sid, csid}, next_ordinal(rules), affinity="negative"
                )
    # create_implicit_positive_resource_affinity_node_affinity_rules
    args = _check_args(rules)
    for positive in args.positive.values():
        for na in args.node_affinity.values():
            if positive.resources & na.resources:
                na.resources |= positive.resources
                break
    return messages


@dataclass
class CompiledRules:
    """``PVE::HA::Rules->compile``: per resource its node affinity (node -> priority, the other
    cluster nodes at -1 for a non-strict rule) and its positive/negative partners."""

    node_affinity: dict[str, dict[str, int]] = field(default_factory=dict)
    positive: dict[str, set[str]] = field(default_factory=dict)
    negative: dict[str, set[str]] = field(default_factory=dict)


def compile_rules(state: ClusterState) -> tuple[CompiledRules, list[str]]:
    """The rules the CRM works with (groups migrated, infeasible rules dropped) and the log lines
    about dropped rules."""
    nodes = list(state.nodes)
    rules = full_rules(state)
    messages = transform(rules, nodes)
    compiled = CompiledRules()
    for rule in sorted_rules(rules):
        if not rule.enabled:
            continue
        if rule.type == "node-affinity":
            effective = dict(rule.nodes)
            if not rule.strict:
                for node in nodes:
                    effective.setdefault(node, -1)
            for sid in rule.resources:
                compiled.node_affinity[sid] = effective
        else:
            target = compiled.positive if rule.affinity == "positive" else compiled.negative
            for sid in rule.resources:
                target.setdefault(sid, set()).update(rule.resources - {sid})
    return compiled, messages


def get_node_affinity(compiled: CompiledRules, sid: str, online: set[str]) -> tuple[set[str], set[str]]:
    """NodeAffinity ``get_node_affinity``: (allowed online nodes, the online nodes of the highest
    priority). Without a rule both are every online node."""
    affinity = compiled.node_affinity.get(sid)
    if affinity is None:
        return set(online), set(online)
    by_priority: dict[int, set[str]] = {}
    allowed: set[str] = set()
    for node, priority in affinity.items():
        if node not in online:
            continue
        allowed.add(node)
        by_priority.setdefault(priority, set()).add(node)
    preferred = by_priority[max(by_priority)] if by_priority else set()
    return allowed, set(preferred)
