"""Topology of a pool and a policy's placement rules over it: spread and node affinity.

A pool's nodes carry labels (``ProxmoxServerPool.spec.nodes[].labels``, e.g. ``topology.pve/rack: r1``)
plus one every node has implicitly, :data:`HOSTNAME_LABEL` = its name. A ContainerPolicy's
``spec.placement`` may ask, with Kubernetes' own semantics (pod topology spread constraints and node
affinity, so users know them already):

* ``topologySpreadConstraints``: over the *domains* of a ``topologyKey`` (the distinct values of that
  label), the policy's CTs per domain may differ by at most ``maxSkew``. ``DoNotSchedule`` is hard
  (a CT is never created or moved where it would break it), ``ScheduleAnyway`` is a preference.
  A new CT may go to domain *d* when ``count(d) + 1 - min(count) <= maxSkew`` (kube-scheduler's
  ``PodTopologySpread`` filter); a move may not leave the skew above ``maxSkew`` unless it was
  above it before and the move does not make it larger (never worse than allowed).
* ``nodeAffinity``: ``required`` terms (a node must match one of them: each term is a list of
  ``matchExpressions`` that must all hold) and ``preferred`` terms with weights 1-100.
  Like Kubernetes' ``requiredDuringSchedulingIgnoredDuringExecution`` they decide where CTs are created
  and moved to; a CT already on a node that stops matching is not moved for it.

Which nodes are domains: Kubernetes counts the nodes that pass the pod's node affinity. Here that is
the pool's nodes this policy may *receive* CTs on now: online, weight above 0 for the policy (a node in
maintenance weighs 0) and matching the required terms. CTs on other nodes (offline, draining) are not
counted, so a node that fails does not freeze the policy, and a node that comes back with its CTs is
counted again (its domain may then be over-skewed, which balancing repairs when room allows).

Everything here is pure: counts are per node (the policy's CTs), given by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from pve_operator.api.v1alpha1 import NodeSelectorTerm, PlacementSpec, ProxmoxServerPoolSpec

#: The label every pool node has implicitly: its own name (as Kubernetes nodes have their host name).
#: ``topologyKey: kubernetes.io/hostname`` spreads a policy over single nodes.
HOSTNAME_LABEL = "kubernetes.io/hostname"


class SelectorOperator(StrEnum):
    """``matchExpressions[].operator``, Kubernetes' node selector operators."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` item."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes' semantics: ``NotIn`` and ``DoesNotExist`` hold for a node without the label;
        ``Gt``/``Lt`` compare integers and fail when either side is not one."""
        value = labels.get(self.key)
        if self.operator is SelectorOperator.EXISTS:
            return value is not None
        if self.operator is SelectorOperator.DOES_NOT_EXIST:
            return value is None
        if self.operator is SelectorOperator.NOT_IN:
            return value is None or value not in self.values
        if value is None:
            return False
        if self.operator is SelectorOperator.IN:
            return value in self.values
        try:
            have, bound = int(value), int(self.values[0])
        except (ValueError, IndexError):
            return False
        return have > bound if self.operator is SelectorOperator.GT else have < bound


@dataclass(frozen=True)
class Term:
    """One node selector term: every requirement must hold. An empty term matches no node (Kubernetes)."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.requirements) and all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True)
class PreferredTerm:
    weight: int
    term: Term


@dataclass(frozen=True)
class Spread:
    """One topology spread constraint."""

    topology_key: str
    max_skew: int
    #: ``whenUnsatisfiable: DoNotSchedule``; False: ``ScheduleAnyway`` (a preference only).
    hard: bool = True

    @property
    def name(self) -> str:
        return f"{self.topology_key} maxSkew {self.max_skew}"


Counts = Mapping[str, int]
"""CTs of one policy per node name."""


@dataclass(frozen=True)
class SpreadViolation:
    """A hard constraint whose skew is above ``maxSkew``: the most and least crowded domains."""

    spread: Spread
    skew: int
    crowded: str
    sparse: str


@dataclass(frozen=True)
class TopologyRules:
    """One policy's placement rules over its pool's nodes (see the module docstring)."""

    #: Node -> its labels, the implicit :data:`HOSTNAME_LABEL` included.
    labels: Mapping[str, Mapping[str, str]]
    #: Nodes whose CTs count and whose label values are domains (may receive the policy's CTs now).
    domain_nodes: frozenset[str]
    spread: tuple[Spread, ...] = ()
    #: A node must match one of these; empty: no requirement.
    required: tuple[Term, ...] = ()
    preferred: tuple[PreferredTerm, ...] = ()
    #: topologyKey -> ((node, value), ...) of the domain nodes with that label, computed once.
    _domains: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def constrained(self) -> bool:
        """Whether any rule is set (without one, placement and balancing behave as before they existed)."""
        return bool(self.spread or self.required or self.preferred)

    def _labels(self, node: str) -> Mapping[str, str]:
        return self.labels.get(node) or {HOSTNAME_LABEL: node}

    # -- node affinity ---------------------------------------------------------------------------

    def affinity_refusal(self, node: str) -> str | None:
        """Why ``node`` may never receive this policy's CTs (required terms, missing topology labels)."""
        labels = self._labels(node)
        if self.required and not any(term.matches(labels) for term in self.required):
            return "does not match placement.nodeAffinity.required"
        for spread in self.spread:
            if spread.hard and spread.topology_key not in labels:
                return f"has no label {spread.topology_key} (topologySpreadConstraints, DoNotSchedule)"
        return None

    def preference(self, node: str) -> int:
        """Sum of the weights of the preferred terms ``node`` matches (higher is better)."""
        labels = self._labels(node)
        return sum(p.weight for p in self.preferred if p.term.matches(labels))

    # -- spread ----------------------------------------------------------------------------------

    def _domain_nodes_of(self, key: str) -> tuple[tuple[str, str], ...]:
        found = self._domains.get(key)
        if found is None:
            labelled = ((node, self._labels(node).get(key)) for node in sorted(self.domain_nodes))
            found = tuple((node, value) for node, value in labelled if value is not None)
            self._domains[key] = found
        return found

    def domain_counts(self, spread: Spread, counts: Counts) -> dict[str, int]:
        """The policy's CTs per domain of ``spread.topology_key`` (every domain, empty ones as 0)."""
        domains: dict[str, int] = {}
        for node, value in self._domain_nodes_of(spread.topology_key):
            domains[value] = domains.get(value, 0) + counts.get(node, 0)
        return domains

    def skew(self, spread: Spread, counts: Counts) -> int:
        domains = self.domain_counts(spread, counts)
        return max(domains.values()) - min(domains.values()) if domains else 0

    def domain_of(self, spread: Spread, node: str) -> str | None:
        return self._labels(node).get(spread.topology_key)

    def add_refusal(self, counts: Counts, node: str) -> str | None:
        """Why one more CT may not go to ``node``: affinity, or a hard spread's
        ``count(domain) + 1 - min > maxSkew`` (kube-scheduler's filter)."""
        why = self.affinity_refusal(node)
        if why is not None:
            return why
        for spread in self.spread:
            if not spread.hard:
                continue
            excess = self._add_excess(spread, counts, node)
            if excess is not None:
                return excess
        return None

    def _add_excess(self, spread: Spread, counts: Counts, node: str) -> str | None:
        domains = self.domain_counts(spread, counts)
        value = self.domain_of(spread, node)
        if not domains or value is None:
            return None
        low = min(domains.values())
        after = domains.get(value, 0) + 1
        if after - low <= spread.max_skew:
            return None
        sparse = min(sorted(domains), key=lambda v: domains[v])
        return (
            f"topologySpreadConstraints {spread.topology_key}: {after} of the policy's CTs in {value} against "
            f"{low} in {sparse} > maxSkew {spread.max_skew}"
        )

    def soft_penalty(self, counts: Counts, node: str) -> int:
        """How far one more CT on ``node`` goes beyond the ScheduleAnyway constraints' maxSkew."""
        total = 0
        for spread in self.spread:
            if spread.hard:
                continue
            domains = self.domain_counts(spread, counts)
            value = self.domain_of(spread, node)
            if domains and value is not None:
                total += max(0, domains.get(value, 0) + 1 - min(domains.values()) - spread.max_skew)
        return total

    def move_refusal(self, counts: Counts, source: str, target: str) -> str | None:
        """Why one CT may not move from ``source`` to ``target``: affinity, or a hard spread left above
        maxSkew and worse than before."""
        why = self.affinity_refusal(target)
        if why is not None:
            return why
        for spread in self.spread:
            if not spread.hard:
                continue
            domains = self.domain_counts(spread, counts)
            if not domains:
                continue
            before_skew = max(domains.values()) - min(domains.values())
            for node, change in ((source, -1), (target, 1)):
                value = self.domain_of(spread, node)
                if node in self.domain_nodes and value is not None:
                    domains[value] += change
            after_skew = max(domains.values()) - min(domains.values())
            if after_skew > max(spread.max_skew, before_skew):
                return (
                    f"topologySpreadConstraints {spread.topology_key}: the skew would be {after_skew} "
                    f"(now {before_skew}) > maxSkew {spread.max_skew}"
                )
        return None

    def move_penalty(self, counts: Counts, source: str, target: str) -> int:
        """ScheduleAnyway excess after moving one CT from ``source`` to ``target`` (lower is better)."""
        after = _moved(counts, source, target)
        return sum(max(0, self.skew(s, after) - s.max_skew) for s in self.spread if not s.hard)

    def violations(self, counts: Counts) -> list[SpreadViolation]:
        """Hard constraints whose skew is above maxSkew now."""
        found = []
        for spread in self.spread:
            if not spread.hard:
                continue
            domains = self.domain_counts(spread, counts)
            if not domains:
                continue
            ordered = sorted(domains, key=lambda v: (domains[v], v))
            skew = domains[ordered[-1]] - domains[ordered[0]]
            if skew > spread.max_skew:
                found.append(SpreadViolation(spread, skew, crowded=ordered[-1], sparse=ordered[0]))
        return found

    def crowding(self, counts: Counts, node: str) -> tuple[int, ...]:
        """How crowded the domains of ``node`` are, hard constraints first: scale-down removes CTs
        from the most crowded first. A node outside the domains (draining, weight 0) ranks first."""
        ranks = []
        for spread in sorted(self.spread, key=lambda s: not s.hard):
            value = self.domain_of(spread, node)
            if node not in self.domain_nodes or value is None:
                ranks.append(1 << 30)
            else:
                ranks.append(self.domain_counts(spread, counts).get(value, 0))
        return tuple(ranks)


def _moved(counts: Counts, source: str, target: str) -> dict[str, int]:
    after = dict(counts)
    after[source] = after.get(source, 0) - 1
    after[target] = after.get(target, 0) + 1
    return after


def count_by_node(nodes: Iterable[str]) -> dict[str, int]:
    """Per-node counts from one node name per CT."""
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node] = counts.get(node, 0) + 1
    return counts


# -- from the API types, in one place ---------------------------------------------------------------


def _term(term: NodeSelectorTerm) -> Term:
    return Term(
        tuple(Requirement(e.key, SelectorOperator(e.operator.value), tuple(e.values)) for e in term.match_expressions)
    )


def pool_labels(pool: ProxmoxServerPoolSpec) -> dict[str, Mapping[str, str]]:
    """Each pool node's labels with the implicit :data:`HOSTNAME_LABEL`."""
    return {node.name: MappingProxyType({**node.labels, HOSTNAME_LABEL: node.name}) for node in pool.nodes}


@dataclass(frozen=True)
class TopologyInputs:
    """What :func:`rules_for` needs besides the specs: the policy's effective weights and the nodes
    online now."""

    node_weights: Mapping[str, int]
    online_nodes: frozenset[str] = field(default_factory=frozenset)


def rules_for(
    placement: PlacementSpec, node_labels: Mapping[str, Mapping[str, str]], inputs: TopologyInputs
) -> TopologyRules:
    """A policy's :class:`TopologyRules` from its ``spec.placement`` and its pool's node labels
    (:func:`pool_labels`)."""
    labels = {name: node_labels.get(name) or {HOSTNAME_LABEL: name} for name in inputs.node_weights}
    affinity = placement.node_affinity
    required = tuple(_term(t) for t in affinity.required.node_selector_terms) if affinity and affinity.required else ()
    preferred = tuple(PreferredTerm(p.weight, _term(p.preference)) for p in affinity.preferred) if affinity else ()
    domain_nodes = frozenset(
        name
        for name, weight in inputs.node_weights.items()
        if weight > 0
        and name in inputs.online_nodes
        and (not required or any(t.matches(labels[name]) for t in required))
    )
    spread = tuple(
        Spread(c.topology_key, c.max_skew, hard=c.when_unsatisfiable.value == "DoNotSchedule")
        for c in placement.topology_spread_constraints
    )
    return TopologyRules(
        labels=MappingProxyType(labels),
        domain_nodes=domain_nodes,
        spread=spread,
        required=required,
        preferred=preferred,
    )
