"""The simulator's admin endpoint: ``/_sim/...`` on the API port, JSON in and out.

This is how tests, benchmarks and the demo steer a simulator that runs in another process: read
the whole state, set CT usage profiles and node load, take nodes offline, inject request and task
faults or latency, and drive the simulated clock. It is not part of the PVE API, so it lives
outside ``/api2`` and has its own credential: a random admin token generated at start, sent as
``Authorization: SimAdmin <token>``. PVE tickets and API tokens are not accepted here, so a client
holding only PVE credentials cannot steer the simulation.

Answers use PVE's envelope shape so one client helper reads both: ``{"data": ...}`` on success,
``{"data": null, "message": "..."}`` on error, with 400 for bad input, 401 for a missing or
wrong admin token, 404 for an unknown node or CT, and 501 for an unknown admin route.

Routes (bodies are JSON objects, camelCase keys)::

    GET    /_sim/state                                  the cluster's state_dump()
    GET    /_sim/clock                                  {now, elapsed, timeScale, frozen}
    POST   /_sim/clock/advance   {seconds}              move simulated time forward
    POST   /_sim/clock/freeze | /_sim/clock/resume      stop / restart the clock
    POST   /_sim/clock/scale     {timeScale}            real seconds per simulated second
    GET    /_sim/containers/{vmid}/usage                current usage of one CT (with its PSI figures)
    POST   /_sim/containers/{vmid}/usage {metric, profile}
    GET    /_sim/nodes/{node}/usage                     current usage of one node (uncapped demand, PSI)
    POST   /_sim/nodes/{node}/load {metric, profile}    the node's base load (outside any CT)
    POST   /_sim/nodes/{node}/offline | /online         595 for that node's API calls, or back
    GET    /_sim/faults                                 armed faults and latency rules
    POST   /_sim/faults/requests {method?, path, status, message, count?, emptyBody?}
                                                        (emptyBody defaults to true for 59x)
    POST   /_sim/faults/tasks    {type, message, count?}
    POST   /_sim/faults/latency  {seconds, path?}
    DELETE /_sim/faults                                 clear every fault and latency rule
    GET    /_sim/datacenter/options                     datacenter.cfg as GET /cluster/options shows it
    POST   /_sim/datacenter/options {userTagAccess?, registeredTags?, crs?}
                                                        replace them (scenario ``cluster.options``)
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from .access import DatacenterOptions
from .cluster import SimCluster
from .errors import PveApiError
from .load import parse_profile
from .scenario import DatacenterOptionsSpec

log = logging.getLogger("pve_sim.admin")

ADMIN_AUTH_SCHEME = "SimAdmin"
METRICS = ("cpu", "memory", "disk")


class AdminError(Exception):
    """An admin request that cannot be served: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Body = Mapping[str, Any]
Handler = Callable[[re.Match[str], Body], object]


def _require(body: Body, key: str) -> Any:
    if key not in body or body[key] is None:
        raise AdminError(400, f"missing field '{key}'")
    return body[key]


def _number(body: Body, key: str, *, default: float | None = None, minimum: float | None = None) -> float:
    value = body.get(key, default)
    if value is None:
        raise AdminError(400, f"missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AdminError(400, f"field '{key}' must be a number")
    if minimum is not None and value < minimum:
        raise AdminError(400, f"field '{key}' must be >= {minimum:g}")
    return float(value)


def _integer(body: Body, key: str, *, default: int | None = None, minimum: int | None = None) -> int:
    value = body.get(key, default)
    if value is None:
        raise AdminError(400, f"missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(400, f"field '{key}' must be an integer")
    if minimum is not None and value < minimum:
        raise AdminError(400, f"field '{key}' must be >= {minimum}")
    return value


def _text(body: Body, key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise AdminError(400, f"missing field '{key}'")
    if not isinstance(value, str):
        raise AdminError(400, f"field '{key}' must be a string")
    return value


def _regex(body: Body, key: str, *, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AdminError(400, f"field '{key}' must be a regular expression string")
    try:
        re.compile(value)
    except re.error as exc:
        raise AdminError(400, f"field '{key}' is not a valid regular expression: {exc}") from None
    return value


def _metric(body: Body) -> str:
    metric = _text(body, "metric")
    if metric not in METRICS:
        raise AdminError(400, f"field 'metric' must be one of {', '.join(METRICS)}")
    return metric


def _profile(body: Body) -> Any:
    raw = _require(body, "profile")
    try:
        return parse_profile(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'profile'}: {err['msg']}" for err in exc.errors()
        )
        raise AdminError(400, f"invalid profile - {problems}") from None


class AdminApi:
    """Routes ``/_sim`` requests to the cluster's control methods. Thread-safe as the cluster is."""

    def __init__(self, cluster: SimCluster, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        self._cluster = cluster
        self._token = token
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"^/state$"), self._state),
            ("GET", re.compile(r"^/clock$"), self._clock),
            ("POST", re.compile(r"^/clock/advance$"), self._clock_advance),
            ("POST", re.compile(r"^/clock/freeze$"), self._clock_freeze),
            ("POST", re.compile(r"^/clock/resume$"), self._clock_resume),
            ("POST", re.compile(r"^/clock/scale$"), self._clock_scale),
            ("GET", re.compile(r"^/containers/(?P<vmid>[0-9]{1,9})/usage$"), self._container_usage),
            ("POST", re.compile(r"^/containers/(?P<vmid>[0-9]{1,9})/usage$"), self._set_container_usage),
            (
                "POST",
                re.compile(r"^/containers/(?P<vmid>[0-9]{1,9})/ignores-shutdown$"),
                self._set_container_ignores_shutdown,
            ),
            ("GET", re.compile(r"^/nodes/(?P<node>[^/]+)/usage$"), self._node_usage),
            ("POST", re.compile(r"^/nodes/(?P<node>[^/]+)/load$"), self._set_node_load),
            ("POST", re.compile(r"^/nodes/(?P<node>[^/]+)/(?P<state>offline|online)$"), self._node_online),
            ("GET", re.compile(r"^/faults$"), self._faults),
            ("POST", re.compile(r"^/faults/requests$"), self._fault_requests),
            ("POST", re.compile(r"^/faults/tasks$"), self._fault_tasks),
            ("POST", re.compile(r"^/faults/latency$"), self._fault_latency),
            ("DELETE", re.compile(r"^/faults$"), self._faults_clear),
            ("GET", re.compile(r"^/datacenter/options$"), self._datacenter_options),
            ("POST", re.compile(r"^/datacenter/options$"), self._set_datacenter_options),
        ]

    def authorized(self, authorization: str | None) -> bool:
        """True when the header is ``SimAdmin <token>`` with this server's token."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme != ADMIN_AUTH_SCHEME:
            return False
        return hmac.compare_digest(value.strip().encode("utf-8", "replace"), self._token.encode("utf-8"))

    def handle(
        self, method: str, path: str, body: bytes, authorization: str | None
    ) -> tuple[int, dict[str, object]]:
        """(HTTP status, JSON payload) for one admin request; never raises."""
        try:
            if not self.authorized(authorization):
                raise AdminError(401, "admin token required (Authorization: SimAdmin <token>)")
            for route_method, pattern, handler in self._routes:
                match = pattern.match(path)
                if match is not None and route_method == method:
                    return 200, {"data": handler(match, self._decode(body))}
            raise AdminError(501, f"no such admin endpoint '{method} /_sim{path}'")
        except AdminError as exc:
            return exc.status, {"data": None, "message": exc.message}
        except PveApiError as exc:
            return exc.status, {"data": None, "message": exc.message}
        except KeyError as exc:
            return 404, {"data": None, "message": f"not found: {exc.args[0] if exc.args else exc}"}
        except ValueError as exc:
            return 400, {"data": None, "message": str(exc)}
        except Exception:
            log.exception("admin request %s /_sim%s failed", method, path)
            return 500, {"data": None, "message": "pve_sim internal error (see the simulator log)"}

    @staticmethod
    def _decode(body: bytes) -> Body:
        if not body.strip():
            return {}
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AdminError(400, f"the body must be a JSON object ({exc})") from None
        if not isinstance(decoded, dict):
            raise AdminError(400, "the body must be a JSON object")
        return decoded

    # -- handlers ---------------------------------------------------------------------------------

    def _state(self, _m: re.Match[str], _b: Body) -> object:
        return self._cluster.state_dump()

    def _clock(self, _m: re.Match[str], _b: Body) -> object:
        clock = self._cluster.clock
        return {
            "now": clock.now(),
            "elapsed": clock.elapsed(),
            "timeScale": clock.time_scale,
            "frozen": clock.frozen,
        }

    def _clock_advance(self, m: re.Match[str], body: Body) -> object:
        self._cluster.advance_clock(_number(body, "seconds", minimum=0))
        return self._clock(m, body)

    def _clock_freeze(self, m: re.Match[str], body: Body) -> object:
        self._cluster.clock.freeze()
        return self._clock(m, body)

    def _clock_resume(self, m: re.Match[str], body: Body) -> object:
        self._cluster.clock.resume()
        return self._clock(m, body)

    def _clock_scale(self, m: re.Match[str], body: Body) -> object:
        self._cluster.clock.set_time_scale(_number(body, "timeScale", minimum=0))
        return self._clock(m, body)

    def _container_usage(self, m: re.Match[str], _b: Body) -> object:
        return self._cluster.container_usage(int(m.group("vmid")))

    def _set_container_usage(self, m: re.Match[str], body: Body) -> object:
        vmid = int(m.group("vmid"))
        self._cluster.set_container_usage(vmid, _metric(body), _profile(body))
        return self._cluster.container_usage(vmid)

    def _set_container_ignores_shutdown(self, m: re.Match[str], body: Body) -> object:
        vmid = int(m.group("vmid"))
        ignores = body.get("ignores", True)
        if not isinstance(ignores, bool):
            raise AdminError(400, "ignores: must be true or false")
        self._cluster.set_container_ignores_shutdown(vmid, ignores)
        return {"vmid": vmid, "ignoresShutdown": ignores}

    def _node_usage(self, m: re.Match[str], _b: Body) -> object:
        return self._cluster.node_usage(m.group("node"))

    def _set_node_load(self, m: re.Match[str], body: Body) -> object:
        node = m.group("node")
        self._cluster.set_node_load(node, _metric(body), _profile(body))
        return self._cluster.node_usage(node)

    def _node_online(self, m: re.Match[str], _b: Body) -> object:
        online = m.group("state") == "online"
        self._cluster.set_node_online(m.group("node"), online)
        return {"node": m.group("node"), "online": online}

    def _faults(self, _m: re.Match[str], _b: Body) -> object:
        return self._cluster.faults.describe()

    def _fault_requests(self, m: re.Match[str], body: Body) -> object:
        method = body.get("method")
        if method is not None and not isinstance(method, str):
            raise AdminError(400, "field 'method' must be a string")
        path = _regex(body, "path")
        if path is None:
            raise AdminError(400, "missing field 'path'")
        status = _integer(body, "status", minimum=400)
        if status > 599:
            raise AdminError(400, "field 'status' must be <= 599")
        # PVE's 59x (pveproxy failing to reach a node) never have a body; other errors do.
        empty_body = body.get("emptyBody", status >= 595)
        if not isinstance(empty_body, bool):
            raise AdminError(400, "field 'emptyBody' must be a boolean")
        self._cluster.faults.add_request_fault(
            method=method.upper() if method else None,
            path_regex=path,
            status=status,
            message=_text(body, "message"),
            count=_integer(body, "count", default=1, minimum=1),
            empty_body=empty_body,
        )
        return self._faults(m, body)

    def _fault_tasks(self, m: re.Match[str], body: Body) -> object:
        self._cluster.fail_tasks(
            _text(body, "type"), _text(body, "message"), _integer(body, "count", default=1, minimum=1)
        )
        return self._faults(m, body)

    def _fault_latency(self, m: re.Match[str], body: Body) -> object:
        self._cluster.faults.set_latency(_number(body, "seconds", minimum=0), _regex(body, "path"))
        return self._faults(m, body)

    def _faults_clear(self, m: re.Match[str], body: Body) -> object:
        self._cluster.faults.clear()
        return self._faults(m, body)

    def _datacenter_options(self, _m: re.Match[str], _b: Body) -> object:
        return self._cluster.access.datacenter.as_config()

    def _set_datacenter_options(self, m: re.Match[str], body: Body) -> object:
        """Replace the datacenter.cfg options with ``body`` (the scenario's ``cluster.options``)."""
        try:
            spec = DatacenterOptionsSpec.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}" for err in exc.errors()
            )
            raise AdminError(400, f"invalid datacenter options - {problems}") from None
        self._cluster.access.datacenter = DatacenterOptions.from_spec(spec)
        return self._datacenter_options(m, body)
