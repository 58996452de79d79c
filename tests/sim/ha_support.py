"""Scenarios and helpers shared by the HA tests (``test_ha_*.py``): a three-node lab (HA needs
quorum after a node failure, which two nodes cannot keep) with HA-managed CTs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.core import ResourceException

from pve_sim.scenario import Scenario, parse_scenario

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
START = 1_750_000_000
NODES = ("srv-px1", "srv-px2", "srv-px3")


def ha_scenario(
    cts: dict[int, str] | None = None,
    *,
    ha: list[int] | None = None,
    rules: list[dict[str, Any]] | None = None,
    crs: dict[str, Any] | None = None,
    timing: dict[str, Any] | None = None,
    groups: list[dict[str, Any]] | None = None,
    resource_options: dict[int, dict[str, Any]] | None = None,
    nodes: tuple[str, ...] = NODES,
) -> Scenario:
    """The lab scenario with ``nodes``, CTs ``{vmid: node}`` (running, 2 cores, 2 GiB) and the
    given HA resources, rules, groups, datacenter ``crs`` and timing overrides."""
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    template_node = data["nodes"][0]
    data["nodes"] = [{**copy.deepcopy(template_node), "name": name} for name in nodes]
    data["cluster"]["startEpoch"] = START
    data["cluster"]["statsLagSeconds"] = 0
    data["containers"] = [
        {
            "vmid": vmid,
            "node": node,
            "hostname": f"ha-{vmid}",
            "status": "running",
            "memoryMiB": 2048,
            "cores": 2,
            "rootfs": {"storage": "local-lvm", "sizeGiB": 4},
        }
        for vmid, node in (cts or {}).items()
    ]
    options = resource_options or {}
    data["ha"] = {
        "resources": [{"sid": f"ct:{vmid}", **options.get(vmid, {})} for vmid in (ha or [])],
        "rules": rules or [],
        "groups": groups or [],
    }
    if crs is not None:
        data["cluster"]["options"] = {"crs": crs}
    if timing:
        data["timing"].update(timing)
    return parse_scenario(data, "ha-test")


def pve_error(call: Any, *args: Any, **kwargs: Any) -> ResourceException:
    """The ``ResourceException`` a proxmoxer call raises (the test fails if it succeeds)."""
    with pytest.raises(ResourceException) as caught:
        call(*args, **kwargs)
    return caught.value


def hastate(api: Any, vmid: int) -> tuple[str | None, str]:
    """(``hastate``, node) of a CT in ``/cluster/resources``."""
    for entry in api.cluster.resources.get(type="vm"):
        if entry["vmid"] == vmid:
            return entry.get("hastate"), entry["node"]
    raise AssertionError(f"CT {vmid} not in /cluster/resources")


def ha_log(server: Any) -> list[str]:
    """The HA manager's log lines (the CRM's syslog messages)."""
    return [line.message for line in server.cluster.ha.log]
