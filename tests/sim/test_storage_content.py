"""``GET /nodes/{node}/storage/{storage}/content``, as pve-storage's ``Content.pm`` serves it.

The operator lists a node's templates before it creates a CT (so a missing template is reported as
``TemplateNotFound`` instead of a failed task), and Ansible's LXC module does the same before it
creates anything.
"""

from __future__ import annotations

import pytest
from proxmoxer.core import ResourceException

from tests.fixtures.sim import SimServerFactory
from tests.sim.test_permissions import permissions_scenario

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def test_templates_of_a_storage_are_listed_with_their_format(pve_sim_server: SimServerFactory) -> None:
    api = pve_sim_server().proxmox("ctoperator@pve", token="operator")
    content = api.nodes("srv-px1").storage("local").content.get(content="vztmpl")
    assert [(v["volid"], v["content"], v["format"]) for v in content] == [(TEMPLATE, "vztmpl", "tzst")]
    assert content[0]["size"] == 120 * 1024 * 1024
    assert api.nodes("srv-px1").storage("local").content.get(content="iso") == []


def test_ct_volumes_are_listed_on_their_node_by_vmid(pve_sim_server: SimServerFactory) -> None:
    api = pve_sim_server().proxmox()
    # legacy-db (3150) has a 16 GiB rootfs on srv-px2's local-lvm (local storage: not seen from srv-px1).
    volumes = api.nodes("srv-px2").storage("local-lvm").content.get(vmid=3150)
    assert [(v["vmid"], v["content"], v["size"]) for v in volumes] == [(3150, "rootdir", 16 * 1024**3)]
    assert api.nodes("srv-px1").storage("local-lvm").content.get(vmid=3150) == []
    assert api.nodes("srv-px2").storage("local-lvm").content.get(vmid=3151) == []


def test_unknown_or_unavailable_storage_is_an_error_as_in_pve(pve_sim_server: SimServerFactory) -> None:
    api = pve_sim_server().proxmox()
    with pytest.raises(ResourceException) as raised:
        api.nodes("srv-px1").storage("nosuch").content.get()
    assert raised.value.status_code == 500 and "storage 'nosuch' does not exist" in str(raised.value)


def test_listing_needs_an_audit_or_allocate_privilege_on_the_storage(pve_sim_server: SimServerFactory) -> None:
    sim = pve_sim_server(permissions_scenario())
    # one@pve may audit CT 3150 and nothing else; pooladmin@pve is a PVEDatastoreUser on /storage.
    with pytest.raises(ResourceException) as raised:
        sim.proxmox("one@pve", password="one-password").nodes("srv-px1").storage("local").content.get()
    assert raised.value.status_code == 403
    allowed = sim.proxmox("pooladmin@pve", password="pooladmin-password").nodes("srv-px1").storage("local")
    assert [v["volid"] for v in allowed.content.get(content="vztmpl")] == [TEMPLATE]
