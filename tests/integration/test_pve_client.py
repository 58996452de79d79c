"""The Proxmox adapter against pve_sim over verified HTTPS: typed errors, tasks, no blind retries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_operator.planning.model import ContainerStatus
from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.pve.errors import (
    PveAuthenticationError,
    PveConflict,
    PveInvalidRequest,
    PveNotFound,
    PvePermissionError,
    PveTaskFailed,
    PveTaskTimeout,
    PveTimeout,
    PveUnreachable,
)
from pve_sim.scenario import parse_scenario

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TOKEN_ID = "ctoperator@pve!operator"


def client_for(sim: Any, *, secret: str | None = None, ca: str | None = None, **kwargs: Any) -> PveClient:
    token = secret if secret is not None else sim.token_secret("ctoperator@pve", "operator")
    ca_pem = ca if ca is not None else Path(sim.ca_path).read_text()
    return PveClient(
        sim.url, PveCredentials(token_id=TOKEN_ID, token_secret=token), TlsSettings(ca_pem=ca_pem), **kwargs
    )


def test_snapshot_is_one_request_with_nodes_cts_and_tags(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    with client_for(sim) as pve:
        snapshot = pve.snapshot(taken_at=1.0)
    assert set(snapshot.nodes) == {"srv-px1", "srv-px2"}
    assert snapshot.nodes["srv-px1"].memory_total_bytes == 32 * 1024**3
    legacy = snapshot.containers[3150]
    assert legacy.node == "srv-px2" and legacy.status is ContainerStatus.RUNNING and legacy.tags == {"legacy"}
    # Disk is the CT storage (local-lvm, rootdir) of the node, where CT volumes live.
    assert snapshot.nodes["srv-px2"].disk_total_bytes == 400 * 1024**3
    assert 3150 in snapshot.used_vmids()


@pytest.mark.parametrize("suffix", ["/api2/json", "/api2/json/"])
def test_an_endpoint_copied_with_the_api_path_works(pve_sim_server: Any, suffix: str) -> None:
    """Seen with hostile input: ``https://pve:8006/api2/json`` became ``.../api2/json/api2/json`` (501)."""
    sim = pve_sim_server(time_scale=0.0)
    token = sim.token_secret("ctoperator@pve", "operator")
    with PveClient(
        f"https://127.0.0.1:{sim.port}{suffix}",
        PveCredentials(token_id=TOKEN_ID, token_secret=token),
        TlsSettings(ca_pem=Path(sim.ca_path).read_text()),
    ) as pve:
        assert pve.version()
        assert set(pve.snapshot(taken_at=1.0).nodes) == {"srv-px1", "srv-px2"}


def test_wrong_token_is_an_authentication_error_that_never_shows_the_secret(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    wrong = "11111111-2222-4333-8444-555555555555"
    with client_for(sim, secret=wrong) as pve, pytest.raises(PveAuthenticationError) as caught:
        pve.version()
    assert caught.value.status == 401
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.__dict__)


def test_wrong_password_login_is_an_authentication_error(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    creds = PveCredentials(username="ctoperator@pve", password="not-the-password")
    tls = TlsSettings(ca_pem=Path(sim.ca_path).read_text())
    with PveClient(sim.url, creds, tls) as pve, pytest.raises(PveAuthenticationError) as caught:
        pve.version()
    assert "not-the-password" not in str(caught.value)


def test_password_login_works_and_posts_carry_the_csrf_token(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    creds = PveCredentials(username="root@pam", password=sim.user_password("root@pam"))
    with PveClient(sim.url, creds, TlsSettings(ca_pem=Path(sim.ca_path).read_text())) as pve:
        upid = pve.stop_container("srv-px2", 3150)
        assert pve.wait(upid, timeout_seconds=10).ok


def test_missing_privilege_names_the_privilege_and_the_path(pve_sim_server: Any) -> None:
    data = yaml.safe_load(LAB.read_text())
    role = next(r for r in data["roles"] if r["id"] == "CTOperator")
    role["privileges"] = [p for p in role["privileges"] if p != "VM.PowerMgmt"]
    sim = pve_sim_server(parse_scenario(data, "<no PowerMgmt>"), time_scale=0.0)
    with client_for(sim) as pve, pytest.raises(PvePermissionError) as caught:
        pve.stop_container("srv-px2", 3150)
    assert caught.value.privilege == "VM.PowerMgmt"
    assert caught.value.path == "/vms/3150"


def test_unreachable_endpoint_and_untrusted_certificate_are_unreachable(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    other = pve_sim_server(time_scale=0.0)
    with client_for(sim, ca=Path(other.ca_path).read_text()) as pve, pytest.raises(PveUnreachable) as tls:
        pve.version()
    assert "TLS verification failed" in str(tls.value)
    port = other.port
    other.stop()
    dead = PveClient(
        f"https://127.0.0.1:{port}",
        PveCredentials(token_id=TOKEN_ID, token_secret="x"),
        TlsSettings(ca_pem=Path(sim.ca_path).read_text()),
        read_retries=0,
    )
    with dead, pytest.raises(PveUnreachable):
        dead.version()


def test_state_errors_are_typed_conflict_and_not_found(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    with client_for(sim) as pve:
        with pytest.raises(PveConflict, match="CT 3150 already running"):
            pve.start_container("srv-px2", 3150)
        with pytest.raises(PveNotFound):
            pve.container_config("srv-px1", 3150)  # it lives on srv-px2
        with pytest.raises(PveInvalidRequest) as bad:
            pve.update_container_config("srv-px2", 3150, {"memory": 1})
    assert "memory" in bad.value.errors


def test_failed_task_carries_pve_exit_status_and_log_tail(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.fail_tasks("vzstop", "simulated disk failure")
    with client_for(sim) as pve, pytest.raises(PveTaskFailed) as caught:
        pve.wait(pve.stop_container("srv-px2", 3150), timeout_seconds=10)
    assert "simulated disk failure" in caught.value.exit_status
    assert any("simulated disk failure" in line for line in caught.value.log_tail)


def test_task_still_running_at_the_deadline_is_a_timeout_not_none(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)  # real time: shutdown takes 4 s
    with client_for(sim) as pve, pytest.raises(PveTaskTimeout) as caught:
        pve.wait(pve.stop_container("srv-px2", 3150), timeout_seconds=0.3)
    assert caught.value.upid.startswith("UPID:srv-px2:")


def test_a_post_is_never_repeated_after_a_transport_error(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.faults.set_latency(2.0, path_regex=r"/status/stop$")
    with client_for(sim, timeout_seconds=0.5, read_retries=3) as pve:
        with pytest.raises(PveUnreachable, match="outcome unknown"):
            pve.stop_container("srv-px2", 3150)
        sim.cluster.faults.clear()
        time.sleep(2.0)  # the server finishes the one request it got
        tasks = sim.proxmox().nodes("srv-px2").tasks.get(vmid=3150, typefilter="vzstop")
    assert len(tasks) == 1, "exactly one stop reached PVE: the client did not retry the POST"


def test_reads_are_retried_after_a_transport_error(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.faults.add_request_fault(
        method="GET", path_regex=r"^/version$", status=595, message="No route to host", count=1, empty_body=True
    )
    with client_for(sim, read_retries=2) as pve:
        assert pve.version()["version"] == "9.1.2"


def test_a_hung_api_is_a_timeout_told_after_one_read_timeout_not_retried(pve_sim_server: Any) -> None:
    """Seen in a review: with connections accepted and never answered, the pool stayed Ready for 94 s
    (three 30 s read attempts). A read timeout is now its own error and is not asked again."""
    sim = pve_sim_server(time_scale=0.0)
    with client_for(sim, timeout_seconds=0.5, read_retries=3) as pve:
        pve.version()  # connected (the token is checked per request; nothing to log in first)
        sim.cluster.faults.set_latency(3.0, path_regex=r"^/cluster/resources$")
        with pytest.raises(PveTimeout, match=r"did not answer within 0\.5 s") as caught:
            pve.cluster_resources()
    assert isinstance(caught.value, PveUnreachable), "still Unreachable for the conditions"
    assert caught.value.request == "GET /cluster/resources"


def test_a_pinned_certificate_fingerprint_is_trusted_without_a_ca_and_a_wrong_one_gets_nothing(
    pve_sim_server: Any,
) -> None:
    """`tls.fingerprintSHA256`, the way PVE's own clients trust a node: the safe alternative to
    skipping verification. A wrong pin stops the client before any credential is sent."""
    sim = pve_sim_server(time_scale=0.0)
    token = sim.token_secret("ctoperator@pve", "operator")
    credentials = PveCredentials(token_id=TOKEN_ID, token_secret=token)
    fingerprint = sim.tls.fingerprint_sha256  # upper-case pairs joined by ':', as PVE shows it
    with PveClient(sim.url, credentials, TlsSettings(fingerprint_sha256=fingerprint)) as pve:
        assert pve.version()["version"] == "9.1.2"
        assert pve.cluster_resources()

    wrong = "AA:" * 31 + "AA"
    refused = r"not the pinned tls\.fingerprintSHA256: nothing was sent"
    with PveClient(sim.url, credentials, TlsSettings(fingerprint_sha256=wrong)) as pve, pytest.raises(
        PveUnreachable, match=refused
    ):
        pve.version()
    # Password logins post the password at once: the pin is checked before that too.
    password = PveCredentials(username="ctoperator@pve", password=sim.user_password("ctoperator@pve"))
    with PveClient(sim.url, password, TlsSettings(fingerprint_sha256=wrong)) as pve, pytest.raises(
        PveUnreachable, match="not the pinned"
    ):
        pve.version()


def test_node_pressure_is_the_newest_rrd_minute_of_the_column(pve_sim_server: Any) -> None:
    """``thresholds.pressure`` reads PVE 9's node RRD: a node whose CPU demand passes its cores stalls."""
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.advance_clock(60)
    sim.cluster.set_node_load("srv-px2", "cpu", 1.0)  # 8 busy cores plus the legacy CT: demand 105 %
    sim.cluster.advance_clock(120)  # a whole RRD minute since the change
    with client_for(sim) as pve:
        hot = pve.node_pressure("srv-px2", "pressurecpusome")
        calm = pve.node_pressure("srv-px1", "pressurecpusome")
        memory = pve.node_pressure("srv-px2", "pressurememorysome")
    assert hot is not None and hot[1] > 20
    # The newest row is the minute that ends at the last whole minute of the simulated clock.
    assert hot[0] == 60 * (sim.cluster.now() // 60)
    assert calm is not None and calm[1] == 0.0 and memory is not None and memory[1] == 0.0


def test_node_pressure_is_none_where_pve8_records_none(pve_sim_server: Any) -> None:
    data = yaml.safe_load(LAB.read_text())
    data["cluster"]["pveVersion"] = "8.4.1"
    sim = pve_sim_server(parse_scenario(data, "<pve 8 lab>"), time_scale=0.0)
    sim.cluster.advance_clock(180)
    with client_for(sim) as pve:
        assert pve.node_pressure("srv-px1", "pressurememorysome") is None
