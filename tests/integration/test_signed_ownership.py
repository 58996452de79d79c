"""Signed ownership records against pve_sim (issue 10 §4): what discovery makes of a CT whose marks
claim a policy, through the real proxmoxer client.

* a record the operator signed for this VMID: ours;
* the same record copied onto another CT in the range (every mark present): a :class:`ForeignClaim`,
  never counted, and its config is not written;
* an unsigned record (written before records were signed) on a CT the policy's status lists: signed
  once, in PVE, with the user's own notes kept; on a CT the status does not list: a foreign claim.
"""

from __future__ import annotations

from typing import Any

from pve_operator.execution.discovery import discover_owned
from pve_operator.handlers.status import foreign_in_range
from pve_operator.planning.ownership import (
    ForeignClaim,
    OwnershipKey,
    OwnershipRecord,
    Verdict,
    format_description,
    ownership_tags,
    parse_record,
    verdict,
)
from pve_operator.pve.params import create_params
from tests.integration.test_create_windows import operator_client
from tests.integration.test_executor import BLUEPRINT, IDENTITY, KEY

NODE = "srv-px1"


def _create(client: Any, vmid: int, description: str) -> None:
    params = create_params(BLUEPRINT, hostname=f"ct-{vmid}", description=description, tags=ownership_tags(IDENTITY.uid))
    client.wait(client.create_container(NODE, vmid, params), timeout_seconds=30)


def _record(index: int) -> OwnershipRecord:
    return OwnershipRecord("apps", "web", IDENTITY.uid, index, "2026-11-23T12:00:00Z")


def test_a_copied_record_is_a_foreign_claim_and_left_unwritten(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    client = operator_client(sim)
    genuine = format_description(_record(0).signed(3100, KEY), "team notes")
    _create(client, 3100, genuine)
    _create(client, 3105, genuine)  # a faithful copy of every mark, on another VMID
    before = client.container_config(NODE, 3105)["description"]
    records: dict[int, OwnershipRecord | ForeignClaim | None] = {}

    owned = discover_owned(client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, records, key=KEY)

    assert [o.vmid for o in owned] == [3100]
    claim = records[3105]
    assert isinstance(claim, ForeignClaim) and claim.node == NODE
    assert [(c.vmid, c.node) for c in foreign_in_range(records)] == [(3105, NODE)]
    assert "signature does not verify" in foreign_in_range(records)[0].why
    assert client.container_config(NODE, 3105)["description"] == before, "a foreign CT is never written"
    # Even if the policy's status listed it, a claim from another key is not re-signed by a wrong key ...
    other_key = OwnershipKey(b"a-key-that-is-not-the-operators!")
    assert (
        verdict(
            vmid=3100,
            tags=ownership_tags(IDENTITY.uid),
            description=genuine,
            policy_uid=IDENTITY.uid,
            vmid_range=IDENTITY.vmid_range,
            key=other_key,
        )
        is Verdict.BAD_SIGNATURE
    )


def test_an_unsigned_record_the_policy_counted_is_signed_once_and_kept(pve_sim_server: Any) -> None:
    """An operator upgraded from a version without signatures: its CTs carry unsigned records and
    its policies' status lists them. Discovery signs each once; the CT stays counted throughout."""
    sim = pve_sim_server(time_scale=0.0)
    client = operator_client(sim)
    _create(client, 3100, format_description(_record(0), "team notes"))
    _create(client, 3101, format_description(_record(1)))  # unsigned, but not in the policy's status
    records: dict[int, OwnershipRecord | ForeignClaim | None] = {}

    owned = discover_owned(
        client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, records, key=KEY, counted={3100}
    )

    assert [(o.vmid, o.index) for o in owned] == [(3100, 0)]
    description = client.container_config(NODE, 3100)["description"]
    record = parse_record(description)
    assert record is not None and KEY.verifies(3100, record) and record.index == 0
    assert description.startswith("team notes\n"), "the user's own text is kept"
    assert isinstance(records[3101], ForeignClaim) and "not signed" in records[3101].why
    assert client.container_config(NODE, 3101)["description"].rstrip("\n") == format_description(_record(1))

    # A new process (empty cache, status no longer consulted) proves 3100 from its signature alone.
    owned = discover_owned(client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, {}, key=KEY)
    assert [o.vmid for o in owned] == [3100]
    assert client.container_config(NODE, 3100)["description"] == description, "signed once, not again"


def test_a_claim_the_pools_cycle_saw_first_is_still_signed_by_the_policys_cycle(pve_sim_server: Any) -> None:
    """After an upgrade the pool's balancing cycle (which does not know the policy's status) may read an
    unsigned record first and cache it as a claim in the cache both cycles share; the policy's cycle,
    which counts the CT, must still sign it instead of reporting its own CT as foreign."""
    sim = pve_sim_server(time_scale=0.0)
    client = operator_client(sim)
    _create(client, 3100, format_description(_record(0)))
    shared: dict[int, OwnershipRecord | ForeignClaim | None] = {}

    by_pool = discover_owned(client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, shared, key=KEY)
    assert by_pool == [] and isinstance(shared[3100], ForeignClaim)

    by_policy = discover_owned(
        client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, shared, key=KEY, counted={3100}
    )
    assert [o.vmid for o in by_policy] == [3100]
    assert foreign_in_range(shared) == []
    record = parse_record(client.container_config(NODE, 3100)["description"])
    assert record is not None and KEY.verifies(3100, record)
