"""hack/demo_view.py: the frames of `make demo`'s live view and its log lines, rendered from hand-made
objects shaped like the operator's status (no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from demo_view import (
    DASH,
    TIMES,
    Access,
    LineLog,
    Snapshot,
    all_ready,
    fold_actions,
    format_action,
    render_frame,
    succeeded_kinds,
    usage_bar,
    wrap,
)

ACCESS = Access(
    kubeconfig="/tmp/pve-demo-x1y2/controlplane/kubeconfig",
    kubectl="/root/.cache/pve-operator/controlplane/k8s-v1.34.10/bin/kubectl",
    namespace="pve-demo",
)
THRESHOLDS = {
    "metric": "memory",
    "creationCeilingPercent": 85,
    "migrateAbovePercent": 77,
    "offloadAbovePercent": 93,
    "restoreBelowPercent": 55,
    "sustainedSamples": 3,
}
LONG_REASON = (
    "srv-px1 memory 82% > migrateAbovePercent 77 for 3 samples; CT 3101 relieves it most, srv-px2 stays under it after"
)

MIGRATION = {
    "time": "2026-11-20T09:01:00Z",
    "action": "Migrate",
    "vmid": 3101,
    "hostname": "ct-web-01",
    "policy": "web",
    "sourceNode": "srv-px1",
    "targetNode": "srv-px2",
    "result": "Succeeded",
    "reason": LONG_REASON,
    "sourcePercentBefore": 82.0,
    "sourcePercentAfter": 70.0,
    "targetPercentBefore": 40.0,
    "targetPercentAfter": 52.0,
}


def cooldown(second: int) -> dict[str, Any]:
    return {
        "time": f"2026-11-20T09:02:{second:02d}Z",
        "action": "Migrate",
        "vmid": 3102,
        "policy": "web",
        "sourceNode": "srv-px1",
        "result": "Refused",
        "reason": f"CT 3102 was moved {second} s ago: cooldownSeconds 30",
        "message": "Cooldown",
    }


def pool(*actions: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "lab"},
        "spec": {"nodes": [{"name": "srv-px1"}, {"name": "srv-px2"}], "thresholds": THRESHOLDS},
        "status": {
            "nodes": [
                {"name": "srv-px1", "online": True, "cpuPercent": 12.0, "memoryPercent": 82.4, "diskPercent": 30.0},
                {"name": "srv-px2", "online": True, "cpuPercent": 8.0, "memoryPercent": 40.1, "diskPercent": 22.0},
            ],
            "recentActions": list(actions),
        },
    }


def policy(name: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"poolRef": {"name": "lab"}, "replicas": 3, "priority": 100},
        "status": status,
    }


WEB = policy(
    "web",
    desiredReplicas=6,
    readyReplicas=6,
    offloadedReplicas=0,
    migratingReplicas=0,
    distribution=[{"node": "srv-px1", "replicas": 4, "running": 4}, {"node": "srv-px2", "replicas": 2, "running": 2}],
)


def frame(snapshot: Snapshot, width: int | None = 200, height: int | None = None) -> str:
    return "\n".join(render_frame(ACCESS, snapshot, width=width, height=height))


def test_reasons_are_whole_at_full_width() -> None:
    text = frame(Snapshot(pool(MIGRATION), [WEB]), width=200)
    line = next(line for line in text.splitlines() if "Migrate" in line)
    assert len(LONG_REASON) > 110, "longer than the old view's cut"
    assert LONG_REASON in line, "the reason is cut or wrapped at 200 columns"
    assert "srv-px1 → srv-px2" in line, "the target node is shown"
    joined = " ".join(text.split())
    assert "[srv-px1 82%→70%, srv-px2 40%→52%]" in joined, "the figures after the move are shown"
    assert all(len(line) <= 200 for line in text.splitlines())


def test_narrow_terminal_wraps_instead_of_cutting() -> None:
    text = frame(Snapshot(pool(MIGRATION), [WEB]), width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    joined = " ".join(text.split())
    assert " ".join(LONG_REASON.split()) in joined
    assert "srv-px2 40%→52%" in joined


def test_thresholds_appear_beside_each_node() -> None:
    lines = render_frame(ACCESS, Snapshot(pool(), [WEB]), width=200)
    for node in ("srv-px1", "srv-px2"):
        line = next(line for line in lines if line.lstrip().startswith(node))
        for figure in ("ceiling 85%", "migrate >77%", "offload >93%", "restore <55%"):
            assert figure in line, (figure, line)
        assert usage_bar(82.4 if node == "srv-px1" else 40.1, THRESHOLDS) in line


def test_usage_bar_marks_the_thresholds_where_they_are() -> None:
    bar = usage_bar(50.0, THRESHOLDS, width=100)[1:-1]
    assert (bar.index("R"), bar.index("M"), bar.index("C"), bar.index("O")) == (55, 77, 85, 93)
    assert bar[:50] == "#" * 50 and bar[50] != "#"


def test_default_thresholds_when_the_spec_has_none() -> None:
    bare = pool()
    del bare["spec"]["thresholds"]
    assert "memory: ceiling 80% · migrate >75% · offload >90% · restore <60%" in frame(Snapshot(bare, [WEB]))


def test_every_policy_of_the_pool_appears() -> None:
    batch = policy("batch", desiredReplicas=4, readyReplicas=1)
    batch["spec"] = {"poolRef": {"name": "lab"}, "fill": {"untilPercent": 70, "maxReplicas": 40}, "priority": 50}
    elsewhere = policy("other")
    elsewhere["spec"]["poolRef"]["name"] = "another-pool"
    lines = render_frame(ACCESS, Snapshot(pool(), [WEB, batch, elsewhere]), width=200)
    web = next(line for line in lines if line.startswith("  web "))
    batch_line = next(line for line in lines if line.startswith("  batch "))
    assert "desired: 6" in web and "running: 6" in web
    assert "fill until 70% (max 40)" in batch_line and "desired: 4" in batch_line and "running: 1" in batch_line
    assert not any(line.startswith("  other ") for line in lines), "a policy of another pool is not shown"


def test_repeated_refusals_fold_into_one_line_with_a_count() -> None:
    actions = [MIGRATION, *(cooldown(s) for s in range(0, 50, 5))]
    lines = render_frame(ACCESS, Snapshot(pool(*actions), [WEB]), width=200)
    refusals = [line for line in lines if "Refused" in line]
    assert len(refusals) == 1, refusals
    assert f"{TIMES}10 since 09:02:00" in refusals[0]
    assert "was moved 45 s ago" in refusals[0], "the latest of the folded refusals is shown"
    assert any(LONG_REASON in line for line in lines), "the action is not crowded out"


def test_folding_keeps_different_actions_apart() -> None:
    other_ct = {**cooldown(3), "vmid": 3103, "reason": "CT 3103 was moved 3 s ago: cooldownSeconds 30"}
    created = [
        {"time": f"2026-11-20T09:00:0{i}Z", "action": "Create", "vmid": 3100 + i, "result": "Succeeded", "reason": "r"}
        for i in range(3)
    ]
    folded = fold_actions([*created, cooldown(0), other_ct, cooldown(5)])
    assert [(f.action["action"], f.action["vmid"], f.count) for f in folded] == [
        ("Create", 3100, 1),
        ("Create", 3101, 1),
        ("Create", 3102, 1),
        ("Migrate", 3103, 1),
        ("Migrate", 3102, 2),
    ]


def test_no_none_while_status_lacks_desired_replicas() -> None:
    fresh = policy("web")  # just applied: the operator has written no status yet
    text = frame(Snapshot(pool(), [fresh]))
    assert "None" not in text
    assert f"desired: {DASH}" in text
    empty = frame(Snapshot({"metadata": {"name": "lab"}, "spec": {"nodes": [{"name": "srv-px1"}]}}, [fresh]))
    assert "None" not in empty


def test_header_says_how_to_reach_the_cluster_on_every_frame() -> None:
    for snapshot in (Snapshot({"metadata": {"name": "lab"}}), Snapshot(pool(MIGRATION), [WEB], 99.0)):
        for width in (200, 80):
            lines = render_frame(ACCESS, snapshot, width=width)[:6]
            joined = "".join(line.strip() for line in lines)
            assert f"export KUBECONFIG={ACCESS.kubeconfig}" in joined
            assert ACCESS.kubectl in joined


def test_height_keeps_the_newest_actions() -> None:
    actions = [
        {**MIGRATION, "time": f"2026-11-20T09:{m:02d}:00Z", "vmid": 3100 + m, "reason": f"move {m}"} for m in range(40)
    ]
    lines = render_frame(ACCESS, Snapshot(pool(*actions), [WEB]), width=200, height=30)
    assert len(lines) <= 30
    assert any("move 39" in line for line in lines)
    assert not any("move 0 " in line for line in lines)
    assert any("older not shown" in line for line in lines)


def test_wrap_never_cuts() -> None:
    line = "  " + " ".join(f"word{i}" for i in range(60))
    wrapped = wrap(line, 50, hang=6)
    assert all(len(part) <= 50 for part in wrapped)
    assert " ".join(" ".join(wrapped).split()) == " ".join(line.split())
    assert wrap(line, None) == [line]


def test_log_prints_each_action_once_and_counts_repeated_refusals() -> None:
    log = LineLog()
    first = log.update(Snapshot(pool(MIGRATION, cooldown(0)), [WEB], 10.0))
    assert first[0] == "pool lab thresholds: memory: ceiling 85% · migrate >77% · offload >93% · restore <55%"
    assert first[1].startswith("[   10 s] srv-px1 memory 82%")
    assert sum("Migrate" in line and "Succeeded" in line for line in first) == 1
    assert sum("Refused" in line for line in first) == 1
    later = log.update(Snapshot(pool(MIGRATION, cooldown(0), cooldown(5), cooldown(10)), [WEB], 12.0))
    assert later == [], "nothing new to say: repeated refusals are only counted, the state did not change"
    summary = log.summary()
    assert len(summary) == 2 and f"{TIMES}3 since 09:02:00" in summary[1]


def test_log_prints_a_state_line_when_counts_change() -> None:
    log = LineLog()
    log.update(Snapshot(pool(), [WEB], 1.0))
    moved = copy.deepcopy(WEB)
    moved["status"]["readyReplicas"] = 5
    lines = log.update(Snapshot(pool(), [moved], 3.0))
    assert len(lines) == 1 and "web desired 6 running 5" in lines[0], "the thresholds are said once"


@pytest.mark.parametrize("ready", [6, 5])
def test_ready_and_success_detection(ready: int) -> None:
    web = copy.deepcopy(WEB)
    web["status"]["readyReplicas"] = ready
    snapshot = Snapshot(pool(MIGRATION, cooldown(1)), [web])
    assert all_ready(snapshot) == ((6, 6) if ready == 6 else None)
    assert succeeded_kinds(snapshot) == {"Migrate"}


def test_failed_action_shows_its_message() -> None:
    failed = {**MIGRATION, "result": "Failed", "message": "migration aborted: target storage full"}
    assert "(migration aborted: target storage full)" in format_action(fold_actions([failed])[0])


def test_a_scale_up_is_one_line() -> None:
    created = [
        {
            "time": "2026-11-20T09:00:12Z",
            "action": "Create",
            "vmid": 3100 + i,
            "hostname": f"ct-web-0{i}",
            "policy": "web",
            "targetNode": "srv-px1" if i % 3 else "srv-px2",
            "result": "Succeeded",
            "reason": "scale up: 0 of 9 exist",
            "message": f"created and started CT {3100 + i}",
        }
        for i in range(9)
    ]
    lines = [line for line in render_frame(ACCESS, Snapshot(pool(*created), [WEB]), width=200) if "Create" in line]
    assert len(lines) == 1, lines
    assert "9 CTs 3100, 3101, 3102, 3103, 3104, 3105, 3106, 3107, 3108 (web)" in lines[0]
    assert f"on srv-px2 {TIMES}3, srv-px1 {TIMES}6" in lines[0]
    assert succeeded_kinds(Snapshot(pool(*created), [WEB])) == {"Create"}


def test_figures_are_not_repeated_when_the_reason_has_them() -> None:
    with_figures = {**MIGRATION, "reason": "srv-px1 memory 77.6% > migrateAbovePercent 75: srv-px1 77.6% → 74.2%"}
    line = format_action(fold_actions([with_figures])[0])
    assert line.count("→") == 2 and "[" not in line


def test_a_restore_in_place_says_where() -> None:
    restore = {**MIGRATION, "action": "Restore", "targetNode": "srv-px1", "reason": "room again"}
    assert "Restore  CT 3101 ct-web-01 (web) on srv-px1 Succeeded: room again" in format_action(
        fold_actions([restore])[0]
    )


def test_default_thresholds_are_the_api_defaults() -> None:
    from demo_view import DEFAULT_THRESHOLDS
    from pve_operator.api.v1alpha1.serverpool import Thresholds

    assert Thresholds().model_dump(mode="json", by_alias=True, exclude_none=True) == DEFAULT_THRESHOLDS
