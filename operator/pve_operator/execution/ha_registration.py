"""Apply a policy's :class:`~pve_operator.planning.ha_registration.HaPlan` to Proxmox VE's HA configuration.

Order matters to PVE: rules may only name HA resources, so resources are added (and updated) first, the
operator's rules that go are removed before the ones that change or come, and resources are removed
last (PVE's default ``purge`` also takes them out of every rule).
"""

from __future__ import annotations

from collections.abc import Mapping

from pve_operator.planning.ha_registration import HaIntent, HaPlan, plan_ha
from pve_operator.pve.client import PveClient


def read_and_plan(client: PveClient, intent: HaIntent, vmids_by_index: Mapping[int, int]) -> HaPlan:
    """Read PVE's HA resources and rules (one request each) and plan the policy's changes. Nothing is
    read while the policy has no ``spec.ha`` and never had: a cluster without HA costs no requests."""
    return plan_ha(intent, vmids_by_index, client.ha_resources(), client.ha_rules())


def apply_ha(client: PveClient, plan: HaPlan) -> list[str]:
    """Carry out the plan; the changes made, one line each (raises the first PVE error)."""
    done: list[str] = []
    for resource in plan.create_resources:
        client.create_ha_resource(resource.sid, resource.params())
        done.append(f"registered {resource.sid} as an HA resource ({resource.state})")
    for resource in plan.update_resources:
        client.update_ha_resource(resource.sid, resource.params())
        done.append(f"updated HA resource {resource.sid}")
    for name in plan.delete_rules:
        client.delete_ha_rule(name)
        done.append(f"removed HA rule {name}")
    for rule in plan.update_rules:
        client.update_ha_rule(rule.rule, rule.type, rule.params())
        done.append(f"updated HA rule {rule.rule}")
    for rule in plan.create_rules:
        client.create_ha_rule(rule.rule, rule.type, rule.params())
        done.append(f"added HA rule {rule.rule} ({rule.type}: {', '.join(rule.resources)})")
    for sid in plan.delete_resources:
        client.delete_ha_resource(sid)
        done.append(f"removed HA resource {sid}")
    return done
