"""ProxmoxServerPool connection states as users read them: Ready/Degraded with a reason and events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SIM_TIME_SCALE, Lab, lab_scenario_data
from tests.fixtures.operator import apply_objects, connect_pool

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_unreachable_proxmox_marks_the_pool_not_ready_and_it_recovers_by_itself(lab: Lab, pve_sim_server: Any) -> None:
    port = lab.sim.port
    lab.sim.stop()
    found = lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "Unreachable", timeout_s=120)
    assert "unreachable" in found["message"]
    assert any(e["reason"] == "Unreachable" and e["type"] == "Warning" for e in lab.events())

    # Proxmox comes back on the same address with a new certificate; the CA ConfigMap is updated
    # (a CA rotation) and the operator picks both up without a restart.
    back = pve_sim_server(time_scale=SIM_TIME_SCALE, port=port)
    ca = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "pve-ca"},
        "data": {"ca.crt": Path(back.ca_path).read_text()},
    }
    apply_objects(lab.kube, lab.namespace, ca)
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected", timeout_s=120)
    assert lab.operator is not None and lab.operator.starts == 1


def test_wrong_token_is_authentication_failed_and_the_secret_is_never_shown(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    wrong = "0badc0de-1111-4222-8333-deadbeefcafe"
    sim = pve_sim_server(time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim, token_secret=wrong)
    operator = pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, operator)
    lab.apply_policy("web", replicas=2)
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "AuthenticationFailed")
    lab.wait_condition("containerpolicy", "web", "Ready", "False", "AuthenticationFailed")

    real = sim.token_secret("ctoperator@pve", "operator")
    places = {
        "operator log": operator.logs(),
        "events": json.dumps(lab.events()),
        "pool status": json.dumps(lab.status("proxmoxserverpool", "lab")),
        "policy status": json.dumps(lab.status("containerpolicy", "web")),
    }
    for where, text in places.items():
        assert text, f"{where} is empty: the search would prove nothing"
        assert wrong not in text, f"the token secret appears in the {where}"
        assert real not in text, f"the real token secret appears in the {where}"


def test_token_without_vm_allocate_is_permission_denied_naming_the_privilege(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    from pve_sim.scenario import parse_scenario

    data = lab_scenario_data()
    role = next(r for r in data["roles"] if r["id"] == "CTOperator")
    role["privileges"] = [p for p in role["privileges"] if p != "VM.Allocate"]
    sim = pve_sim_server(parse_scenario(data, "<no VM.Allocate>"), time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim)
    pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, None)
    found = lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "PermissionDenied")
    assert "VM.Allocate" in found["message"] and "/vms" in found["message"]


def test_connected_is_announced_once_per_transition(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """Seen in a review: the pool's `Connected` event was posted twice for one transition (the change
    handler and the first timer tick both saw the old status). Here the operator runs first and the
    pool arrives later, as in `make demo`."""
    sim = pve_sim_server(time_scale=SIM_TIME_SCALE)
    operator = pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, operator)
    time.sleep(3)
    connect_pool(kube, kube_namespace, sim)  # samples every 5 s
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    time.sleep(12)  # timer ticks (1 s in tests) and two samples after the first Connected

    connected = [e for e in lab.events() if e["reason"] == "Connected"]
    assert sum(int(e.get("count") or 1) for e in connected) == 1, [e["message"] for e in connected]


@pytest.mark.parametrize(
    "token_secret",
    ["0badc0de-1111\r\nX-Injected: header", "0badc0de-ünïcödé-€-secret"],
    ids=["crlf", "non-latin-1"],
)
def test_hostile_credentials_are_invalid_credentials_and_never_shown(
    kube: Any,
    kube_namespace: str,
    installed_crds: Any,
    pve_sim_server: Any,
    pve_operator_process: Any,
    token_secret: str,
) -> None:
    """Seen in a review: a tokenSecret with CR/LF or a non-Latin-1 character gave no pool status, only
    an unhandled exception every 60 s quoting `PVEAPIToken=...=<secret>` in the logs and in Kopf's
    progress annotation on the pool."""
    sim = pve_sim_server(time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim, token_secret=token_secret)
    operator = pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, operator)
    found = lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "InvalidCredentials", timeout_s=60)
    assert "tokenSecret" in found["message"]
    time.sleep(3)  # a few more timer ticks

    pool = lab.get("proxmoxserverpool", "lab")
    places = {
        "operator log": operator.logs(),
        "events": json.dumps(lab.events()),
        "pool status": json.dumps(pool.get("status")),
        "pool annotations": json.dumps(pool["metadata"].get("annotations")),
    }
    fragments = [token_secret, *token_secret.split("\r\n"), json.dumps(token_secret)[1:-1]]
    for where, text in places.items():
        for fragment in fragments:
            assert fragment not in text, f"the token secret appears in the {where}"
    assert "Traceback" not in operator.logs()


def test_a_hung_proxmox_api_makes_the_pool_unreachable_within_one_read_timeout(lab: Lab) -> None:
    """Seen in a review: connections accepted and never answered kept the pool Ready for 94 s."""
    lab.sim.cluster.faults.set_latency(600.0)  # every request hangs
    found = lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "Unreachable", timeout_s=60)
    assert "did not answer within" in found["message"]
    lab.sim.cluster.faults.clear()
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected", timeout_s=90)


def test_a_pool_trusts_a_pinned_certificate_fingerprint_without_a_ca(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """tls.fingerprintSHA256: the safe alternative to insecureSkipVerify for a self-signed PVE."""
    from tests.fixtures.operator import pool_manifest

    sim = pve_sim_server(time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim)  # Secret, CA ConfigMap and a pool "lab"
    pinned = pool_manifest("pinned", endpoint=sim.url, ca_config_map=None)
    pinned["spec"]["tls"] = {"fingerprintSHA256": sim.tls.fingerprint_sha256}
    wrong = pool_manifest("wrong-pin", endpoint=sim.url, ca_config_map=None)
    wrong["spec"]["tls"] = {"fingerprintSHA256": "AA:" * 31 + "AA"}
    apply_objects(kube, kube_namespace, pinned, wrong)
    lab = Lab(kube, kube_namespace, sim, pve_operator_process(kube_namespace))
    lab.wait_condition("proxmoxserverpool", "pinned", "Ready", "True", "Connected")
    refused = lab.wait_condition("proxmoxserverpool", "wrong-pin", "Ready", "False", "Unreachable")
    assert "not the pinned tls.fingerprintSHA256" in refused["message"]


def test_a_bridge_without_sdn_use_makes_the_pool_not_ready_naming_path_and_policy(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """Issue 15 §8: PVE checks SDN.Use on /sdn/zones/localnetwork/<bridge> at every create
    (pve-guest-common ``GuestHelpers.pm`` ``check_vnet_access``); a pool whose user lacks it was Ready
    while every create failed with 403. Now the pool says so, naming the path and the policy."""
    from pve_sim.scenario import parse_scenario

    data = lab_scenario_data()
    role = next(r for r in data["roles"] if r["id"] == "CTOperator")
    role["privileges"] = [p for p in role["privileges"] if p != "SDN.Use"]
    sim = pve_sim_server(parse_scenario(data, "<no SDN.Use>"), time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim)
    pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, None)
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")  # no policy uses a bridge yet
    lab.apply_policy("web", replicas=2)
    found = lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "PermissionDenied")
    assert "SDN.Use on /sdn/zones/localnetwork/vmbr0" in found["message"] and "web" in found["message"]


def test_restricted_tags_are_reported_before_any_create_fails_and_lifting_them_resumes(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """Issue 15 §7: with datacenter.cfg ``user-tag-access`` restricting tags, adding a tag that is not
    allowed needs Sys.Modify on / (pve-guest-common ``GuestHelpers.pm`` ``assert_tag_permissions``), so
    the first create of each policy and the first offload failed with 403 on such clusters. The pool
    reads the settings (GET /cluster/options, Sys.Audit on /) and says which setting refuses what."""
    from pve_sim.scenario import parse_scenario

    data = lab_scenario_data()
    data.setdefault("cluster", {})["options"] = {"userTagAccess": {"userAllow": "list", "userAllowList": ["web"]}}
    sim = pve_sim_server(parse_scenario(data, "<user-tag-access list>"), time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim)
    operator = pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, operator)
    before = {int(c["vmid"]) for c in lab.cts()}
    found = lab.wait_condition("proxmoxserverpool", "lab", "Ready", "False", "TagsNotAllowed")
    assert "user-allow=list" in found["message"] and "pve-operator-offloaded" in found["message"]
    assert "user-allow-list=" in found["message"], "the fix is named"

    # The operator's own tags allowed, but not the policy's: the pool works, the policy creates nothing.
    allowed = ["web", "pve-operator", "pve-operator-offloaded"]
    sim.admin.set_datacenter_options({"userTagAccess": {"userAllow": "list", "userAllowList": allowed}})
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    lab.apply_policy("web", replicas=2)
    found = lab.wait_condition("containerpolicy", "web", "Degraded", "True", "TagsNotAllowed")
    assert "ctp-" in found["message"] and "user-allow=list" in found["message"]
    lab.wait_condition("proxmoxserverpool", "lab", "Degraded", "True", "TagsNotAllowed")
    assert {int(c["vmid"]) for c in lab.cts()} == before, "no CT was created (and none failed half-way)"
    assert not [e for e in lab.events() if e["reason"] == "CreateFailed"]

    # Lifting the restriction resumes without a restart.
    sim.admin.set_datacenter_options({})
    lab.wait_condition("containerpolicy", "web", "Ready", "True", "AllReplicasReady", timeout_s=180)
    lab.wait_condition("proxmoxserverpool", "lab", "Degraded", "False")
