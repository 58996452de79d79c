"""Names shared by the handler modules."""

from __future__ import annotations

from pve_operator.api.v1alpha1 import GROUP, VERSION

POOLS = (GROUP, VERSION, "proxmoxserverpools")
POLICIES = (GROUP, VERSION, "containerpolicies")

#: Privileges the operator needs, by ACL path (docs/proxmox-setup.md has the pveum commands).
REQUIRED_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "/vms": (
        "VM.Allocate",
        "VM.Audit",
        "VM.PowerMgmt",
        "VM.Migrate",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Disk",
        "VM.Config.Network",
        "VM.Config.Options",
    ),
    "/storage": ("Datastore.AllocateSpace", "Datastore.Audit"),
    "/nodes": ("Sys.Audit",),
}


def namespaced(namespace: str | None) -> str:
    """Both kinds are namespaced, so Kopf always passes a namespace; this makes that explicit."""
    if namespace is None:
        raise ValueError("pve.ctoperator.io objects are namespaced")
    return namespace
