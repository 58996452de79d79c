"""Permission checks on guest options that depend on cluster-wide state (tags, bridges).

Kept apart from the CT endpoints (:mod:`pve_sim.handlers.lxc`) so the rules can be read next to
the PVE functions they follow; the checks themselves are in :mod:`pve_sim.access`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pve_sim.access import assert_tag_permissions, check_vnet_access

if TYPE_CHECKING:
    from pve_sim.cluster import SimCluster


def guest_tags(cluster: SimCluster) -> dict[int, str | None]:
    """Every guest's ``tags`` option (pve-cluster ``get_guest_config_properties(['tags'])``)."""
    return {vmid: ct.tags for vmid, ct in cluster.state.containers.items()}


def assert_ct_tag_permissions(cluster: SimCluster, authid: str, vmid: int, old: object, new: object) -> None:
    """The ``tags`` branch of pve-container ``PVE::LXC::check_ct_modify_config_perm``.

    ``old`` is the CT's current ``tags`` (None on create), ``new`` the requested value ('' when
    the option is deleted); see :func:`pve_sim.access.assert_tag_permissions`.
    """
    access = cluster.access
    assert_tag_permissions(access, access.datacenter, authid, vmid, old, new, guest_tags(cluster))


def check_ct_bridge_access(cluster: SimCluster, authid: str, bridge: object, tag: object, trunks: object) -> None:
    """pve-container ``PVE::LXC::check_bridge_access`` for one parsed ``netN``: no bridge, no check."""
    if bridge is None:
        return
    check_vnet_access(cluster.access, authid, str(bridge), tag, trunks)
