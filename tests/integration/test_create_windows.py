"""Ownership discovery while PVE is still creating a CT (issue 15 §4), against pve_sim.

pve-container ``src/PVE/API2/LXC.pm`` ``create_vm``: ``create_and_lock_config`` writes ``{lock: create}``
before the UPID is returned; after the template is unpacked the worker writes the config built from
the parameters (our tags and ownership record included) *without* the lock, while the task still runs
its last steps. A policy cycle (or a restarted operator) can look at the CT in either window:

1. ``lock: create``, no marks: no verdict yet (not cached as foreign), counted as a creation in
   progress, so no second CT is created for it;
2. marks, no lock, CT stopped, task running: proven ours and counted; a repair start planned from
   that view is skipped (its creator starts it), not sent against the running create.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pve_operator.execution.discovery import creations_in_progress, discover_owned
from pve_operator.execution.executor import PolicyExecutor, PolicyIdentity
from pve_operator.planning.actions import CreateContainer, StartContainer
from pve_operator.planning.ownership import ForeignClaim, OwnershipRecord, format_description, ownership_tags
from pve_operator.planning.reconcile import PolicyIntent, plan_reconcile
from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.pve.params import create_params
from tests.integration.test_executor import BLUEPRINT, IDENTITY, KEY

VMID = 3100


def operator_client(sim: Any) -> PveClient:
    return PveClient(
        sim.url,
        PveCredentials(token_id="ctoperator@pve!operator", token_secret=sim.token_secret("ctoperator@pve", "operator")),
        TlsSettings(ca_pem=Path(sim.ca_path).read_text()),
    )


def intent(replicas: int) -> PolicyIntent:
    return PolicyIntent(
        policy_uid=IDENTITY.uid,
        vmid_range=IDENTITY.vmid_range,
        memory_mib=BLUEPRINT.memory_mib,
        cores=BLUEPRINT.cores,
        rootfs_gib=BLUEPRINT.rootfs_gib,
        hostname_for=lambda i: f"ct-web-{i:02d}",
        node_weights={"srv-px1": 1},
        replicas=replicas,
    )


def test_discovery_in_both_windows_of_a_running_create(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    sim.cluster.clock.freeze()
    client = operator_client(sim)
    record = OwnershipRecord("apps", "web", IDENTITY.uid, 0, "2026-11-23T12:00:00Z").signed(VMID, KEY)
    params = create_params(
        BLUEPRINT, hostname="ct-web-00", description=format_description(record), tags=ownership_tags(IDENTITY.uid)
    )
    client.create_container("srv-px1", VMID, params)
    records: dict[int, OwnershipRecord | ForeignClaim | None] = {}

    # Window 1: only {lock: create}.
    snapshot = client.snapshot(time.time())
    assert snapshot.containers[VMID].lock == "create"
    owned = discover_owned(client, snapshot, IDENTITY.uid, IDENTITY.vmid_range, records, key=KEY)
    assert VMID not in {o.vmid for o in owned} and VMID not in records, "no verdict, and not cached as foreign"
    assert creations_in_progress(snapshot, IDENTITY.vmid_range, owned) == [VMID]

    # Window 2: the full config without the lock; the create task still runs.
    sim.cluster.advance_clock(5)
    assert "vzcreate" in client.active_task_types("srv-px1", VMID)
    snapshot = client.snapshot(time.time())
    assert snapshot.containers[VMID].lock is None and ownership_tags(IDENTITY.uid) <= snapshot.containers[VMID].tags
    owned = discover_owned(client, snapshot, IDENTITY.uid, IDENTITY.vmid_range, records, key=KEY)
    assert [(o.vmid, o.index) for o in owned] == [(VMID, 0)], "proven ours and counted"
    plan = plan_reconcile(intent(1), snapshot, owned)
    assert not [a for a in plan.actions if isinstance(a, CreateContainer)], "no duplicate"
    # Once pvestatd reports the new CT as stopped (up to 10 s later), a cycle plans a repair start for
    # it while the create may still run: the executor re-checks right before acting.
    starts = [StartContainer(VMID, "srv-px1", "stopped outside the operator: starting it again")]
    run = PolicyExecutor(
        client,
        PolicyIdentity("apps", "web", IDENTITY.uid, IDENTITY.vmid_range, KEY),
        limiter=__import__("threading").BoundedSemaphore(1),
        max_workers=1,
        task_timeout_seconds=30,
        now_rfc3339=lambda: "2026-11-23T12:00:00Z",
    )
    (outcome,) = run.apply(starts, BLUEPRINT)
    assert outcome.skipped and "still being created" in outcome.message
    api = sim.proxmox()
    assert not api.nodes("srv-px1").tasks.get(vmid=VMID, typefilter="vzstart", source="all")

    sim.cluster.advance_clock(2)  # the create ends
    assert api.nodes("srv-px1").lxc(VMID).config.get().get("lock") is None
