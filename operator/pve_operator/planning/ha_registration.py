"""``ContainerPolicy.spec.ha``: the HA resources and PVE 9 HA rules the operator keeps for a policy.

What the operator registers (pve-ha-manager ``src/PVE/API2/HA/Resources.pm`` and ``Rules.pm``):

* one HA resource ``ct:<vmid>`` per CT of the policy, with ``state``, ``max_restart``, ``max_relocate``
  and a ``comment`` that names the policy (:func:`marker`): that comment is how the operator knows a
  resource is its own, so it never changes or removes one a user registered;
* one ``node-affinity`` rule over the nodes the policy may use (its effective weight above 0 and, with
  ``placement.nodeAffinity`` required terms, matching them; ``strict`` then), all at the same priority:
  PVE's HA manager recovers a CT of a failed node onto one of them;
* for a ``kubernetes.io/hostname`` DoNotSchedule spread: ``resource-affinity`` rules with ``affinity:
  negative`` over groups of CTs, each group at most one CT smaller than the number of those nodes (so
  one node's failure leaves a node free for each recovered CT; PVE refuses a negative rule with more
  resources than nodes, and an HA manager that cannot place a member leaves it down), CTs dealt to
  groups by index so each group holds CTs from across the fleet (a CT that would be alone joins a group
  that still fits the nodes, so every CT is in one).

Rule IDs start with :func:`rule_prefix` (``pveop-`` + the policy UID's first 12 hex digits): rules with
that prefix are the operator's, every other rule is left alone. Spreads over other keys (racks,
zones) have no PVE equivalent (HA rules know nodes, not labels): not expressed, and said so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pve_operator.api.v1alpha1 import HaSpec
from pve_operator.planning.topology import HOSTNAME_LABEL, TopologyRules

#: Most CTs in one negative resource-affinity rule below the node count (see the module docstring).
MIN_GROUP = 2


def marker(namespace: str, name: str, uid: str) -> str:
    """The ``comment`` of the operator's HA resources for one policy."""
    return f"pve-operator: ContainerPolicy {namespace}/{name} uid={uid}"


def rule_prefix(uid: str) -> str:
    """Prefix of the operator's rule IDs for one policy (PVE's ``pve-configid``: ``[a-z][a-z0-9_-]*``)."""
    return "pveop-" + "".join(c for c in uid.lower() if c in "0123456789abcdef")[:12]


@dataclass(frozen=True)
class WantedResource:
    sid: str
    state: str
    max_restart: int
    max_relocate: int
    comment: str

    def params(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "max_restart": self.max_restart,
            "max_relocate": self.max_relocate,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class WantedRule:
    rule: str
    type: str
    resources: tuple[str, ...]
    nodes: tuple[str, ...] = ()
    strict: bool = False
    affinity: str | None = None
    comment: str = ""

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"resources": ",".join(self.resources), "comment": self.comment}
        if self.type == "node-affinity":
            params["nodes"] = ",".join(self.nodes)
            params["strict"] = 1 if self.strict else 0
        else:
            params["affinity"] = self.affinity
        return params


@dataclass(frozen=True)
class HaPlan:
    """What to change in PVE's HA configuration, in the order to apply it."""

    create_resources: tuple[WantedResource, ...] = ()
    update_resources: tuple[WantedResource, ...] = ()
    delete_rules: tuple[str, ...] = ()
    update_rules: tuple[WantedRule, ...] = ()
    create_rules: tuple[WantedRule, ...] = ()
    #: SIDs of the operator's resources to remove (purge: out of every rule too).
    delete_resources: tuple[str, ...] = ()
    #: Resources a user registered before the operator (never changed); shown in status.
    foreign_resources: tuple[str, ...] = ()
    #: What the rules cannot express (a spread over racks or zones), for the policy's status.
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Once applied: the operator's HA resources (SIDs) and rule IDs for the policy.
    registered: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        return sum(
            len(x)
            for x in (
                self.create_resources,
                self.update_resources,
                self.delete_rules,
                self.update_rules,
                self.create_rules,
                self.delete_resources,
            )
        )


@dataclass(frozen=True)
class HaIntent:
    """The policy's side: who it is, its ``spec.ha`` (None: registration off) and placement."""

    namespace: str
    name: str
    uid: str
    spec: HaSpec | None
    #: The nodes its CTs may use, in pool order.
    allowed_nodes: tuple[str, ...]
    #: placement.nodeAffinity has required terms: the node-affinity rule is strict.
    strict: bool = False
    #: A DoNotSchedule spread over kubernetes.io/hostname.
    spread_over_nodes: bool = False
    #: Spread keys PVE's rules cannot express.
    other_spread_keys: tuple[str, ...] = ()


def ha_intent(
    identity: tuple[str, str, str],
    spec: HaSpec | None,
    node_weights: Mapping[str, int],
    rules: TopologyRules | None,
    *,
    strict: bool,
) -> HaIntent:
    """The policy's side of the registration: the nodes it may use (weight above 0, allowed by its
    required node affinity), in pool order, and which of its spreads PVE's rules can express."""
    namespace, name, uid = identity
    hard = [s for s in rules.spread if s.hard] if rules is not None else []
    return HaIntent(
        namespace=namespace,
        name=name,
        uid=uid,
        spec=spec,
        allowed_nodes=tuple(
            n for n, w in node_weights.items() if w > 0 and (rules is None or rules.affinity_refusal(n) is None)
        ),
        strict=strict,
        spread_over_nodes=any(s.topology_key == HOSTNAME_LABEL for s in hard),
        other_spread_keys=tuple(sorted({s.topology_key for s in hard if s.topology_key != HOSTNAME_LABEL})),
    )


def wanted(intent: HaIntent, vmids_by_index: Mapping[int, int]) -> tuple[list[WantedResource], list[WantedRule]]:
    """The resources and rules the policy should have for its CTs (``index -> vmid``)."""
    spec = intent.spec
    if spec is None or not spec.enabled or not vmids_by_index:
        return [], []
    comment = marker(intent.namespace, intent.name, intent.uid)
    ordered = [f"ct:{vmids_by_index[i]}" for i in sorted(vmids_by_index)]
    resources = [WantedResource(sid, spec.state.value, spec.max_restart, spec.max_relocate, comment) for sid in ordered]
    prefix = rule_prefix(intent.uid)
    rules: list[WantedRule] = []
    if intent.allowed_nodes:
        rules.append(
            WantedRule(
                f"{prefix}-nodes",
                "node-affinity",
                tuple(sorted(ordered)),
                intent.allowed_nodes,
                intent.strict,
                None,
                comment,
            )
        )
    nodes = len(intent.allowed_nodes)
    if intent.spread_over_nodes and nodes >= MIN_GROUP and len(ordered) >= MIN_GROUP:
        size = max(MIN_GROUP, nodes - 1)
        count = -(-len(ordered) // size)
        groups = [ordered[g::count] for g in range(count)]
        if len(groups) > 1 and len(groups[-1]) == 1 and len(groups[0]) < nodes:
            # A lone CT would be in no rule: it joins the first group, which still fits the nodes.
            groups[0] = groups[0] + groups.pop()
        for number, group in enumerate(groups):
            if len(group) >= MIN_GROUP:
                rules.append(
                    WantedRule(
                        f"{prefix}-apart-{number}",
                        "resource-affinity",
                        tuple(sorted(group)),
                        affinity="negative",
                        comment=comment,
                    )
                )
    return resources, rules


def plan_ha(
    intent: HaIntent,
    vmids_by_index: Mapping[int, int],
    current_resources: Sequence[Mapping[str, Any]],
    current_rules: Sequence[Mapping[str, Any]],
) -> HaPlan:
    """The changes from PVE's current HA configuration to what the policy wants; only the operator's
    own resources (its comment) and rules (its prefix) are ever changed or removed."""
    want_resources, _ = wanted(intent, vmids_by_index)
    comment = marker(intent.namespace, intent.name, intent.uid)
    by_sid = {str(r.get("sid")): r for r in current_resources}
    ours = {sid for sid, r in by_sid.items() if str(r.get("comment") or "") == comment}
    create, update, foreign = [], [], []
    for resource in want_resources:
        have = by_sid.get(resource.sid)
        if have is None:
            create.append(resource)
        elif resource.sid not in ours:
            foreign.append(resource.sid)
        elif _resource_differs(have, resource):
            update.append(resource)
    wanted_sids = {r.sid for r in want_resources}
    delete_resources = tuple(sorted(sid for sid in ours if sid not in wanted_sids))
    # Rules may only name HA resources, and the operator's rules name only the operator's resources (a CT a
    # user registered may be in the user's own node-affinity rule, and PVE allows one per resource).
    usable = {r.sid for r in create + update} | (ours & wanted_sids)
    _, want_rules = wanted(intent, {i: v for i, v in vmids_by_index.items() if f"ct:{v}" in usable})
    prefix = rule_prefix(intent.uid) + "-"
    have_rules = {str(r.get("rule")): r for r in current_rules if str(r.get("rule") or "").startswith(prefix)}
    create_rules, update_rules = [], []
    kept: set[str] = set()
    for rule in want_rules:
        members = tuple(sid for sid in rule.resources if sid in usable)
        if len(members) < (1 if rule.type == "node-affinity" else MIN_GROUP):
            continue
        rule = WantedRule(rule.rule, rule.type, members, rule.nodes, rule.strict, rule.affinity, rule.comment)
        kept.add(rule.rule)
        have = have_rules.get(rule.rule)
        if have is None:
            create_rules.append(rule)
        elif _rule_differs(have, rule):
            update_rules.append(rule)
    delete_rules = tuple(sorted(name for name in have_rules if name not in kept))
    notes: tuple[str, ...] = ()
    if intent.spec is not None and intent.spec.enabled and intent.other_spread_keys:
        notes = (
            f"topologySpreadConstraints over {', '.join(intent.other_spread_keys)} have no Proxmox VE HA rule "
            "equivalent (HA rules know nodes, not labels): PVE's recovery does not keep them",
        )
    return HaPlan(
        create_resources=tuple(create),
        update_resources=tuple(update),
        delete_rules=delete_rules,
        update_rules=tuple(update_rules),
        create_rules=tuple(create_rules),
        delete_resources=delete_resources,
        foreign_resources=tuple(sorted(foreign)),
        notes=notes,
        registered=tuple(sorted(r.sid for r in want_resources if r.sid not in foreign)),
        rules=tuple(sorted(kept)),
    )


def _resource_differs(have: Mapping[str, Any], want: WantedResource) -> bool:
    """PVE leaves options at their default out of the resource's entry (state started, 1 and 1)."""
    return (
        str(have.get("state") or "started") != want.state
        or int(str(have.get("max_restart", 1))) != want.max_restart
        or int(str(have.get("max_relocate", 1))) != want.max_relocate
    )


def _rule_differs(have: Mapping[str, Any], want: WantedRule) -> bool:
    if tuple(sorted(str(have.get("resources") or "").split(","))) != tuple(sorted(want.resources)):
        return True
    if want.type == "node-affinity":
        nodes = tuple(sorted(n.split(":")[0] for n in str(have.get("nodes") or "").split(",") if n))
        return nodes != tuple(sorted(want.nodes)) or bool(int(have.get("strict") or 0)) != want.strict
    return str(have.get("affinity") or "") != str(want.affinity)
