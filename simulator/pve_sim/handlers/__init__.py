"""The simulator's API endpoints, one module per area, registered in :data:`ROUTES`.

Handlers receive the :class:`~pve_sim.cluster.SimCluster` and a
:class:`~pve_sim.cluster.Request` (caller + validated, typed parameters) and return the JSON-able
``data`` of PVE's answer (or an :class:`~pve_sim.common.ApiResult` with ``total``), raising
:class:`~pve_sim.errors.PveApiError` with PVE's status and message. They never see HTTP.
"""

from pve_sim.handlers import access, clone, cluster, ha, lxc, migrate, move_volume, nodes, pools, tasks
from pve_sim.handlers.registry import ROUTES, Perm, Route, route

__all__ = [
    "ROUTES",
    "Perm",
    "Route",
    "access",
    "clone",
    "cluster",
    "ha",
    "lxc",
    "migrate",
    "move_volume",
    "nodes",
    "pools",
    "route",
    "tasks",
]
