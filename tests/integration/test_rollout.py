"""Rolling updates against pve_sim: new CTs record their template (signed) in the ownership record, and CTs
created before that are stamped without losing the user's notes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pve_operator.planning.actions import RecordTemplate
from pve_operator.planning.ownership import parse_record
from tests.integration.test_executor import BLUEPRINT, KEY, creates, executor


def _record(sim: Any, vmid: int) -> Any:
    description = sim.proxmox().nodes("srv-px1").lxc(vmid).config.get()["description"]
    return description, parse_record(description)


def test_a_new_ct_records_the_template_it_was_created_with(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    outcomes = executor(sim).apply(creates(1), replace(BLUEPRINT, template_hash="18d310f4407a"))
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    _, record = _record(sim, 3100)
    assert record is not None and KEY.verifies(3100, record)
    assert KEY.template_of(3100, record) == "18d310f4407a"


def test_a_ct_without_a_recorded_template_is_stamped_and_keeps_its_notes(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    outcomes = run.apply(creates(1), replace(BLUEPRINT, notes="Owned by the web team.\nAsk #web."))
    assert all(o.succeeded for o in outcomes)
    _, before = _record(sim, 3100)
    assert before is not None and KEY.template_of(3100, before) == ""
    outcome = run.apply([RecordTemplate(3100, "srv-px1", "579f5abf5c97")], BLUEPRINT)[0]
    assert outcome.succeeded, outcome.message
    description, after = _record(sim, 3100)
    assert description.startswith("Owned by the web team.\nAsk #web.\n")
    assert after is not None and KEY.verifies(3100, after) and KEY.template_of(3100, after) == "579f5abf5c97"
    assert after.created_at == before.created_at and after.index == before.index


def test_a_restart_class_repair_reboots_the_ct_so_the_pending_setting_takes_effect(pve_sim_server: Any) -> None:
    from pve_operator.planning.actions import RestoreConfig

    sim = pve_sim_server(time_scale=0.05)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(1), BLUEPRINT))
    ct = sim.proxmox().nodes("srv-px1").lxc(3100)
    repair = RestoreConfig(3100, "srv-px1", {"nameserver": "192.0.2.1"}, "nameserver unset→192.0.2.1", restart=True)
    outcome = run.apply([repair], BLUEPRINT)[0]
    assert outcome.succeeded and "restarted it to apply" in outcome.message, outcome.message
    assert ct.config.get(current=1).get("nameserver") == "192.0.2.1", "applied, not left pending"
    assert ct.status.current.get()["status"] == "running"
    assert any(t["type"] == "vzreboot" for t in sim.proxmox().nodes("srv-px1").tasks.get(vmid=3100))
