"""VMID ranges of policies that share a Proxmox VE cluster: which overlap, and which VMIDs they share.

PVE VMIDs are cluster-wide. Two policies whose ``vmidRange`` overlap on the same cluster would both
claim the shared VMIDs, and the index→VMID rule (CT number *i* has VMID ``start + i``) would break
for whichever creates second. The operator therefore creates no new CT in a shared part, and both
policies say so (``Degraded``, reason ``VmidRangeOverlap``) until one range is changed. CTs that
already exist stay with the policy whose ownership marks they carry.

Which policies share a cluster is decided by the caller (same pool, or pools with the same API
endpoint): this module only compares ranges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyVmidRange:
    """One policy's range, both ends included, and where it lives."""

    namespace: str
    name: str
    uid: str
    start: int
    end: int

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class VmidRangeOverlap:
    """The part of our range that another policy's range also covers, both ends included."""

    other: PolicyVmidRange
    start: int
    end: int

    @property
    def vmids(self) -> range:
        return range(self.start, self.end + 1)

    def describe(self) -> str:
        return (
            f"VMIDs {self.start}-{self.end} are also in the vmidRange of ContainerPolicy {self.other.label} "
            f"({self.other.start}-{self.other.end})"
        )


def find_overlaps(own: PolicyVmidRange, others: Iterable[PolicyVmidRange]) -> list[VmidRangeOverlap]:
    """Every other policy (not ``own`` itself, by uid) whose range overlaps ours, by label."""
    overlaps = []
    for other in others:
        if other.uid == own.uid:
            continue
        start, end = max(own.start, other.start), min(own.end, other.end)
        if start <= end:
            overlaps.append(VmidRangeOverlap(other=other, start=start, end=end))
    return sorted(overlaps, key=lambda o: (o.start, o.other.label))


def shared_vmids(overlaps: Iterable[VmidRangeOverlap]) -> frozenset[int]:
    """The VMIDs no new CT may take: every VMID of every overlap."""
    return frozenset(vmid for overlap in overlaps for vmid in overlap.vmids)


def describe_overlaps(overlaps: Iterable[VmidRangeOverlap]) -> str:
    parts = [overlap.describe() for overlap in overlaps]
    return "; ".join(parts) + ". No new CT is created in a shared part until the ranges no longer overlap"
