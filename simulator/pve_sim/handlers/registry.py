"""The route table: (HTTP method, PVE path template) -> handler, declared permission, proxying.

Each endpoint module registers its handlers with :func:`route`, stating what PVE's method
declaration states: the ``permissions => {check => [...]}`` the API daemon checks before the handler
runs (``None`` for ``user => 'all'``, where the handler checks or filters itself), and whether the
call is ``proxyto => 'node'`` (forwarded to the node in the URL, so an unknown node is a hostname
lookup failure and an offline node a 595).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

Handler = Callable[["SimCluster", "Request"], object]


@dataclass(frozen=True)
class Perm:
    """``['perm', path, [privs], any => 0|1]``; ``path`` may name parameters: ``/vms/{vmid}``."""

    path: str
    privileges: tuple[str, ...]
    any_of: bool = False


@dataclass(frozen=True)
class Route:
    """One endpoint: its handler, the permission check declared for it, and whether it is proxied."""

    method: str
    template: str
    handler: Handler
    perm: Perm | None
    proxy: bool

    def check_permission(self, cluster: SimCluster, request: Request) -> None:
        """``check_api2_permissions``: root@pam passes; ``user => 'all'`` passes; else the check."""
        if request.is_root or self.perm is None:
            return
        path = self.perm.path
        if "{" in path:
            path = path.format_map(_Missing({key: _text(value) for key, value in request.params.items()}))
        cluster.access.check(request.authid, path, self.perm.privileges, any_of=self.perm.any_of)


ROUTES: dict[tuple[str, str], Route] = {}
"""Every endpoint the simulator serves, keyed by (method, path template)."""


def route(method: str, template: str, *, perm: Perm | None = None, proxy: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler for ``method`` ``template``."""

    def register(handler: Handler) -> Handler:
        key = (method, template)
        if key in ROUTES:
            raise RuntimeError(f"duplicate route {method} {template}")
        ROUTES[key] = Route(method, template, handler, perm, proxy)
        return handler

    return register


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
