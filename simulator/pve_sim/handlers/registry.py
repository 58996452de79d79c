"""The route table: (HTTP method, PVE path template) -> handler, declared permission, proxying.

Each endpoint module registers its handlers with :func:`route`, stating what PVE's method
declaration states: the ``permissions => {check => [...]}`` the API daemon checks before the handler
runs (``None`` for ``user => 'all'``, where the handler checks or filters itself), and whether the
call is ``proxyto => 'node'`` (forwarded to the node in the URL, so an unknown node is a hostname
lookup failure and an offline node a 595).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pve_sim.errors import permission_denied

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

Handler = Callable[["SimCluster", "Request"], object]


@dataclass(frozen=True)
class Perm:
    """``['perm', path, [privs], any => 0|1, require_param => name]``; ``path`` may name parameters:
    ``/vms/{vmid}``. With ``require_param``, a request without that parameter fails the check."""

    path: str
    privileges: tuple[str, ...]
    any_of: bool = False
    require_param: str | None = None


@dataclass(frozen=True)
class AllOf:
    """``['and', check, ...]``: every check must pass; the first failing one raises its own 403."""

    checks: tuple[PermCheck, ...]


@dataclass(frozen=True)
class AnyOf:
    """``['or', check, ...]``: one check must pass, else a bare 403 ``Permission check failed``."""

    checks: tuple[PermCheck, ...]


PermCheck = Perm | AllOf | AnyOf


def exec_perm_check(cluster: SimCluster, check: PermCheck, authid: str, params: Mapping[str, object]) -> bool:
    """pve-access-control ``PVE::RPCEnvironment::exec_api2_perm_check`` with ``$noerr``: True when
    the check passes (the raising variant is :meth:`Route.check_permission`)."""
    if isinstance(check, AllOf):
        return all(exec_perm_check(cluster, sub, authid, params) for sub in check.checks)
    if isinstance(check, AnyOf):
        return any(exec_perm_check(cluster, sub, authid, params) for sub in check.checks)
    if check.require_param is not None and perl_text(params.get(check.require_param)) is None:
        return False
    path = perm_path(check.path, params)
    return cluster.access.allowed(authid, path, check.privileges, any_of=check.any_of)


def _raise_perm_check(cluster: SimCluster, check: PermCheck, authid: str, params: Mapping[str, object]) -> None:
    """``exec_api2_perm_check`` without ``$noerr``: ``and`` raises the first failing sub-check's
    error, ``or`` and a missing ``require_param`` a bare ``raise_perm_exc()``, ``perm`` names the
    path and privilege."""
    if isinstance(check, AllOf):
        for sub in check.checks:
            _raise_perm_check(cluster, sub, authid, params)
        return
    if isinstance(check, AnyOf):
        if not exec_perm_check(cluster, check, authid, params):
            raise permission_denied()
        return
    if check.require_param is not None and perl_text(params.get(check.require_param)) is None:
        raise permission_denied()
    path = perm_path(check.path, params)
    cluster.access.check(authid, path, check.privileges, any_of=check.any_of)


@dataclass(frozen=True)
class Route:
    """One endpoint: its handler, the permission check declared for it, and whether it is proxied."""

    method: str
    template: str
    handler: Handler
    perm: PermCheck | None
    proxy: bool

    def check_permission(self, cluster: SimCluster, request: Request) -> None:
        """``check_api2_permissions``: root@pam passes; ``user => 'all'`` passes; else the check."""
        if request.is_root or self.perm is None:
            return
        _raise_perm_check(cluster, self.perm, request.authid, request.params)


ROUTES: dict[tuple[str, str], Route] = {}
"""Every endpoint the simulator serves, keyed by (method, path template)."""


def route(
    method: str, template: str, *, perm: PermCheck | None = None, proxy: bool = False
) -> Callable[[Handler], Handler]:
    """Register a handler for ``method`` ``template``."""

    def register(handler: Handler) -> Handler:
        key = (method, template)
        if key in ROUTES:
            raise RuntimeError(f"duplicate route {method} {template}")
        ROUTES[key] = Route(method, template, handler, perm, proxy)
        return handler

    return register


_TEMPLATE_RE = re.compile(r"([^{]+)?(\{([^}]+)\})?")
_ACL_PATH_RE = re.compile(r"^[A-Za-z0-9.\-_/]+$")


def perm_path(template: str, params: Mapping[str, object]) -> str:
    """The ACL path a declared check names, filled from the request's parameters as PVE does.

    pve-access-control ``PVE::RPCEnvironment::exec_api2_perm_check`` fills the template with
    pve-common ``PVE::Tools::template_replace`` -- ``$data->{$name} || '-'``, so a missing, empty
    or ``0`` parameter becomes ``-`` -- and then ``PVE::AccessControl::normalize_path`` folds
    repeated and trailing slashes; a path with other characters than ``[[:alnum:].-_/]`` (say a
    stringified Perl array ``ARRAY(0x..)``) normalizes to undef, which holds no privilege and is
    printed empty in the 403 (``Permission check failed (, Pool.Allocate)``). ``params`` are the
    URI, query, form and JSON-body parameters merged as ``rest_handler`` merges them (values as
    Perl sees them: see :func:`perl_text`).
    """
    if "{" not in template:
        return template
    filled = ""
    for match in _TEMPLATE_RE.finditer(template):
        if match.group(1):
            filled += match.group(1)
        if match.group(2):
            value = perl_text(params.get(match.group(3)))
            filled += value if value not in (None, "", "0") else "-"
    return normalize_acl_path(filled) or ""


def normalize_acl_path(path: str) -> str | None:
    """pve-access-control ``PVE::AccessControl::normalize_path`` (None = Perl's undef)."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path)
    path = path.removesuffix("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if _ACL_PATH_RE.match(path) else None


def perl_text(value: object) -> str | None:
    """A parameter value as Perl stringifies it (None = undef).

    JSON booleans are ``1``/``0``, numbers print like Perl's ``%.15g``, repeated form keys and
    JSON arrays/objects are references (``ARRAY(0x...)``, ``HASH(0x...)``); form values arrive as
    lists of strings (one per occurrence; an empty value is undef, as in pve-http-server
    ``decode_urlencoded``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        return format(value, ".15g")
    if isinstance(value, list | tuple):
        folded: list[object] = []
        for item in value:
            if item is None or item == "":
                folded = []  # decode_urlencoded: an empty value replaces what came before
            else:
                folded.append(item)
        if not folded:
            return None
        if len(folded) == 1 and not isinstance(folded[0], list | tuple | dict):
            return perl_text(folded[0])
        return "ARRAY(0x0)"
    return "HASH(0x0)"
