"""Small builders for planner fixtures, with keyword overrides (descheduler's BuildTestNode style)."""

from __future__ import annotations

from pve_operator.planning.model import ContainerObservation, ContainerStatus, NodeUsage

GIB = 1024**3
MIB = 1024**2


def build_node(
    name: str,
    *,
    online: bool = True,
    cores: float = 8,
    cpu: float = 0.05,
    memory_gib: float = 32,
    memory_used_gib: float = 2,
    disk_gib: float = 400,
    disk_used_gib: float = 20,
) -> NodeUsage:
    return NodeUsage(
        name=name,
        online=online,
        cpu_cores=cores,
        cpu_used_fraction=cpu,
        memory_total_bytes=int(memory_gib * GIB),
        memory_used_bytes=int(memory_used_gib * GIB),
        disk_total_bytes=int(disk_gib * GIB),
        disk_used_bytes=int(disk_used_gib * GIB),
    )


def build_ct(
    vmid: int,
    node: str,
    *,
    status: ContainerStatus = ContainerStatus.RUNNING,
    tags: frozenset[str] = frozenset(),
    memory_mib: int = 2048,
    memory_used_mib: int = 1024,
    cores: float = 1,
    cpu: float = 0.1,
    disk_gib: float = 8,
    disk_used_gib: float = 2,
    lock: str | None = None,
    name: str = "",
) -> ContainerObservation:
    return ContainerObservation(
        vmid=vmid,
        node=node,
        status=status,
        name=name or f"ct{vmid}",
        tags=tags,
        lock=lock,
        cpu_cores=cores,
        cpu_used_fraction=cpu,
        memory_limit_bytes=memory_mib * MIB,
        memory_used_bytes=memory_used_mib * MIB if status is ContainerStatus.RUNNING else 0,
        disk_limit_bytes=int(disk_gib * GIB),
        disk_used_bytes=int(disk_used_gib * GIB),
    )
