"""CTs managed by Proxmox VE's HA stack: when a task's "OK" does not mean "done".

For a CT that is an HA resource (``ha-manager add ct:<vmid>``), PVE answers start, stop, shutdown and
migrate with ``hastart``/``hastop``/``hamigrate`` tasks that only write the requested state into the
HA manager's configuration (pve-container ``src/PVE/API2/LXC/Status.pm`` ``vm_start``/``vm_stop``/
``vm_shutdown`` and ``src/PVE/API2/LXC.pm`` ``migrate_vm`` call ``PVE::HA::Config::service_is_ha_managed``
and hand over to ``ha-manager crm-command``/``set``); the HA manager acts on its next round (about 10 s)
with its own ``vzstart``/``vzshutdown``/``vzmigrate`` tasks. A destroy right after such a stop can fail
with ``CT is running`` (or PVE's ``unable to destroy running container``).

:func:`wait_done` waits for the task and then, for an HA request, for the CT to reach what was asked: its
node in ``/cluster/resources``, its state in its own ``status/current`` (``/cluster/resources`` reports
states seconds late), with a deadline: :class:`PveHaNotConverging` when the HA manager does not follow
(its resource ``disabled`` or in ``error``, the cluster without quorum, fencing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from pve_operator.pve.errors import PveConflict, PveError
from pve_operator.pve.tasks import TaskResult, Upid

#: Task types that only hand a request to the HA manager (pve-container's ``ha*`` workers).
HA_REQUEST_TASKS = frozenset({"hastart", "hastop", "hamigrate", "harelocate"})

#: How long the HA manager may take to carry out a request once its task ended: several CRM rounds
#: (10 s each) plus the work itself (a restart migration of a large CT takes minutes).
#: ``PVE_OPERATOR_HA_CONVERGE_SECONDS`` overrides it.
HA_CONVERGE_SECONDS = float(os.environ.get("PVE_OPERATOR_HA_CONVERGE_SECONDS") or 600.0)


class PveHaNotConverging(PveError):
    """PVE accepted an HA request, but the CT did not reach the requested state by the deadline."""


class _Client(Protocol):
    def wait(self, upid: str, *, timeout_seconds: float) -> TaskResult: ...

    def cluster_resources(self) -> list[dict[str, Any]]: ...

    def container_status(self, node: str, vmid: int) -> dict[str, Any]: ...

    def start_container(self, node: str, vmid: int) -> str: ...


def ct_resource(client: _Client, vmid: int) -> dict[str, Any] | None:
    """The CT's ``/cluster/resources`` entry, or None when it is gone."""
    for entry in client.cluster_resources():
        if entry.get("type") == "lxc" and int(entry.get("vmid", -1)) == vmid:
            return entry
    return None


def wait_done(
    client: _Client,
    upid: str,
    *,
    vmid: int,
    timeout_seconds: float,
    status: str | None = None,
    node: str | None = None,
    converge_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> TaskResult:
    """Wait for the task; for an HA request also until ``/cluster/resources`` shows the CT with
    ``status`` (``running``/``stopped``) on ``node`` (each when given). A CT that is gone meanwhile
    counts as done (its stop or its move no longer matters). Raises what ``client.wait`` raises, and
    :class:`PveHaNotConverging` after ``converge_seconds`` (default :data:`HA_CONVERGE_SECONDS`)."""
    result = client.wait(upid, timeout_seconds=timeout_seconds)
    converge_seconds = HA_CONVERGE_SECONDS if converge_seconds is None else converge_seconds
    if result.upid.type not in HA_REQUEST_TASKS or (status is None and node is None):
        return result
    started, delay = monotonic(), 0.5
    while not _carried_out(
        client, result.upid.type, vmid, status=status, node=node, waited=monotonic() - started, limit=converge_seconds
    ):
        sleep(delay)
        delay = min(delay * 2, 5.0)
    return result


def ha_request_pending(
    client: _Client, upid: Upid, vmid: int, *, status: str | None = None, node: str | None = None, now: float
) -> bool:
    """For a task that ended OK, one look without waiting: True while it was an HA request the HA manager has
    not carried out yet (the CT ``status`` in its own ``status/current``, on ``node`` in ``/cluster/resources``)
    and still has time (:data:`HA_CONVERGE_SECONDS` from the request, ``now`` in epoch seconds); raises
    :class:`PveHaNotConverging` after that. False for any other task, and for a CT that is gone."""
    if upid.type not in HA_REQUEST_TASKS or (status is None and node is None):
        return False
    waited = now - upid.starttime
    return not _carried_out(client, upid.type, vmid, status=status, node=node, waited=waited, limit=HA_CONVERGE_SECONDS)


def _carried_out(
    client: _Client, request: str, vmid: int, *, status: str | None, node: str | None, waited: float, limit: float
) -> bool:
    """One look: whether the CT is ``status`` on ``node`` (each when given), or gone (its stop or its move no
    longer matters). Not yet after ``limit`` seconds: :class:`PveHaNotConverging`."""
    entry = ct_resource(client, vmid)
    if entry is None:
        return True
    # The node comes from the cluster's config list (moves show at once); the status from the CT's own
    # node: /cluster/resources reports it as pvestatd last broadcast it, seconds behind.
    here = str(entry.get("node") or "")
    state = str(client.container_status(here, vmid).get("status") or "") if status is not None else ""
    if (status is None or state == status) and (node is None or here == node):
        return True
    if waited < limit:
        return False
    wanted = " and ".join(part for part in (status, f"on {node}" if node else None) if part)
    raise PveHaNotConverging(
        f"CT {vmid} is managed by Proxmox VE's HA stack: its {request} request was accepted, but after "
        f"{limit:.0f} s the CT is {state or 'unknown'} on {here} (hastate {entry.get('hastate') or 'unknown'}), "
        f"not {wanted}; check `ha-manager status` (a disabled or failed resource, no quorum or a fence in "
        "progress keeps the HA manager from acting)",
        request=f"HA request {request} for ct:{vmid}",
    )


def start_and_wait(client: _Client, node: str, vmid: int, *, timeout_seconds: float) -> None:
    """Start the CT and wait until it runs (through the HA manager when it is HA-managed); a CT already
    running is fine (PVE's ``CT ... already running``)."""
    try:
        wait_done(
            client, client.start_container(node, vmid), vmid=vmid, timeout_seconds=timeout_seconds, status="running"
        )
    except PveConflict as exc:
        if not exc.already_running:
            raise
