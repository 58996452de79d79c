"""Policy reconciliation as users see it: counts, distribution, repairs, fill mode, refusals."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from pve_operator.api.v1alpha1 import PlacementSpec
from pve_operator.planning.actions import (
    CreateContainer,
    DestroyContainer,
    RecordTemplate,
    RestoreConfig,
    RestoreMarks,
    StartContainer,
)
from pve_operator.planning.model import ClusterSnapshot, ContainerStatus
from pve_operator.planning.reconcile import (
    FillIntent,
    GrowthStop,
    OwnedContainer,
    PolicyIntent,
    parse_net,
    plan_reconcile,
    pool_used_fraction,
    pve_setting,
)
from pve_operator.planning.topology import HOSTNAME_LABEL, TopologyInputs, TopologyRules, rules_for
from tests.builders import GIB, build_ct, build_node

INTENT = PolicyIntent(
    policy_uid="uid-web",
    vmid_range=range(3100, 3200),
    memory_mib=2048,
    cores=1,
    rootfs_gib=8,
    hostname_for=lambda i: f"ct-web-{i:02d}",
    node_weights={"srv-px1": 2, "srv-px2": 1},
    replicas=9,
)


def lab(*cts: object, px1_used_gib: float = 2, px2_used_gib: float = 2) -> ClusterSnapshot:
    return ClusterSnapshot.of(
        0.0,
        [
            build_node("srv-px1", memory_used_gib=px1_used_gib),
            build_node("srv-px2", memory_used_gib=px2_used_gib),
        ],
        cts,  # type: ignore[arg-type]
    )


def owned(vmid: int, node: str, index: int, created: str = "", **ct: object) -> OwnedContainer:
    return OwnedContainer(
        vmid=vmid,
        index=index,
        created_at=created or f"2026-11-23T10:{index:02d}:00Z",
        observation=build_ct(vmid, node, **ct),  # type: ignore[arg-type]
    )


def creates(plan_actions: list[object]) -> list[CreateContainer]:
    return [a for a in plan_actions if isinstance(a, CreateContainer)]


def test_lab_policy_creates_nine_cts_six_and_three_with_hostnames_and_vmids() -> None:
    plan = plan_reconcile(INTENT, lab(), [])
    made = creates(plan.actions)
    assert Counter(a.node for a in made) == {"srv-px1": 6, "srv-px2": 3}
    assert [a.vmid for a in made] == list(range(3100, 3109))
    assert [a.hostname for a in made] == [f"ct-web-{i:02d}" for i in range(9)]
    assert plan.desired_replicas == 9 and plan.unplaced == 0


def test_vmids_used_by_foreign_cts_and_vms_are_skipped_never_taken() -> None:
    foreign = build_ct(3100, "srv-px2", tags=frozenset({"legacy"}))
    snapshot = ClusterSnapshot.of(0.0, lab().nodes.values(), [foreign], vm_vmids=[3101])
    made = creates(plan_reconcile(replace(INTENT, replicas=2), snapshot, []).actions)
    # Displaced indices take ids from the top, so CT 2 and up keep start + index.
    assert [(a.index, a.vmid) for a in made] == [(0, 3199), (1, 3198)]
    full = plan_reconcile(INTENT, snapshot, [])
    assert all(getattr(a, "vmid", None) not in (3100, 3101) for a in full.actions)


def test_scale_down_removes_the_newest_cts_first() -> None:
    present = [owned(3100 + i, "srv-px1", i) for i in range(12)]
    plan = plan_reconcile(replace(INTENT, replicas=4), lab(*[p.observation for p in present]), present)
    removed = [a for a in plan.actions if isinstance(a, DestroyContainer)]
    assert sorted(a.vmid for a in removed) == list(range(3104, 3112))
    assert all(a.running for a in removed)
    assert not creates(plan.actions)


def test_a_ct_deleted_behind_our_back_comes_back_with_its_index_and_hostname() -> None:
    present = [owned(3100 + i, "srv-px1", i) for i in range(9) if i != 4]
    gone = OwnedContainer(vmid=3104, index=4, created_at="2026-11-23T10:04:00Z", observation=None)
    plan = plan_reconcile(INTENT, lab(*[p.observation for p in present]), [*present, gone])
    made = creates(plan.actions)
    assert len(made) == 1
    assert made[0].index == 4 and made[0].hostname == "ct-web-04"
    assert made[0].reason.startswith("replace a missing CT")


def test_stopped_ct_is_started_unless_the_operator_offloaded_it() -> None:
    stopped = owned(3100, "srv-px1", 0, status=ContainerStatus.STOPPED)
    offloaded = replace(owned(3101, "srv-px1", 1, status=ContainerStatus.STOPPED), offloaded=True)
    plan = plan_reconcile(
        replace(INTENT, replicas=2), lab(stopped.observation, offloaded.observation), [stopped, offloaded]
    )
    assert [a.vmid for a in plan.actions if isinstance(a, StartContainer)] == [3100]


def test_memory_and_cores_changed_behind_our_back_are_put_back() -> None:
    drifted = owned(3100, "srv-px1", 0, memory_mib=4096, cores=2)
    plan = plan_reconcile(replace(INTENT, replicas=1), lab(drifted.observation), [drifted])
    (repair,) = [a for a in plan.actions if isinstance(a, RestoreConfig)]
    assert repair.changes == {"memory": 2048, "cores": 1}
    assert "memory 4096→2048" in repair.reason


def test_locked_and_not_yet_reported_cts_are_left_alone() -> None:
    locked = owned(3100, "srv-px1", 0, status=ContainerStatus.STOPPED, lock="migrate", memory_mib=1)
    fresh = owned(3101, "srv-px1", 1, status=ContainerStatus.UNKNOWN, memory_mib=1)
    plan = plan_reconcile(replace(INTENT, replicas=2), lab(locked.observation, fresh.observation), [locked, fresh])
    assert plan.actions == []


def test_all_nodes_at_the_ceiling_refuses_with_reasons_per_node() -> None:
    plan = plan_reconcile(INTENT, lab(px1_used_gib=25, px2_used_gib=30), [])
    assert creates(plan.actions) == []
    assert plan.unplaced == 9
    assert set(plan.placement_refusals) == {"srv-px1", "srv-px2"}
    assert "ceiling 80%" in plan.placement_refusals["srv-px1"]


def test_fill_mode_grows_while_projected_pool_usage_stays_under_the_limit() -> None:
    # Pool: 64 GiB, 4 GiB used. Each CT counts 2 GiB: 60% of 64 = 38.4 GiB -> n*2 + 4 < 38.4 -> 17 CTs.
    intent = replace(INTENT, replicas=None, fill=FillIntent(until_fraction=0.6, max_replicas=50))
    plan = plan_reconcile(intent, lab(), [])
    assert plan.desired_replicas == 17
    assert plan.growth_stop is GrowthStop.USAGE_LIMIT_REACHED
    assert Counter(a.node for a in creates(plan.actions)) == {"srv-px1": 11, "srv-px2": 6}


def test_fill_mode_never_shrinks_when_usage_rises_and_grows_again_when_it_falls() -> None:
    intent = replace(INTENT, replicas=None, fill=FillIntent(until_fraction=0.6, max_replicas=50), previous_desired=5)
    present = [owned(3100 + i, "srv-px1", i) for i in range(5)]
    busy = lab(*[p.observation for p in present], px1_used_gib=30, px2_used_gib=30)
    plan = plan_reconcile(intent, busy, present)
    assert plan.desired_replicas == 5 and plan.actions == []
    quiet = lab(*[p.observation for p in present], px1_used_gib=5, px2_used_gib=2)
    assert plan_reconcile(intent, quiet, present).desired_replicas > 5


def test_fill_mode_stops_at_max_replicas() -> None:
    intent = replace(INTENT, replicas=None, fill=FillIntent(until_fraction=0.99, max_replicas=3))
    plan = plan_reconcile(intent, lab(), [])
    assert plan.desired_replicas == 3 and plan.growth_stop is GrowthStop.MAX_REPLICAS_REACHED


def test_paused_policy_plans_nothing() -> None:
    assert plan_reconcile(replace(INTENT, paused=True), lab(), []).actions == []


def test_pool_usage_is_total_use_over_total_capacity_of_online_nodes() -> None:
    snapshot = ClusterSnapshot.of(
        0.0,
        [
            build_node("a", memory_used_gib=16),
            build_node("b", memory_used_gib=8),
            build_node("c", online=False),
        ],
    )
    assert pool_used_fraction(snapshot, ["a", "b", "c"], INTENT.metric) == (24 * GIB) / (64 * GIB)


# -- VMID ranges shared with other policies, VMIDs held by other guests ---------------------------


def test_nothing_new_is_created_in_a_range_part_another_policy_shares() -> None:
    """Two policies with overlapping ranges: before, the second took 3112-3113 and the first's CTs 12
    and 13 got 3114 and 3115. Now the shared VMIDs are reserved and each displaced index is reported."""
    intent = replace(INTENT, vmid_range=range(3100, 3120), replicas=14, reserved_vmids=frozenset(range(3110, 3120)))
    present = [owned(3100 + i, "srv-px1", i) for i in range(10)]
    plan = plan_reconcile(intent, lab(*(o.observation for o in present)), present)
    assert creates(plan.actions) == []
    assert plan.placement_refusals and "other policies' ranges overlap" in plan.placement_refusals["vmidRange"]
    assert [(c.index, c.wanted_vmid, c.vmid, c.in_shared_range) for c in plan.vmid_conflicts] == [
        (10, 3110, None, True),
        (11, 3111, None, True),
        (12, 3112, None, True),
        (13, 3113, None, True),
    ]


def test_an_index_whose_vmid_another_guest_holds_is_reported_and_the_rest_stay_exact() -> None:
    foreign = build_ct(3102, "srv-px2", tags=frozenset({"other-team"}))
    intent = replace(INTENT, replicas=4)
    plan = plan_reconcile(intent, lab(foreign), [])
    assert sorted((a.index, a.vmid) for a in creates(plan.actions)) == [(0, 3100), (1, 3101), (2, 3199), (3, 3103)]
    assert [(c.index, c.wanted_vmid, c.vmid, c.in_shared_range) for c in plan.vmid_conflicts] == [
        (2, 3102, 3199, False)
    ]
    # Once created at 3199, CT 2 keeps being reported while the foreign guest holds 3102.
    present = [
        owned(3100, "srv-px1", 0),
        owned(3101, "srv-px1", 1),
        owned(3199, "srv-px2", 2),
        owned(3103, "srv-px1", 3),
    ]
    again = plan_reconcile(intent, lab(foreign, *(o.observation for o in present)), present)
    assert [(c.index, c.vmid) for c in again.vmid_conflicts] == [(2, 3199)]
    # When the foreign guest is gone, nothing is reported: the CT simply lives at 3199.
    freed = plan_reconcile(intent, lab(*(o.observation for o in present)), present)
    assert freed.vmid_conflicts == ()


def test_a_ct_in_the_pools_balancing_journal_is_neither_started_nor_removed() -> None:
    """Seen in a demo: `Restore CT 3101 Succeeded`, then in the same second `Start CT 3101 Succeeded
    stopped outside the operator`. While the pool's journal holds a CT, its state is the balancer's."""
    present = [owned(3100, "srv-px1", 0), owned(3101, "srv-px1", 1, status=ContainerStatus.STOPPED)]
    snapshot = lab(*(o.observation for o in present))
    unaware = plan_reconcile(replace(INTENT, replicas=2), snapshot, present)
    assert [a.vmid for a in unaware.actions if isinstance(a, StartContainer)] == [3101]

    aware = plan_reconcile(replace(INTENT, replicas=2, busy_vmids=frozenset({3101})), snapshot, present)
    assert not [a for a in aware.actions if isinstance(a, StartContainer)]
    shrink = plan_reconcile(replace(INTENT, replicas=1, busy_vmids=frozenset({3101})), snapshot, present)
    assert not [a for a in shrink.actions if isinstance(a, DestroyContainer)], "wait for the balancer"


def test_a_ct_on_an_offline_node_is_counted_but_never_acted_on() -> None:
    present = [owned(3100 + i, "srv-px1", i) for i in range(3)]
    unknown = replace(owned(3103, "srv-px2", 3, status=ContainerStatus.UNKNOWN), created_at="", verified=False)
    snapshot = lab(*(o.observation for o in [*present, unknown]))
    keep = plan_reconcile(replace(INTENT, replicas=4), snapshot, [*present, unknown])
    assert keep.actions == [], "no replacement, no start"
    grow = plan_reconcile(replace(INTENT, replicas=6), snapshot, [*present, unknown])
    assert sorted(a.index for a in creates(grow.actions)) == [4, 5], "its index stays taken"
    shrink = plan_reconcile(replace(INTENT, replicas=1), snapshot, [*present, unknown])
    assert 3103 not in {a.vmid for a in shrink.actions if isinstance(a, DestroyContainer)}


def test_a_creation_that_keeps_failing_waits_longer_each_time_and_a_success_ends_it() -> None:
    from pve_operator.planning.reconcile import FailedAttempt, creation_backoffs

    def failed(vmid: int, at: float) -> FailedAttempt:
        return FailedAttempt(vmid, at, succeeded=False, message=f"Create CT {vmid} failed: no such bridge")

    once = [failed(3100, 100.0)]
    assert creation_backoffs(once, 105.0, base_seconds=15, cap_seconds=300)[3100].retry_in_seconds == 10
    assert creation_backoffs(once, 115.0, base_seconds=15, cap_seconds=300) == {}, "retried after 15 s"
    thrice = [failed(3100, 100.0), failed(3100, 115.0), failed(3100, 145.0)]
    waiting = creation_backoffs(thrice, 150.0, base_seconds=15, cap_seconds=300)[3100]
    assert (waiting.failures, waiting.retry_in_seconds) == (3, 55.0), "15, 30, then 60 s"
    many = [failed(3100, float(t)) for t in range(0, 1000, 100)]
    assert creation_backoffs(many, 950.0, base_seconds=15, cap_seconds=300)[3100].retry_in_seconds == 250
    healed = [*thrice, FailedAttempt(3100, 160.0, succeeded=True)]
    assert creation_backoffs(healed, 161.0, base_seconds=15, cap_seconds=300) == {}


def test_a_stale_running_on_an_offline_node_is_not_trusted() -> None:
    """PVE keeps a dead node's last CT status in /cluster/resources for up to ~5 min (issue 15 §5):
    a ``running`` CT whose node is offline is unknown, even with its ownership proof cached."""
    cts = [build_ct(3100 + i, "srv-px1") for i in range(3)] + [
        build_ct(3103, "srv-px2", memory_mib=4096)  # memory drifted too: no repair either
    ]
    snapshot = ClusterSnapshot.of(0.0, [build_node("srv-px1"), build_node("srv-px2", online=False)], cts)
    stale = snapshot.containers[3103]
    assert (stale.status, stale.reported_status) == (ContainerStatus.UNKNOWN, ContainerStatus.RUNNING)
    present = [
        OwnedContainer(
            vmid=c.vmid,
            index=c.vmid - 3100,
            created_at=f"2026-11-23T10:0{c.vmid - 3100}:00Z",
            observation=snapshot.containers[c.vmid],
        )
        for c in cts
    ]
    keep = plan_reconcile(replace(INTENT, replicas=4), snapshot, present)
    assert keep.actions == [], "no repair of the stale CT, no replacement"
    shrink = plan_reconcile(replace(INTENT, replicas=3), snapshot, present)
    assert not [a for a in shrink.actions if isinstance(a, DestroyContainer)], "the newest is unknown: wait"


HOT = {"swap": "512", "onboot": "1", "protection": "", "startup": "order=2", "cpulimit": "0.5", "cpuunits": ""}


def test_hot_settings_changed_by_hand_are_put_back_when_the_config_was_read() -> None:
    """Issue 11 §2: drift repair compares every hot setting of the CTs whose config this cycle read."""
    ct = owned(3100, "srv-px1", 0, memory_mib=2048)
    config = {"swap": 0, "onboot": 0, "protection": 1, "startup": "order=2", "cpulimit": "0.5", "cpuunits": 300}
    intent = replace(INTENT, replicas=1, config_settings=HOT)
    plan = plan_reconcile(intent, lab(ct.observation), [replace(ct, config=config)])
    (repair,) = [a for a in plan.actions if isinstance(a, RestoreConfig)]
    assert repair.changes == {"onboot": "1", "swap": "512", "delete": "cpuunits,protection"}
    assert "onboot unset→1" in repair.reason and "cpuunits 300→unset" in repair.reason


def test_a_config_as_pve_writes_it_is_no_drift_and_an_unread_config_is_not_judged() -> None:
    ct = owned(3100, "srv-px1", 0, memory_mib=2048)
    same = {"swap": 512, "onboot": 1, "protection": 0, "startup": "order=2", "cpulimit": 0.5}  # 1/0, numbers
    intent = replace(INTENT, replicas=1, config_settings=HOT)
    for item in (replace(ct, config=same), ct):  # read and equal; not read this cycle
        plan = plan_reconcile(intent, lab(ct.observation), [item])
        assert not [a for a in plan.actions if isinstance(a, RestoreConfig)]


def test_swap_zero_is_written_not_deleted() -> None:
    """PVE's default swap is 512 MiB: a policy that wants none must write 0."""
    ct = owned(3100, "srv-px1", 0, memory_mib=2048)
    intent = replace(INTENT, replicas=1, config_settings={"swap": pve_setting(0)})
    plan = plan_reconcile(intent, lab(ct.observation), [replace(ct, config={"swap": 512})])
    (repair,) = [a for a in plan.actions if isinstance(a, RestoreConfig)]
    assert repair.changes == {"swap": "0"}


def _hostname_spread(skew: int = 1) -> TopologyRules:
    placement = PlacementSpec.model_validate(
        {
            "topologySpreadConstraints": [
                {"topologyKey": HOSTNAME_LABEL, "maxSkew": skew, "whenUnsatisfiable": "DoNotSchedule"}
            ]
        }
    )
    weights = {"srv-px1": 2, "srv-px2": 1}
    return rules_for(placement, {}, TopologyInputs(weights, frozenset(weights)))


def test_scale_down_with_a_spread_removes_from_the_most_crowded_node_first() -> None:
    # 6 on px1 (the oldest), 3 on px2 (the newest): newest-first alone would empty px2.
    present = [owned(3100 + i, "srv-px1", i) for i in range(6)] + [owned(3106 + i, "srv-px2", 6 + i) for i in range(3)]
    snapshot = lab(*[p.observation for p in present])
    plain = plan_reconcile(replace(INTENT, replicas=4), snapshot, present)
    assert {a.node for a in plain.actions if isinstance(a, DestroyContainer)} == {"srv-px1", "srv-px2"}
    spread = plan_reconcile(replace(INTENT, replicas=4, topology=_hostname_spread()), snapshot, present)
    removed = [a for a in spread.actions if isinstance(a, DestroyContainer)]
    assert len(removed) == 5
    left = Counter(p.observation.node for p in present if p.vmid not in {a.vmid for a in removed})  # type: ignore[union-attr]
    assert left == {"srv-px1": 2, "srv-px2": 2}
    # Newest first within the crowded node: px1 loses 3105, 3104, 3103, 3102 and px2 its newest, 3108.
    assert sorted(a.vmid for a in removed) == [3102, 3103, 3104, 3105, 3108]
    assert all("most crowded topology domain" in a.reason for a in removed)


def test_creation_with_a_spread_fills_the_sparse_node_and_says_unschedulable_when_it_is_full() -> None:
    present = [owned(3100 + i, "srv-px1", i) for i in range(4)]
    snapshot = lab(*[p.observation for p in present], px2_used_gib=30)
    plan = plan_reconcile(replace(INTENT, replicas=6, topology=_hostname_spread()), snapshot, present)
    # px2 is full (ceiling) and px1 already holds 4 against 0: nothing may be created, and the plan says why.
    assert not creates(plan.actions)
    assert plan.unplaced == 2 and plan.rule_refused == {"srv-px1"}
    assert "maxSkew 1" in plan.placement_refusals["srv-px1"]


def _stamped(vmid: int, node: str, index: int, template: str, **ct: object) -> OwnedContainer:
    return replace(owned(vmid, node, index, **ct), template_hash=template)


ROLLING = replace(INTENT, replicas=4, template_hash="new", rollout_max_unavailable=1)


def test_a_rolling_update_recreates_outdated_cts_one_budget_at_a_time_lowest_index_first() -> None:
    present = [_stamped(3100 + i, "srv-px1", i, "old") for i in range(4)]
    plan = plan_reconcile(ROLLING, lab(*[p.observation for p in present]), present)
    destroyed = [a for a in plan.actions if isinstance(a, DestroyContainer)]
    assert [a.vmid for a in destroyed] == [3100], "maxUnavailable 1: one at a time, lowest index first"
    assert "rolling update: the template changed" in destroyed[0].reason and "0 of 4 updated" in destroyed[0].reason
    assert plan.outdated == (3100, 3101, 3102, 3103)
    assert not creates(plan.actions), "the destroyed CT comes back at the next cycle, with its index"

    # Next cycle: 3100 is gone, the three others still old: the missing index is created, nothing destroyed
    # (one CT is already unavailable, the whole budget).
    rest = present[1:]
    nxt = plan_reconcile(ROLLING, lab(*[p.observation for p in rest]), rest)
    assert [a.vmid for a in creates(nxt.actions)] == [3100]
    assert not [a for a in nxt.actions if isinstance(a, DestroyContainer)]


def test_a_rolling_update_waits_while_cts_are_unavailable_and_ondelete_never_destroys() -> None:
    present = [_stamped(3100, "srv-px1", 0, "new")] + [_stamped(3100 + i, "srv-px1", i, "old") for i in (1, 2, 3)]
    stopped = replace(present[0], observation=replace(present[0].observation, status=ContainerStatus.STOPPED))
    waiting = [stopped, *present[1:]]
    plan = plan_reconcile(ROLLING, lab(*[p.observation for p in waiting]), waiting)
    assert not [a for a in plan.actions if isinstance(a, DestroyContainer)], "CT 3100 is down: budget used"
    wider = plan_reconcile(replace(ROLLING, rollout_max_unavailable=3), lab(*[p.observation for p in present]), present)
    assert [a.vmid for a in wider.actions if isinstance(a, DestroyContainer)] == [3101, 3102, 3103]
    on_delete = plan_reconcile(
        replace(ROLLING, rollout_max_unavailable=None), lab(*[p.observation for p in present]), present
    )
    assert not [a for a in on_delete.actions if isinstance(a, DestroyContainer)]
    assert on_delete.outdated == (3101, 3102, 3103)


def test_cts_without_a_recorded_template_are_stamped_not_recreated() -> None:
    unknown = [owned(3100 + i, "srv-px1", i) for i in range(4)]
    read = [replace(unknown[0], config={"description": "pve-operator:..."}), *unknown[1:]]
    plan = plan_reconcile(ROLLING, lab(*[p.observation for p in read]), read)
    assert not [a for a in plan.actions if isinstance(a, DestroyContainer)]
    stamps = [a for a in plan.actions if isinstance(a, RecordTemplate)]
    assert [(a.vmid, a.template_hash) for a in stamps] == [(3100, "new")], "only the CT whose config was read"


def test_restart_class_drift_is_written_and_the_ct_restarted_within_the_rolling_budget() -> None:
    read = [
        replace(_stamped(3100 + i, "srv-px1", i, "new"), config={"nameserver": "192.0.2.53", "timezone": "host"})
        for i in range(4)
    ]
    wanted = replace(
        ROLLING, restart_settings={"nameserver": "192.0.2.1 192.0.2.2", "timezone": "host", "searchdomain": ""}
    )
    plan = plan_reconcile(wanted, lab(*[p.observation for p in read]), read)
    repairs = [a for a in plan.actions if isinstance(a, RestoreConfig)]
    assert len(repairs) == 1 and repairs[0].restart, "maxUnavailable 1: one restart per cycle"
    assert repairs[0].changes == {"nameserver": "192.0.2.1 192.0.2.2"}
    assert "restart to apply" in repairs[0].reason and "nameserver 192.0.2.53→192.0.2.1 192.0.2.2" in repairs[0].reason
    # OnDelete: written in place for every CT read, applied at their next start; nobody is restarted.
    on_delete = plan_reconcile(replace(wanted, rollout_max_unavailable=None), lab(*[p.observation for p in read]), read)
    writes = [a for a in on_delete.actions if isinstance(a, RestoreConfig)]
    assert len(writes) == 4 and not any(a.restart for a in writes)


def test_a_rollout_whose_creations_keep_failing_destroys_no_more_cts() -> None:
    # CT 3100 was destroyed for the rollout and its creation with the new template keeps failing.
    rest = [_stamped(3100 + i, "srv-px1", i, "old") for i in (1, 2, 3)]
    paused = plan_reconcile(replace(ROLLING, rollout_paused=True), lab(*[p.observation for p in rest]), rest)
    assert not [a for a in paused.actions if isinstance(a, DestroyContainer)]
    assert paused.outdated == (3101, 3102, 3103), "still reported as outdated"
    # Setting the template back: the remaining CTs are current again, nothing is outdated.
    back = plan_reconcile(replace(ROLLING, template_hash="old"), lab(*[p.observation for p in rest]), rest)
    assert back.outdated == () and not [a for a in back.actions if isinstance(a, DestroyContainer)]


def test_notes_and_missing_tags_are_put_back_when_the_config_was_read_and_other_tags_stay() -> None:
    from pve_operator.planning.actions import RestoreMarks

    record = "pve-operator:policy=apps/web;uid=uid-web;index=0;created=2026-11-23T10:00:00Z;sig=00"
    config = {"description": f"edited by hand\n{record}\n", "tags": "pve-operator;pve-operator-pinned"}
    read = [replace(owned(3100, "srv-px1", 0), config=config)]
    intent = replace(INTENT, replicas=1, notes="Web frontends", tags=frozenset({"pve-operator", "web"}))
    marks = [
        a
        for a in plan_reconcile(intent, lab(*[p.observation for p in read]), read).actions
        if isinstance(a, RestoreMarks)
    ]
    assert len(marks) == 1
    assert marks[0].notes == "Web frontends" and marks[0].add_tags == {"web"}
    assert "description notes put back and tag(s) web put back" in marks[0].reason
    # In place already: nothing to do (the user's own pinned tag is never removed).
    fine = [replace(read[0], config={"description": f"Web frontends\n{record}\n", "tags": "pve-operator;web;x"})]
    assert not [
        a
        for a in plan_reconcile(intent, lab(*[p.observation for p in fine]), fine).actions
        if isinstance(a, RestoreMarks)
    ]


SURGING = replace(ROLLING, rollout_max_unavailable=0, rollout_max_surge=1)


def test_a_surge_rollout_creates_a_new_ct_first_and_destroys_an_outdated_one_only_once_it_runs() -> None:
    present = [_stamped(3100 + i, "srv-px1", i, "old") for i in range(4)]
    first = plan_reconcile(SURGING, lab(*[p.observation for p in present]), present)
    assert not [a for a in first.actions if isinstance(a, DestroyContainer)], "maxUnavailable 0: nothing goes first"
    made = creates(first.actions)
    assert [(a.vmid, a.index, a.hostname) for a in made] == [(3104, 4, "ct-web-04")], "the lowest free index"
    assert "rolling update surge" in made[0].reason

    # The surge CT exists but is not running yet: all four old CTs stay (4 available = the floor).
    starting = replace(_stamped(3104, "srv-px2", 4, "new"), created_at="2026-11-23T11:00:00Z")
    starting = replace(starting, observation=replace(starting.observation, status=ContainerStatus.STOPPED))
    waiting = plan_reconcile(SURGING, lab(*[p.observation for p in [*present, starting]]), [*present, starting])
    assert not [a for a in waiting.actions if isinstance(a, DestroyContainer)]
    assert not creates(waiting.actions), "replicas + maxSurge CTs exist"

    # Once it runs, the lowest outdated index goes (not the newest CT, as a plain scale-down would choose).
    running = replace(starting, observation=replace(starting.observation, status=ContainerStatus.RUNNING))
    fleet = [*present, running]
    nxt = plan_reconcile(SURGING, lab(*[p.observation for p in fleet]), fleet)
    assert [a.vmid for a in nxt.actions if isinstance(a, DestroyContainer)] == [3100]
    assert not creates(nxt.actions), "the CT being destroyed still counts: never more than replicas + maxSurge"


def test_a_surge_never_exceeds_the_outdated_cts_and_stops_with_the_rollout() -> None:
    present = [_stamped(3100 + i, "srv-px1", i, "new") for i in range(3)] + [_stamped(3103, "srv-px1", 3, "old")]
    wide = plan_reconcile(replace(SURGING, rollout_max_surge=3), lab(*[p.observation for p in present]), present)
    assert len(creates(wide.actions)) == 1, "one outdated CT left: one surge CT, not three"
    paused = plan_reconcile(replace(SURGING, rollout_paused=True), lab(*[p.observation for p in present]), present)
    assert not creates(paused.actions), "creations keep failing: no more surge CTs"
    current = [_stamped(3100 + i, "srv-px1", i, "new") for i in range(4)]
    done = plan_reconcile(SURGING, lab(*[p.observation for p in current]), current)
    assert not done.actions, "nothing outdated: no surge"


def test_nic_drift_is_repaired_in_place_keeping_the_mac_and_unmanaged_keys_and_extra_nics_go() -> None:
    wanted = ("name=eth0,bridge=vmbr0,ip=dhcp,tag=20,firewall=1", "name=eth1,bridge=vmbr1,ip=10.0.0.5/24,mtu=9000")
    config = {
        # Bridge and VLAN changed by hand, firewall dropped; PVE's hwaddr and type and an admin's trunks stay.
        "net0": "name=eth0,bridge=vmbr9,hwaddr=BC:24:11:00:00:01,ip=dhcp,tag=30,trunks=5;6,type=veth",
        "net1": "name=eth1,bridge=vmbr1,hwaddr=BC:24:11:00:00:02,ip=10.0.0.5/24,mtu=9000,type=veth",
        "net2": "name=eth2,bridge=vmbr0,hwaddr=BC:24:11:00:00:03,ip=dhcp,type=veth",
    }
    item = replace(owned(3100, "srv-px1", 0), config=config)
    plan = plan_reconcile(replace(INTENT, replicas=1, networks=wanted), lab(item.observation), [item])
    [repair] = [a for a in plan.actions if isinstance(a, RestoreConfig)]
    assert parse_net(repair.changes["net0"]) == {
        "name": "eth0",
        "bridge": "vmbr0",
        "ip": "dhcp",
        "tag": "20",
        "firewall": "1",
        "hwaddr": "BC:24:11:00:00:01",
        "trunks": "5;6",
        "type": "veth",
    }
    assert "net1" not in repair.changes, "net1 matches: not rewritten"
    assert repair.changes["delete"] == "net2"
    assert "net0 bridge vmbr9→vmbr0, tag 30→20, firewall unset→1" in repair.reason
    assert "net2 not in the policy" in repair.reason

    same = {"net0": "name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:00:00:01,ip=dhcp,tag=20,type=veth"}
    clean = replace(item, config={**same, "net1": config["net1"]})
    assert not plan_reconcile(replace(INTENT, replicas=1, networks=wanted), lab(item.observation), [clean]).actions
    # A NIC missing from the config is written whole.
    missing = replace(item, config=same)
    [add] = [
        a
        for a in plan_reconcile(replace(INTENT, replicas=1, networks=wanted), lab(item.observation), [missing]).actions
        if isinstance(a, RestoreConfig)
    ]
    assert add.changes == {"net1": wanted[1]} and "net1 missing" in add.reason


def test_a_clone_may_target_any_node_only_when_every_volume_is_on_shared_storage() -> None:
    from pve_operator.planning.reconcile import clone_volumes_shared

    shared = frozenset({"ceph-ct", "nfs"})
    on_ceph = {"rootfs": "ceph-ct:base-9000-disk-0,size=4G", "mp0": "ceph-ct:base-9000-disk-1,mp=/srv,size=8G"}
    assert clone_volumes_shared(on_ceph, shared, None)
    assert not clone_volumes_shared({**on_ceph, "mp1": "local-lvm:base-9000-disk-2,mp=/var"}, shared, None)
    assert not clone_volumes_shared({**on_ceph, "mp1": "/mnt/data,mp=/data"}, shared, None), "a bind mount"
    assert not clone_volumes_shared(on_ceph, shared, "local-lvm"), "a full clone onto local storage"
    assert clone_volumes_shared(on_ceph, shared, "nfs")
    assert not clone_volumes_shared({"memory": 512}, shared, None), "no volume known: stay on the template's node"


def test_tags_removed_from_the_template_are_taken_off_every_ct_that_shows_them() -> None:
    carrying = owned(3100, "srv-px1", 0, tags=frozenset({"pve-operator", "web", "blue"}))
    clean = owned(3101, "srv-px1", 1, tags=frozenset({"pve-operator", "web"}))
    locked = owned(3102, "srv-px1", 2, tags=frozenset({"blue"}), lock="backup")
    fleet = [carrying, clean, locked]
    intent = replace(INTENT, replicas=3, tags=frozenset({"pve-operator", "web"}), retired_tags=frozenset({"blue"}))
    plan = plan_reconcile(intent, lab(*[o.observation for o in fleet]), fleet)
    marks = [a for a in plan.actions if isinstance(a, RestoreMarks)]
    assert [(a.vmid, a.remove_tags, a.add_tags, a.notes) for a in marks] == [(3100, {"blue"}, frozenset(), None)]
    assert "tag(s) blue taken off (no longer in template.tags)" in marks[0].reason
    # A retired tag the template lists again is wanted, not removed.
    back = replace(intent, tags=intent.tags | {"blue"})
    assert not [
        a
        for a in plan_reconcile(back, lab(*[o.observation for o in fleet]), fleet).actions
        if isinstance(a, RestoreMarks)
    ]


def test_which_tags_are_retired_follows_the_status_the_last_cycle_wrote() -> None:
    from pve_operator.execution.policy_input import retired_tags
    from tests.unit.test_ct_settings import policy

    spec = policy(tags=["web", "green"])
    assert retired_tags(spec, {}) == frozenset(), "a status from before templateTags retires nothing"
    assert retired_tags(spec, {"templateTags": ["web", "blue"]}) == {"blue"}
    assert retired_tags(spec, {"templateTags": ["web", "green"], "retiredTags": ["blue", "green"]}) == {"blue"}


# -- the policy's own tasks in flight (status.tasksInFlight) ------------------------------------------------


def test_a_ct_whose_destruction_is_under_way_counts_as_gone_and_no_other_ct_is_destroyed_for_it() -> None:
    # Replicas 5 -> 4 with a spread: 3105 (px2) is being stopped and destroyed over several cycles. While it is
    # still in the snapshot, the next cycle must not pick another CT for the same surplus.
    present = [owned(3100 + i, "srv-px1", i) for i in range(3)] + [owned(3103 + i, "srv-px2", 3 + i) for i in range(3)]
    snapshot = lab(*[p.observation for p in present])
    intent = replace(INTENT, replicas=5, topology=_hostname_spread(), busy_vmids=frozenset({3105}))
    without_journal = plan_reconcile(intent, snapshot, present)
    assert [a.vmid for a in without_journal.actions if isinstance(a, DestroyContainer)] == [3104], (
        "the old behaviour: the CT under destruction is counted, so another goes too"
    )
    journaled = replace(intent, leaving_vmids=frozenset({3105}), disrupted_vmids=frozenset({3105}))
    plan = plan_reconcile(journaled, snapshot, present)
    assert not [a for a in plan.actions if isinstance(a, DestroyContainer)]
    assert not creates(plan.actions) and plan.desired_replicas == 5


def test_a_rollout_takes_no_second_ct_down_while_a_task_of_the_first_is_in_flight() -> None:
    # 3100 is being recreated: its stop task runs, but the snapshot (PVE's figures lag) still says running.
    present = [_stamped(3100 + i, "srv-px1", i, "old") for i in range(4)]
    snapshot = lab(*[p.observation for p in present])
    stopping = replace(ROLLING, leaving_vmids=frozenset({3100}), disrupted_vmids=frozenset({3100}))
    plan = plan_reconcile(stopping, snapshot, present)
    assert not [a for a in plan.actions if isinstance(a, DestroyContainer)], "maxUnavailable 1 is taken"
    restarting = replace(ROLLING, disrupted_vmids=frozenset({3100}), busy_vmids=frozenset({3100}))
    plan = plan_reconcile(restarting, snapshot, present)
    assert not [a for a in plan.actions if isinstance(a, DestroyContainer)], "a CT being restarted is not available"


def test_a_ct_being_recreated_by_a_rollout_comes_back_with_its_vmid_only_once_it_is_gone() -> None:
    # Seen in the rolling-update e2e: 3100's stop and destroy run over several cycles. Planned as gone while
    # still listed, its index looked free and its VMID taken, so index 0 came back as 3199.
    present = [_stamped(3100 + i, "srv-px1", i, "old") for i in range(4)]
    snapshot = lab(*[p.observation for p in present])
    destroying = replace(ROLLING, leaving_vmids=frozenset({3100}), disrupted_vmids=frozenset({3100}))
    plan = plan_reconcile(destroying, snapshot, present)
    assert not creates(plan.actions), "index 0 waits for its CT to be gone, rather than take another VMID"
    assert not plan.placement_refusals, "waiting for a destroy is not a placement refusal"
    gone = lab(*[p.observation for p in present[1:]])
    plan = plan_reconcile(ROLLING, gone, present[1:])
    assert [(a.vmid, a.index) for a in creates(plan.actions)] == [(3100, 0)]
