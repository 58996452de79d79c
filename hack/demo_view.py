"""The live view of ``make demo``, as pure functions: Kubernetes objects (dicts) in, lines of text out.

Nothing here talks to a cluster, so tests can render frames from hand-made objects
(tests/unit/test_demo_view.py). ``hack/demo.py`` fetches the objects and puts the lines on the screen:

* :func:`render_frame` is one full-screen frame for a terminal: a header that always says how to reach the
  demo cluster from another shell, each node's usage bar with the pool's thresholds on it, every
  ContainerPolicy of the pool, and the operator's latest actions with their full reasons, repeated ones
  folded into one line with a count. Lines longer than the terminal are wrapped, never cut.
* :class:`LineLog` is the same information for a log (stdout not a terminal, e.g. CI): it returns only
  what is new since the last call, one line per event, so a 180 s run stays readable.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DASH = "\u2013"
"""En dash: shown for a figure the operator has not reported yet (instead of ``None``)."""

TIMES = "\u00d7"
"""Multiplication sign of a folded line's count: ``\u00d73``."""

ARROW = "\u2192"
"""Right arrow: ``srv-px1 \u2192 srv-px2``, ``82% \u2192 70%``."""

BAR_WIDTH = 40
"""Characters of a node's usage bar at most (0..100 %)."""

#: Default thresholds of ProxmoxServerPool.spec.thresholds (api/v1alpha1/serverpool.py ``Thresholds``),
#: used when the pool's spec does not carry them (the API server fills in the CRD's defaults, so this
#: matters only for objects made by hand).
DEFAULT_THRESHOLDS: Mapping[str, Any] = {
    "metric": "memory",
    "creationCeilingPercent": 80,
    "migrateAbovePercent": 75,
    "offloadAbovePercent": 90,
    "restoreBelowPercent": 60,
    "sustainedSamples": 3,
}

#: Marks on a usage bar: the position of each threshold (drawn over the bar, filled or not).
BAR_MARKS = (
    ("restoreBelowPercent", "R"),
    ("migrateAbovePercent", "M"),
    ("creationCeilingPercent", "C"),
    ("offloadAbovePercent", "O"),
)

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Access:
    """How to reach the demo's cluster from another shell."""

    kubeconfig: str
    """Path for ``export KUBECONFIG=...``."""

    kubectl: str
    """Full path of the kubectl binary that matches the cluster."""

    namespace: str
    """Namespace of the demo's objects."""

    def lines(self) -> list[str]:
        return [
            f"other shell:  export KUBECONFIG={self.kubeconfig}",
            f"              {self.kubectl} -n {self.namespace} get proxmox",
        ]


@dataclass(frozen=True)
class Snapshot:
    """What one frame shows: the pool (spec and status) and every ContainerPolicy of the namespace."""

    pool: Mapping[str, Any]
    policies: Sequence[Mapping[str, Any]] = ()
    elapsed: float = 0.0
    """Seconds since the operator started."""

    note: str | None = None
    """An extra line under the header (e.g. "ready: 9 of 9 CTs running after 31 s")."""

    @property
    def pool_name(self) -> str:
        return str(self.pool.get("metadata", {}).get("name", "?"))

    def pool_policies(self) -> list[Mapping[str, Any]]:
        """The policies whose spec.poolRef names this pool, by name."""
        mine = [p for p in self.policies if p.get("spec", {}).get("poolRef", {}).get("name") == self.pool_name]
        return sorted(mine, key=lambda p: str(p.get("metadata", {}).get("name", "")))


# ---------------------------------------------------------------------------------------------------------
# Formatting


def fmt_count(value: object) -> str:
    """A count from status, or an en dash while the operator has not reported it."""
    return DASH if value is None else str(value)


def fmt_percent(value: object) -> str:
    if value is None:
        return DASH
    try:
        return f"{float(value):.0f}%"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DASH


def thresholds_of(pool: Mapping[str, Any]) -> dict[str, Any]:
    """spec.thresholds of a pool, with the defaults for what it leaves out."""
    return {**DEFAULT_THRESHOLDS, **(pool.get("spec", {}).get("thresholds") or {})}


def thresholds_text(thresholds: Mapping[str, Any]) -> str:
    """``memory: ceiling 80% · migrate >75% · offload >90% · restore <60%``."""
    t = thresholds
    return (
        f"{t['metric']}: ceiling {t['creationCeilingPercent']}% · migrate >{t['migrateAbovePercent']}% · "
        f"offload >{t['offloadAbovePercent']}% · restore <{t['restoreBelowPercent']}%"
    )


def usage_bar(percent: float | None, thresholds: Mapping[str, Any], width: int = BAR_WIDTH) -> str:
    """``[#############R####M#C·····O···]``: usage filled with ``#``, each threshold marked by its letter
    (R restore, M migrate, C creation ceiling, O offload) at its position."""
    width = max(10, width)
    cells = ["#" if percent is not None and (i + 0.5) * 100 / width < percent else "·" for i in range(width)]
    for key, mark in BAR_MARKS:
        value = thresholds.get(key)
        if isinstance(value, int | float):
            cells[min(width - 1, max(0, round(value * width / 100)))] = mark
    return "[" + "".join(cells) + "]"


def metric_percent(node: Mapping[str, Any], metric: str) -> float | None:
    """The node's figure for the pool's metric (``max``: the highest of the three)."""
    figures = {m: node.get(f"{m}Percent") for m in ("cpu", "memory", "disk")}
    if metric == "max":
        known = [float(v) for v in figures.values() if v is not None]
        return max(known) if known else None
    value = figures.get(metric)
    return None if value is None else float(value)


def wrap(line: str, width: int | None, hang: int = 4) -> list[str]:
    """``line`` broken at spaces into lines of at most ``width``; nothing is cut.

    Continuation lines start at column ``hang`` (at most half the width). A word longer than the width (a
    long path) is broken inside. ``width=None``: the line as it is.
    """
    if width is None or len(line) <= width:
        return [line]
    lead = len(line) - len(line.lstrip(" "))
    return textwrap.wrap(
        line.lstrip(" "),
        width=width,
        initial_indent=" " * lead,
        subsequent_indent=" " * min(width // 2, hang),
        break_long_words=True,
        break_on_hyphens=False,
    ) or [line]


# ---------------------------------------------------------------------------------------------------------
# Actions: merge, fold, format


def merged_actions(snapshot: Snapshot) -> list[dict[str, Any]]:
    """recentActions of the pool and of its policies, oldest first, without duplicates."""
    seen: set[tuple[Any, ...]] = set()
    actions: list[dict[str, Any]] = []
    sources = [snapshot.pool, *snapshot.pool_policies()]
    for source in sources:
        for action in source.get("status", {}).get("recentActions") or []:
            key = tuple(sorted((k, str(v)) for k, v in action.items()))
            if key not in seen:
                seen.add(key)
                actions.append(dict(action))
    actions.sort(key=lambda a: str(a.get("time", "")))
    return actions


def fold_key(action: Mapping[str, Any]) -> tuple[Any, ...]:
    """Actions with the same key are shown once. Time never counts; for a refusal the figures in its reason
    do not count either (a cooldown refusal says how many seconds are left, and changes every sample)."""
    reason = str(action.get("reason", ""))
    message = str(action.get("message") or "")
    if action.get("result") == "Refused":
        reason, message = _NUMBER.sub("#", reason), _NUMBER.sub("#", message)
    return (
        action.get("action"),
        action.get("vmid"),
        action.get("policy"),
        action.get("sourceNode"),
        action.get("targetNode"),
        action.get("result"),
        reason,
        message,
    )


@dataclass
class Folded:
    """One line of the action list: the latest of ``count`` actions with the same :func:`fold_key`, or a
    batch of actions taken together on several CTs (``batch``: one per CT, ``action`` the first)."""

    action: dict[str, Any]
    count: int = 1
    first_time: str = ""
    batch: list[dict[str, Any]] = field(default_factory=list)


def batch_key(action: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Actions with the same key, at the same second, went out together (a scale-up creating 9 CTs): one
    line says them all. Refusals and failures stay one line each."""
    if action.get("result") not in ("Succeeded", "InProgress") or action.get("vmid") is None:
        return None
    return (action.get("action"), action.get("result"), action.get("policy"), action.get("reason"), action.get("time"))


def fold_actions(actions: Iterable[Mapping[str, Any]]) -> list[Folded]:
    """Actions (oldest first) folded by :func:`fold_key`, each group where its latest action is; then
    neighbours with the same :func:`batch_key` merged into one batch line."""
    groups: dict[tuple[Any, ...], Folded] = {}
    for action in actions:
        key = fold_key(action)
        if key in groups:
            group = groups.pop(key)  # re-inserted below: the group moves to its latest occurrence
            group.action, group.count = dict(action), group.count + 1
        else:
            group = Folded(dict(action), 1, str(action.get("time", "")))
        groups[key] = group
    lines: list[Folded] = []
    for group in groups.values():
        together = batch_key(group.action) if group.count == 1 else None
        last = lines[-1] if lines else None
        if together is not None and last is not None and last.count == 1 and batch_key(last.action) == together:
            if not last.batch:
                last.batch.append(last.action)
            last.batch.append(group.action)
        else:
            lines.append(group)
    return lines


def _clock(timestamp: str) -> str:
    """``2026-11-20T09:00:10Z`` -> ``09:00:10``."""
    return timestamp[11:19] if len(timestamp) >= 19 else timestamp


def _figures(action: Mapping[str, Any]) -> str:
    """``[srv-px1 82%\u219270%, srv-px2 40%\u219252%]``: the metric on source and target, before and after."""
    parts = []
    for side, node_key in (("source", "sourceNode"), ("target", "targetNode")):
        before, after = action.get(f"{side}PercentBefore"), action.get(f"{side}PercentAfter")
        if before is None and after is None:
            continue
        node = action.get(node_key) or side
        parts.append(f"{node} {fmt_percent(before)}{ARROW}{fmt_percent(after)}")
    return f"[{', '.join(parts)}]" if parts else ""


def _where(actions: Sequence[Mapping[str, Any]]) -> str:
    """``srv-px1 → srv-px2``, ``on srv-px1``; for a batch ``on srv-px1 x6, srv-px2 x3`` (with the sign TIMES)."""
    if len(actions) > 1:
        nodes: dict[str, int] = {}
        for a in actions:
            node = str(a.get("targetNode") or a.get("sourceNode") or DASH)
            nodes[node] = nodes.get(node, 0) + 1
        return "on " + ", ".join(f"{node} {TIMES}{n}" for node, n in nodes.items())
    source, target = actions[0].get("sourceNode"), actions[0].get("targetNode")
    if source and target and source != target:
        return f"{source} {ARROW} {target}"
    return f"on {target}" if target else f"on {source}" if source else ""


def format_action(folded: Folded) -> str:
    """One action on one line, with everything it carries: time, kind, CT, nodes, result, reason, the
    figures before and after, and the outcome's message for failures and refusals."""
    a = folded.action
    if folded.batch:
        ct = f"{len(folded.batch)} CTs {', '.join(str(b.get('vmid')) for b in folded.batch)}"
    else:
        ct = f"CT {a['vmid']}" if a.get("vmid") is not None else f"CT {DASH}"
        if a.get("hostname"):
            ct += f" {a['hostname']}"
    if a.get("policy"):
        ct += f" ({a['policy']})"
    where = _where(folded.batch or [a])
    parts = [f"  {_clock(str(a.get('time', '')))}", f"{a.get('action', '?'):<8}", ct]
    if where:
        parts.append(where)
    parts.append(f"{a.get('result', '')}:")
    parts.append(str(a.get("reason", "")))
    figures = "" if folded.batch or ARROW in str(a.get("reason", "")) else _figures(a)
    if figures:
        parts.append(figures)
    message = a.get("message")
    if message and a.get("result") in ("Failed", "Refused") and message not in str(a.get("reason", "")):
        parts.append(f"({message})")
    if folded.count > 1:
        parts.append(f"{TIMES}{folded.count} since {_clock(folded.first_time)}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Nodes and policies


def _node_counts(snapshot: Snapshot) -> dict[str, tuple[int, int, int]]:
    """node -> (running, placed, offloaded) over all the pool's policies."""
    counts: dict[str, list[int]] = {}
    for policy in snapshot.pool_policies():
        for d in policy.get("status", {}).get("distribution") or []:
            c = counts.setdefault(str(d.get("node")), [0, 0, 0])
            c[0] += int(d.get("running") or 0)
            c[1] += int(d.get("replicas") or 0)
    for entry in snapshot.pool.get("status", {}).get("offloaded") or []:
        counts.setdefault(str(entry.get("node")), [0, 0, 0])[2] += 1
    return {node: (c[0], c[1], c[2]) for node, c in counts.items()}


def node_lines(snapshot: Snapshot, width: int | None) -> list[str]:
    """A header and one line per node: figures, CTs, a usage bar of the pool's metric with the thresholds
    marked on it, and the thresholds in figures beside it (on the next line when the terminal is narrow)."""
    pool = snapshot.pool
    thresholds = thresholds_of(pool)
    metric = str(thresholds["metric"])
    label = thresholds_text(thresholds)
    nodes = pool.get("status", {}).get("nodes") or []
    if not nodes:
        names = ", ".join(str(n.get("name")) for n in pool.get("spec", {}).get("nodes") or []) or DASH
        return [f"  {DASH} no sample yet (nodes {names}); thresholds {label}"]
    counts = _node_counts(snapshot)
    name_width = max(8, *(len(str(n.get("name", ""))) for n in nodes))
    head = f"  {'NODE':<{name_width}} {'CPU':>5} {'MEM':>5} {'DISK':>5}  {'CTs run/placed':<15} "
    # One line: head, bar, " 100%  ", label. Two lines when that does not fit with a bar of 20.
    room = None if width is None else width - len(head) - 2 - 7 - len(label)
    one_line = room is None or room >= 20
    if width is None:
        bar_width = BAR_WIDTH
    elif one_line:
        bar_width = min(BAR_WIDTH, room or BAR_WIDTH)
    else:
        bar_width = max(10, min(BAR_WIDTH, width - len(head) - 2 - 5))
    lines = wrap(
        f"{head}{metric.upper()} USAGE (R restore, M migrate, C creation ceiling, O offload)", width, len(head)
    )
    label_hang = len(head) if width is None or width - len(head) >= 40 else 4
    for node in nodes:
        name = str(node.get("name", "?"))
        running, placed, offloaded = counts.get(name, (0, 0, 0))
        cts = f"{running}/{placed}" + (f" +{offloaded} off" if offloaded else "")
        value = metric_percent(node, metric)
        line = (
            f"  {name:<{name_width}} {fmt_percent(node.get('cpuPercent')):>5} "
            f"{fmt_percent(node.get('memoryPercent')):>5} {fmt_percent(node.get('diskPercent')):>5}  {cts:<15} "
            f"{usage_bar(value, thresholds, bar_width)} {fmt_percent(value):>4}"
        )
        state = "" if node.get("online", True) else "  OFFLINE"
        if one_line:
            lines.extend(wrap(f"{line}  {label}{state}", width, hang=len(head)))
        else:
            lines.extend(wrap(line + state, width, hang=len(head)))
            lines.extend(wrap(" " * label_hang + label, width, hang=label_hang))
    return lines


def _ready(policy: Mapping[str, Any]) -> str:
    for condition in policy.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            reason = condition.get("reason")
            return f"Ready {condition.get('status')}" + (f" ({reason})" if reason else "")
    return f"Ready {DASH}"


def policy_lines(snapshot: Snapshot, width: int | None) -> list[str]:
    policies = snapshot.pool_policies()
    if not policies:
        return [f"  {DASH} no ContainerPolicy names pool {snapshot.pool_name} yet"]
    name_width = max(8, *(len(str(p.get("metadata", {}).get("name", ""))) for p in policies))
    lines = []
    for policy in policies:
        spec, status = policy.get("spec", {}), policy.get("status", {})
        fill = spec.get("fill")
        wanted = (
            f"fill until {fill.get('untilPercent')}% (max {fill.get('maxReplicas')})"
            if fill
            else f"replicas {fmt_count(spec.get('replicas'))}"
        )
        line = (
            f"  {policy.get('metadata', {}).get('name', '?'):<{name_width}} {wanted}, "
            f"desired: {fmt_count(status.get('desiredReplicas'))}, "
            f"running: {fmt_count(status.get('readyReplicas'))}, "
            f"offloaded: {fmt_count(status.get('offloadedReplicas'))}, "
            f"migrating: {fmt_count(status.get('migratingReplicas'))}, "
            f"priority {spec.get('priority', 100)}   {_ready(policy)}"
        )
        if spec.get("paused"):
            line += "  PAUSED"
        if status.get("fillStoppedReason"):
            line += f"  fill stopped: {status['fillStoppedReason']}"
        lines.extend(wrap(line, width, hang=name_width + 3))
    return lines


def all_ready(snapshot: Snapshot) -> tuple[int, int] | None:
    """(running, desired) over the pool's policies once every policy runs all it wants, else None."""
    policies = snapshot.pool_policies()
    if not policies:
        return None
    running = desired = 0
    for policy in policies:
        status = policy.get("status", {})
        want, have = status.get("desiredReplicas"), status.get("readyReplicas")
        if want is None or have is None or have < want:
            return None
        running, desired = running + have, desired + want
    return (running, desired) if desired else None


def succeeded_kinds(snapshot: Snapshot) -> set[str]:
    """Kinds of action (Create, Migrate, ...) that succeeded at least once in the recent actions."""
    return {str(a.get("action")) for a in merged_actions(snapshot) if a.get("result") == "Succeeded"}


# ---------------------------------------------------------------------------------------------------------
# A full frame (terminal)


def header_lines(access: Access, snapshot: Snapshot) -> list[str]:
    return [
        f"pve-operator demo   {snapshot.elapsed:.0f} s   pool {snapshot.pool_name} in namespace {access.namespace}"
        "   Ctrl-C stops everything and removes its files",
        *access.lines(),
    ]


def render_frame(access: Access, snapshot: Snapshot, width: int | None = 120, height: int | None = None) -> list[str]:
    """One screen: header, nodes, policies, actions (as many of the latest as ``height`` leaves room for).

    ``width``: the terminal's columns; longer lines are wrapped, never cut. ``None``: no wrapping.
    """
    lines: list[str] = []
    for line in header_lines(access, snapshot):
        lines.extend(wrap(line, width, hang=14))
    if snapshot.note:
        lines.extend(wrap(snapshot.note, width))
    lines.append("")
    lines.extend(node_lines(snapshot, width))
    lines.append("")
    lines.append(f"POLICIES of pool {snapshot.pool_name}")
    lines.extend(policy_lines(snapshot, width))
    lines.append("")
    folded = fold_actions(merged_actions(snapshot))
    title = f"ACTIONS (newest last; repeats folded {TIMES}N)"
    action_blocks = [wrap(format_action(f), width, hang=11) for f in folded]
    if height is not None:
        room = max(4, height - len(lines) - 2)
        shown: list[list[str]] = []
        used = 0
        for block in reversed(action_blocks):
            if used + len(block) > room:
                break
            shown.insert(0, block)
            used += len(block)
        if len(shown) < len(action_blocks):
            title += f", {len(action_blocks) - len(shown)} older not shown"
        action_blocks = shown
    lines.extend(wrap(title, width))
    if not action_blocks:
        lines.append(f"  {DASH} none yet")
    for block in action_blocks:
        lines.extend(block)
    return lines


# ---------------------------------------------------------------------------------------------------------
# A log (not a terminal)


@dataclass
class LineLog:
    """What changed since the last call, as log lines: a state line when the counts change (or every
    ``state_every`` seconds when only the usage moved), each new action once, and repeated refusals only
    counted (:meth:`summary` lists them at the end)."""

    state_every: float = 15.0
    _printed_actions: set[tuple[Any, ...]] = field(default_factory=set)
    _refusals: dict[tuple[Any, ...], Folded] = field(default_factory=dict)
    _last_counts: tuple[Any, ...] | None = None
    _last_thresholds: str | None = None
    _last_state: str | None = None
    _last_state_time: float = float("-inf")

    def state_line(self, snapshot: Snapshot) -> tuple[str, tuple[Any, ...]]:
        """(the line, the counts in it: when they change the line is printed at once)."""
        thresholds = thresholds_of(snapshot.pool)
        metric = str(thresholds["metric"])
        node_counts = _node_counts(snapshot)
        parts: list[str] = []
        counts: list[tuple[Any, ...]] = []
        for node in snapshot.pool.get("status", {}).get("nodes") or []:
            name = str(node.get("name"))
            running, placed, offloaded = node_counts.get(name, (0, 0, 0))
            parts.append(
                f"{name} {metric} {fmt_percent(metric_percent(node, metric))} CTs {running}/{placed}"
                + (f" +{offloaded} off" if offloaded else "")
            )
            counts.append((name, running, placed, offloaded, node.get("online", True)))
        for policy in snapshot.pool_policies():
            status = policy.get("status", {})
            figures = (status.get("desiredReplicas"), status.get("readyReplicas"), status.get("offloadedReplicas"))
            parts.append(
                f"{policy.get('metadata', {}).get('name')} desired {fmt_count(figures[0])} "
                f"running {fmt_count(figures[1])} offloaded {fmt_count(figures[2])}"
            )
            counts.append((policy.get("metadata", {}).get("name"), *figures))
        return f"[{snapshot.elapsed:5.0f} s] " + (" | ".join(parts) or f"{DASH} no sample yet"), tuple(counts)

    def update(self, snapshot: Snapshot) -> list[str]:
        """The lines to print for this snapshot (none when nothing changed)."""
        out: list[str] = []
        thresholds = f"pool {snapshot.pool_name} thresholds: {thresholds_text(thresholds_of(snapshot.pool))}"
        if thresholds != self._last_thresholds:
            out.append(thresholds)
            self._last_thresholds = thresholds
        line, counts = self.state_line(snapshot)
        state = line.split("] ", 1)[-1]
        if counts != self._last_counts or (
            state != self._last_state and snapshot.elapsed - self._last_state_time >= self.state_every
        ):
            out.append(line)
            self._last_counts, self._last_state, self._last_state_time = counts, state, snapshot.elapsed
        new: list[dict[str, Any]] = []
        for action in merged_actions(snapshot):
            exact = tuple(sorted((k, str(v)) for k, v in action.items()))
            if exact in self._printed_actions:
                continue
            self._printed_actions.add(exact)
            if action.get("result") == "Refused":
                key = fold_key(action)
                if key in self._refusals:
                    group = self._refusals[key]
                    group.action, group.count = dict(action), group.count + 1
                    continue
                self._refusals[key] = Folded(dict(action), 1, str(action.get("time", "")))
            new.append(action)
        # Each new action once; those taken together (a scale-up) on one line.
        out.extend(format_action(line) for line in fold_actions(new))
        return out

    def summary(self) -> list[str]:
        """The refusals that came back, once each with their count."""
        repeated = [f for f in self._refusals.values() if f.count > 1]
        if not repeated:
            return []
        return ["repeated refusals (shown once above):", *(format_action(f) for f in repeated)]
