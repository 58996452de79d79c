"""What the operator remembers of a pool between cycles belongs to the pool *object* (its UID), not to
its name (issue 10: a pool deleted and re-created under the same name inherited the old history and
cooldowns)."""

from __future__ import annotations

from collections import deque

from pve_operator.handlers.balancing import forget_pool_memory, pool_memory


def test_the_same_pool_object_keeps_its_memory_across_cycles() -> None:
    memory = pool_memory("team-a", "lab", "uid-1")
    memory.history["srv-px1"] = deque([0.8, 0.8])
    memory.last_action_at[3101] = 1_000.0
    assert pool_memory("team-a", "lab", "uid-1") is memory


def test_a_pool_recreated_under_the_same_name_starts_afresh() -> None:
    old = pool_memory("team-b", "lab", "uid-old")
    old.history["srv-px1"] = deque([0.9, 0.9, 0.9])
    old.last_action_at[3101] = 1_000.0
    new = pool_memory("team-b", "lab", "uid-new")
    assert new is not old
    assert not new.history and not new.last_action_at and not new.pressure.samples
    # The old object's memory is gone, not kept beside the new one.
    assert pool_memory("team-b", "lab", "uid-old") is not old


def test_pools_of_the_same_name_in_other_namespaces_do_not_share() -> None:
    assert pool_memory("team-c", "lab", "uid-c") is not pool_memory("team-d", "lab", "uid-d")


def test_a_deleted_pool_is_forgotten() -> None:
    memory = pool_memory("team-e", "lab", "uid-e")
    memory.history["srv-px1"] = deque([0.7])
    forget_pool_memory("team-e", "lab")
    assert not pool_memory("team-e", "lab", "uid-e").history
