"""PVE wire parameters for a CT: the blueprint the operator creates CTs from, as PVE wants it.

``net0`` and ``rootfs`` are PVE property strings; booleans are 1/0; ``unprivileged`` is always sent
(PVE 8 defaults to privileged, PVE 9 to unprivileged); tags are ``;``-joined (PVE normalises them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NetworkInterface:
    name: str = "eth0"
    bridge: str = "vmbr0"
    #: ``dhcp``, ``manual`` or a CIDR such as ``10.0.0.5/24``.
    ip: str = "dhcp"
    gateway: str | None = None
    vlan: int | None = None
    firewall: bool = False


@dataclass(frozen=True)
class ContainerBlueprint:
    """Everything a new CT of a policy has in common; the index-specific parts come per CT."""

    ostemplate: str
    memory_mib: int
    swap_mib: int
    cores: int
    rootfs_storage: str
    rootfs_gib: int
    networks: Sequence[NetworkInterface] = ()
    unprivileged: bool = True
    nesting: bool = False
    tags: frozenset[str] = frozenset()
    pool: str | None = None
    start_on_create: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def net_property(nic: NetworkInterface) -> str:
    parts = [f"name={nic.name}", f"bridge={nic.bridge}", f"ip={nic.ip}"]
    if nic.gateway:
        parts.append(f"gw={nic.gateway}")
    if nic.vlan is not None:
        parts.append(f"tag={nic.vlan}")
    if nic.firewall:
        parts.append("firewall=1")
    return ",".join(parts)


def create_params(
    blueprint: ContainerBlueprint, *, hostname: str, description: str, tags: frozenset[str]
) -> dict[str, Any]:
    """The body of ``POST /nodes/{node}/lxc`` (without ``vmid``; the CT is started separately)."""
    params: dict[str, Any] = {
        "ostemplate": blueprint.ostemplate,
        "hostname": hostname,
        "memory": blueprint.memory_mib,
        "swap": blueprint.swap_mib,
        "cores": blueprint.cores,
        "rootfs": f"{blueprint.rootfs_storage}:{blueprint.rootfs_gib}",
        "unprivileged": 1 if blueprint.unprivileged else 0,
        "tags": ";".join(sorted(tags | blueprint.tags)),
        "description": description,
        "start": 0,
    }
    if blueprint.nesting:
        params["features"] = "nesting=1"
    for i, nic in enumerate(blueprint.networks):
        params[f"net{i}"] = net_property(nic)
    if blueprint.pool:
        params["pool"] = blueprint.pool
    params.update(blueprint.extra)
    return params
