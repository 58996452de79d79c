"""Helpers of the simulator tests that start PVE tasks through proxmoxer and look at them on a frozen clock."""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

from tests.fixtures.sim import SimTestServer


def refused(action: Any) -> ResourceException:
    """The error PVE answers ``action`` with (it must fail)."""
    with pytest.raises(ResourceException) as caught:
        action()
    return caught.value


def task_status(api: Any, upid: str) -> dict[str, Any]:
    result: dict[str, Any] = api.nodes(Tasks.decode_upid(upid)["node"]).tasks(upid).status.get()
    return result


def task_log(api: Any, upid: str) -> list[str]:
    return [line["t"] for line in api.nodes(Tasks.decode_upid(upid)["node"]).tasks(upid).log.get(limit=0)]


def finish(server: SimTestServer, api: Any, upid: str, seconds: float = 600) -> dict[str, Any]:
    """Advance the simulated clock until the task has surely ended; its final status."""
    server.cluster.advance_clock(seconds)
    status = task_status(api, upid)
    assert status["status"] == "stopped", status
    return status
