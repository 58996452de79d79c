"""github.com/luthermonson/go-proxmox (Go; JSON request bodies) against pve_sim over verified HTTPS.

The client is hack/conformance/go-proxmox (built and cached by ``hack/build-go-proxmox-client.sh``). It runs
its steps in one process and one session, printing a JSON line per step; with ``-pause`` it waits for a
line on stdin after each, so the test checks pve_sim's own state (``/_sim/state``) between the steps.

Cases:

* the lab's least-privilege API token, and a password (ticket) login as root: version, nodes, create
  (POST /nodes/{node}/lxc with a JSON body), start, stop, delete, each waiting on its task;
* a pool's life as root: POST /pools (JSON body), GET /pools/?poolid=, DELETE /pools?poolid=;
* permission paths taken from a JSON body: a token allowed VM.Allocate on ``/vms/<vmid>`` only may create
  that CT and no other; a user allowed Pool.Allocate on ``/pool/<id>`` only may create that pool and no
  other. PVE fills ``/vms/{vmid}`` and ``/pool/{poolid}`` from the body's parameters.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_sim.scenario import Scenario, parse_scenario
from tests.conformance.conftest import pinned_versions
from tests.fixtures.sim import LAB_SCENARIO, SimServerFactory, SimTestServer

NODE = "srv-px1"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
NET0 = "name=eth0,bridge=vmbr0,ip=dhcp"

LIFECYCLE = ("version", "nodes", "create", "status", "start", "status", "stop", "delete")

SCOPED_USER = "scoped@pve"
SCOPED_TOKEN = "ct"
SCOPED_SECRET = "0b7f4c1e-8a2d-4e6f-9c3b-5d1a7e9f2c4b"
SCOPED_VMID = 4301
POOL_USER = "poolmaker@pve"
POOL_PASSWORD = "sim-poolmaker-password"
SCOPED_POOL = "gopool"


def scoped_scenario() -> Scenario:
    """The lab plus two users whose ACLs name one CT id and one pool id: paths that PVE fills from the body.

    ``scoped@pve!ct`` (privsep, as is its user) holds CTOperator on ``/vms/4301`` and on what a create also
    checks (``/storage``: Datastore.AllocateSpace; ``/sdn``: SDN.Use), and nothing on ``/vms`` or ``/``.
    ``poolmaker@pve`` holds PVEPoolAdmin (Pool.Allocate) on ``/pool/gopool`` only.
    """
    data = yaml.safe_load(LAB_SCENARIO.read_text())
    data["users"] += [
        {
            "userid": SCOPED_USER,
            "password": "sim-scoped-password",
            "tokens": [{"id": SCOPED_TOKEN, "secret": SCOPED_SECRET, "privsep": True}],
        },
        {"userid": POOL_USER, "password": POOL_PASSWORD},
    ]
    for path in (f"/vms/{SCOPED_VMID}", "/storage", "/sdn"):
        data["acl"] += [
            {"path": path, "role": "CTOperator", "user": SCOPED_USER},
            {"path": path, "role": "CTOperator", "token": f"{SCOPED_USER}!{SCOPED_TOKEN}"},
        ]
    data["acl"].append({"path": f"/pool/{SCOPED_POOL}", "role": "PVEPoolAdmin", "user": POOL_USER})
    return parse_scenario(data, "lab + scoped users (tests/conformance)")


class GoClient:
    """One run of the Go client; ``steps()`` yields each step's JSON line, resuming it after each."""

    def __init__(self, binary: Path, sim: SimTestServer, *args: str, **credentials: str) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "PVE_URL": f"{sim.url}/api2/json",
            "PVE_CA_FILE": str(sim.ca_path),
            "PVE_NODE": NODE,
            "PVE_OSTEMPLATE": TEMPLATE,
            "PVE_STORAGE": "local-lvm",
            "PVE_NET0": NET0,
            **credentials,
        }
        self.command = [str(binary), "-pause", "-timeout", "30s", *args]
        self.stderr = ""
        self.proc = subprocess.Popen(
            self.command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def steps(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        try:
            for line in self.proc.stdout:
                step: dict[str, Any] = json.loads(line)
                yield step
                if self.proc.poll() is None:
                    # The client may exit right after its last line: a closed pipe then is no error.
                    with contextlib.suppress(BrokenPipeError):
                        self.proc.stdin.write("\n")
                        self.proc.stdin.flush()
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def run_all(self) -> list[dict[str, Any]]:
        """Every step's line, the client finished (a failed step is the last line, with ok false)."""
        return list(self.steps())


def token_env(user: str, token: str, secret: str) -> dict[str, str]:
    return {"PVE_TOKEN_ID": f"{user}!{token}", "PVE_TOKEN_SECRET": secret}


def password_env(user: str, password: str) -> dict[str, str]:
    return {"PVE_USER": user, "PVE_PASSWORD": password}


def _state(sim: SimTestServer) -> dict[str, Any]:
    state: dict[str, Any] = sim.admin.state()
    return state


def _tasks(sim: SimTestServer, vmid: int, task_type: str) -> list[dict[str, Any]]:
    return [t for t in _state(sim)["tasks"] if t["id"] == str(vmid) and t["type"] == task_type]


def check_ct_lifecycle(client: GoClient, sim: SimTestServer, vmid: int, hostname: str, task_user: str) -> None:
    """Drive version, nodes, create, status, start, stop, delete; assert on pve_sim's state after each."""
    seen: list[str] = []
    for step in client.steps():
        assert step["ok"] is True, f"{step} (after {seen}; command {client.command})"
        name = step["step"]
        seen.append(name)
        if name in ("create", "start", "stop", "delete"):
            assert step["exitstatus"] == "OK" and step["task_node"] == NODE and step["task_id"] == str(vmid), step
            assert step["upid"].endswith(f":{task_user}:"), step
            tasks = [t for t in _state(sim)["tasks"] if t["upid"] == step["upid"]]
            assert len(tasks) == 1 and tasks[0]["status"] == "OK", tasks
        ct = _state(sim)["containers"].get(str(vmid))
        if name == "version":
            assert step["version"] == sim.scenario.cluster.pve_version
            assert step["library"].endswith(pinned_versions()["GO_PROXMOX_VERSION"])
        elif name == "nodes":
            assert sorted(step["nodes"]) == sorted(_state(sim)["nodes"])
            assert set(step["statuses"].values()) == {"online"}
        elif name == "create":
            assert step["task_type"] == "vzcreate"
            assert ct is not None, "the client's create succeeded, but pve_sim has no such CT"
            assert ct["node"] == NODE and ct["status"] == "stopped" and ct["lock"] is None
            config = ct["config"]
            assert config["hostname"] == hostname
            assert config["memory"] == 640
            assert config["net0"].startswith("name=eth0,bridge=vmbr0,") and "ip=dhcp" in config["net0"]
            assert config["rootfs"].startswith(f"local-lvm:vm-{vmid}-disk-0,")
            assert config["ostype"] == "debian"
        elif name == "status":
            assert ct is not None
            assert step["status"] == ct["status"] and step["hostname"] == hostname and step["memory"] == 640
        elif name == "start":
            assert step["task_type"] == "vzstart"
            assert ct is not None and ct["status"] == "running" and ct["usage"]["mem"] > 0
        elif name == "stop":
            assert step["task_type"] == "vzstop"
            assert ct is not None and ct["status"] == "stopped" and ct["usage"]["mem"] == 0
        elif name == "delete":
            assert step["task_type"] == "vzdestroy"
            assert ct is None, "the client's delete succeeded, but pve_sim still has the CT"
    assert seen == list(LIFECYCLE), f"steps {seen}; the client's stderr:\n{client.stderr}"
    assert client.proc.returncode == 0, client.stderr


@pytest.mark.parametrize("auth", ["token", "password"])
def test_go_proxmox_ct_lifecycle(go_proxmox_client: Path, pve_sim_server: SimServerFactory, auth: str) -> None:
    sim = pve_sim_server()
    if auth == "token":
        user, token = "ctoperator@pve", "operator"
        credentials = token_env(user, token, sim.token_secret(user, token))
        task_user, vmid = f"{user}!{token}", 4201
    else:
        credentials = password_env("root@pam", sim.user_password("root@pam"))
        task_user, vmid = "root@pam", 4202
    hostname = f"go-ct-{auth}"
    client = GoClient(
        go_proxmox_client, sim, "-vmid", str(vmid), "-hostname", hostname, "-memory", "640", *LIFECYCLE, **credentials
    )
    check_ct_lifecycle(client, sim, vmid, hostname, task_user)
    foreign = _state(sim)["containers"]["3150"]
    assert foreign["status"] == "running"


def test_go_proxmox_pool_lifecycle(go_proxmox_client: Path, pve_sim_server: SimServerFactory) -> None:
    """POST /pools with a JSON body, then go-proxmox's non-deprecated DELETE /pools?poolid= (PVE >= 8.1)."""
    sim = pve_sim_server()
    credentials = password_env("root@pam", sim.user_password("root@pam"))
    client = GoClient(
        go_proxmox_client, sim, "-pool", "gopool", "-comment", "made in Go", "pool-create", "pool-delete", **credentials
    )
    steps = client.steps()
    step = next(steps)
    assert step == {"step": "pool-create", "ok": True, "poolid": "gopool"}
    assert _state(sim)["pools"]["gopool"] == {"comment": "made in Go", "vms": [], "storage": []}
    step = next(steps)
    assert step == {"step": "pool-delete", "ok": True, "poolid": "gopool"}, step
    assert "gopool" not in _state(sim)["pools"]
    assert list(steps) == []
    assert client.proc.returncode == 0


def test_go_proxmox_scoped_token_creates_only_its_ct(go_proxmox_client: Path, pve_sim_server: SimServerFactory) -> None:
    """VM.Allocate on /vms/4301 only: the JSON body's vmid decides the permission path.

    PVE (``POST /nodes/{node}/lxc`` checks VM.Allocate on ``/vms/{vmid}``, or on ``/pool/{pool}``, in its
    code) allows 4301 and refuses 4302 with a bare ``raise_perm_exc()``: ``403 Permission check failed``.
    """
    sim = pve_sim_server(scoped_scenario())
    credentials = token_env(SCOPED_USER, SCOPED_TOKEN, SCOPED_SECRET)

    # Another id: refused, and nothing created.
    refused = GoClient(
        go_proxmox_client, sim, "-vmid", str(SCOPED_VMID + 1), "-memory", "640", "create", **credentials
    ).run_all()
    assert refused[-1]["ok"] is False and refused[-1]["step"] == "create", refused
    assert refused[-1]["status"] == 403, refused
    assert refused[-1]["error"].endswith("403 Permission check failed"), refused
    assert str(SCOPED_VMID + 1) not in _state(sim)["containers"]
    assert _tasks(sim, SCOPED_VMID + 1, "vzcreate") == []

    # Its own id: the whole life.
    hostname = "go-ct-scoped"
    client = GoClient(
        go_proxmox_client,
        sim,
        "-vmid",
        str(SCOPED_VMID),
        "-hostname",
        hostname,
        "-memory",
        "640",
        *LIFECYCLE,
        **credentials,
    )
    check_ct_lifecycle(client, sim, SCOPED_VMID, hostname, f"{SCOPED_USER}!{SCOPED_TOKEN}")


def test_go_proxmox_scoped_user_creates_only_its_pool(
    go_proxmox_client: Path, pve_sim_server: SimServerFactory
) -> None:
    """Pool.Allocate on /pool/gopool only (ticket login): POST /pools' JSON body poolid decides the path."""
    sim = pve_sim_server(scoped_scenario())
    credentials = password_env(POOL_USER, POOL_PASSWORD)

    refused = GoClient(go_proxmox_client, sim, "-pool", "otherpool", "pool-create", **credentials).run_all()
    assert refused[-1]["ok"] is False and refused[-1]["status"] == 403, refused
    assert "/pool/otherpool" in refused[-1]["error"], refused
    assert "otherpool" not in _state(sim)["pools"]

    created = GoClient(go_proxmox_client, sim, "-pool", SCOPED_POOL, "pool-create", **credentials).run_all()
    assert created == [{"step": "pool-create", "ok": True, "poolid": SCOPED_POOL}], created
    assert SCOPED_POOL in _state(sim)["pools"]
