"""A small client for the simulator's ``/_sim`` admin endpoint.

For tests, benchmarks and the demo when the simulator runs as a separate process (``pve-sim
serve``); in-process users can call the ``SimCluster`` directly instead. It verifies TLS with the
simulator's CA file, like every other client of the simulator, and raises :class:`SimAdminError`
with the server's message on any non-2xx answer.

``SimAdminClient.from_state_file(path)`` reads the JSON that ``pve-sim serve --state-file`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

ADMIN_PATH = "/_sim"


class SimAdminError(Exception):
    """The admin endpoint refused a request: HTTP ``status`` and the simulator's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class SimAdminClient:
    """Steer a running simulator: state, usage and load, node outages, faults, the clock.

    ``url`` is the server root (``https://127.0.0.1:8006``; a trailing ``/api2/json`` is ignored),
    ``ca_path`` the simulator's CA certificate, ``token`` the admin token it printed.
    """

    def __init__(self, url: str, ca_path: str | Path, token: str, *, timeout: float = 30.0) -> None:
        base = url.rstrip("/")
        if base.endswith("/api2/json"):
            base = base[: -len("/api2/json")]
        self.base_url = base + ADMIN_PATH
        self.timeout = timeout
        self._ca_path = str(ca_path)
        self._session = requests.Session()
        # Loopback only: no proxies from the environment, and no REQUESTS_CA_BUNDLE, which requests
        # would otherwise prefer over a session's own `verify`.
        self._session.trust_env = False
        self._session.verify = self._ca_path
        self._session.headers["Authorization"] = f"SimAdmin {token}"

    @classmethod
    def from_state_file(cls, path: str | Path, *, timeout: float = 30.0) -> SimAdminClient:
        """Connect using the JSON written by ``pve-sim serve --state-file``."""
        details = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(details["url"], details["caPath"], details["adminToken"], timeout=timeout)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SimAdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the token
        return f"SimAdminClient({self.base_url!r})"

    # -- transport --------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._session.request(
            method,
            self.base_url + path,
            json=body if body is not None else None,
            timeout=self.timeout,
            verify=self._ca_path,
        )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 300:
            message = payload.get("message") if isinstance(payload, dict) else None
            raise SimAdminError(response.status_code, str(message or response.reason))
        if not isinstance(payload, dict) or "data" not in payload:
            raise SimAdminError(response.status_code, "malformed admin answer (no 'data')")
        return payload["data"]

    # -- state and usage --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The whole simulated cluster (nodes, CTs, tasks, faults, clock) as the simulator sees it."""
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def container_usage(self, vmid: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/containers/{int(vmid)}/usage")
        return result

    def set_container_usage(self, vmid: int, metric: str, profile: object) -> dict[str, Any]:
        """Give CT ``vmid`` a usage profile for ``metric`` (cpu, memory or disk), e.g. ``0.8`` or
        ``{"type": "ramp", "from": 0.2, "to": 0.9, "start": 0, "end": 300}``."""
        result: dict[str, Any] = self._call(
            "POST", f"/containers/{int(vmid)}/usage", {"metric": metric, "profile": profile}
        )
        return result

    def node_usage(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/nodes/{node}/usage")
        return result

    def set_node_load(self, node: str, metric: str, profile: object) -> dict[str, Any]:
        """Set the load a node carries outside its CTs (the host's own use) for ``metric``."""
        result: dict[str, Any] = self._call("POST", f"/nodes/{node}/load", {"metric": metric, "profile": profile})
        return result

    def set_node_offline(self, node: str) -> None:
        """API calls proxied to ``node`` answer 595 until it is back online."""
        self._call("POST", f"/nodes/{node}/offline")

    def set_container_ignores_shutdown(self, vmid: int, ignores: bool = True) -> None:
        """Make CT ``vmid`` ignore (or obey again) a clean shutdown, as a CT whose init does."""
        self._call("POST", f"/containers/{int(vmid)}/ignores-shutdown", {"ignores": ignores})

    def set_node_online(self, node: str) -> None:
        self._call("POST", f"/nodes/{node}/online")

    # -- faults -----------------------------------------------------------------------------------

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/faults")
        return result

    def add_request_fault(
        self,
        path: str,
        status: int,
        message: str,
        *,
        method: str | None = None,
        count: int = 1,
        empty_body: bool | None = None,
    ) -> None:
        """Answer the next ``count`` API requests whose path matches the regex ``path`` with an error.

        ``empty_body`` defaults to PVE's shape: no body for 59x, a JSON error body otherwise.
        """
        body: dict[str, Any] = {"path": path, "status": status, "message": message, "count": count}
        if empty_body is not None:
            body["emptyBody"] = empty_body
        if method is not None:
            body["method"] = method
        self._call("POST", "/faults/requests", body)

    def fail_tasks(self, task_type: str, message: str, count: int = 1) -> None:
        """Make the next ``count`` tasks of ``task_type`` (``vzstart``, ``vzmigrate``…) fail."""
        self._call("POST", "/faults/tasks", {"type": task_type, "message": message, "count": count})

    def set_latency(self, seconds: float, path: str | None = None) -> None:
        """Delay API requests (those whose path matches ``path``, or all) by ``seconds`` real time."""
        body: dict[str, Any] = {"seconds": seconds}
        if path is not None:
            body["path"] = path
        self._call("POST", "/faults/latency", body)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # -- datacenter.cfg ---------------------------------------------------------------------------

    def datacenter_options(self) -> dict[str, Any]:
        """datacenter.cfg as ``GET /cluster/options`` shows it to root (without ``allowed-tags``)."""
        result: dict[str, Any] = self._call("GET", "/datacenter/options")
        return result

    def set_datacenter_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Replace the datacenter.cfg options; ``options`` as a scenario's ``cluster.options``
        (``{"userTagAccess": {"userAllow": "list", "userAllowList": [...]}, "registeredTags": [...]}``)."""
        result: dict[str, Any] = self._call("POST", "/datacenter/options", options)
        return result

    # -- clock ------------------------------------------------------------------------------------

    def clock(self) -> dict[str, Any]:
        """``{"now": epoch, "elapsed": seconds, "timeScale": x, "frozen": bool}``."""
        result: dict[str, Any] = self._call("GET", "/clock")
        return result

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock/advance", {"seconds": seconds})
        return result

    def freeze_clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock/freeze")
        return result

    def resume_clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock/resume")
        return result

    def set_time_scale(self, time_scale: float) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock/scale", {"timeScale": time_scale})
        return result
