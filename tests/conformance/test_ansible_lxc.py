"""Ansible's ``community.proxmox.proxmox`` LXC module (proxmoxer inside) against pve_sim over verified HTTPS.

A CT's whole life -- create (ostemplate, hostname, rootfs volume, memory, cores, net0), create again
(idempotent), start, stop, delete -- each step a real ``ansible-playbook`` run from the cached venv of
``hack/build-ansible.sh``, and after each one the assertion is on pve_sim's own state (``/_sim/state``),
not on Ansible's ``changed`` alone. Run with an API token (privilege-separated, least-privilege role) and
with a password (ticket login). TLS: ``validate_certs: true`` with ``REQUESTS_CA_BUNDLE`` set to the
simulator's CA (the module hands ``validate_certs`` to proxmoxer, whose requests session reads it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import pinned_versions
from tests.fixtures.sim import SimServerFactory, SimTestServer

NODE = "srv-px1"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
NET0 = "name=eth0,bridge=vmbr0,ip=dhcp"

PLAYBOOK = """\
- name: A CT through community.proxmox.proxmox
  hosts: localhost
  gather_facts: false
  tasks:
    - name: "CT {{ vmid }} state={{ ct_state }}"
      community.proxmox.proxmox:
        api_host: "{{ api_host }}"
        api_port: "{{ api_port | int }}"
        api_user: "{{ api_user }}"
        api_password: "{{ api_password | default(omit) }}"
        api_token_id: "{{ api_token_id | default(omit) }}"
        api_token_secret: "{{ api_token_secret | default(omit) }}"
        validate_certs: true
        node: "{{ node }}"
        vmid: "{{ vmid | int }}"
        hostname: "{{ hostname }}"
        ostemplate: "{{ ostemplate }}"
        disk_volume:
          storage: local-lvm
          size: 3
        memory: 768
        swap: 256
        cores: 2
        netif:
          net0: "{{ net0 }}"
        timeout: 30
        state: "{{ ct_state }}"
      register: result

    - name: Result for the test
      ansible.builtin.debug:
        var: result
"""


class AnsibleRunner:
    """Runs the playbook with the cached Ansible venv against one pve_sim server."""

    def __init__(self, venv: Path, sim: SimTestServer, workdir: Path, auth: dict[str, str]) -> None:
        self.venv = venv
        self.sim = sim
        self.workdir = workdir
        self.playbook = workdir / "ct.yml"
        self.playbook.write_text(PLAYBOOK)
        self.auth = auth
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PROXMOX_"))},
            "REQUESTS_CA_BUNDLE": str(sim.ca_path),
            "NO_PROXY": "127.0.0.1,localhost",
            "ANSIBLE_HOME": str(workdir / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        }

    def run(self, vmid: int, hostname: str, state: str) -> dict[str, Any]:
        """One playbook run; returns the module's result (``changed``, ``msg``, ``vmid``, ...)."""
        extra = {
            "api_host": self.sim.host,
            "api_port": self.sim.port,
            "node": NODE,
            "vmid": vmid,
            "hostname": hostname,
            "ostemplate": TEMPLATE,
            "net0": NET0,
            "ct_state": state,
            **self.auth,
        }
        extra_file = self.workdir / "extra-vars.json"
        extra_file.write_text(json.dumps(extra))
        command = [
            str(self.venv / "bin" / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"@{extra_file}",
            "-e",
            "ansible_python_interpreter={{ ansible_playbook_python }}",
            str(self.playbook),
        ]
        proc = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=300, check=False)
        report = (
            f"ansible-playbook state={state} exit {proc.returncode}\n"
            f"--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}"
        )
        assert proc.returncode == 0, report
        output = json.loads(proc.stdout)
        task = output["plays"][0]["tasks"][0]
        result: dict[str, Any] = task["hosts"]["localhost"]
        assert not result.get("failed"), report
        return result


def _container(sim: SimTestServer, vmid: int) -> dict[str, Any] | None:
    containers: dict[str, Any] = sim.admin.state()["containers"]
    return containers.get(str(vmid))


def _tasks(sim: SimTestServer, vmid: int) -> list[dict[str, Any]]:
    return [t for t in sim.admin.state()["tasks"] if t["id"] == str(vmid)]


AUTHS = {
    # The lab's least-privilege operator token (privsep, role CTOperator on /).
    "token": ("ctoperator@pve", "operator"),
    # A ticket login (POST /access/ticket) as root.
    "password": ("root@pam", None),
}


@pytest.mark.slow
@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_ansible_proxmox_module_ct_lifecycle(
    ansible_venv: Path, pve_sim_server: SimServerFactory, tmp_path: Path, auth: str
) -> None:
    sim = pve_sim_server()
    user, token = AUTHS[auth]
    if token is not None:
        credentials = {"api_user": user, "api_token_id": token, "api_token_secret": sim.token_secret(user, token)}
        task_user = f"{user}!{token}"
    else:
        credentials = {"api_user": user, "api_password": sim.user_password(user)}
        task_user = user
    ansible = AnsibleRunner(ansible_venv, sim, tmp_path, credentials)
    vmid, hostname = (4111, "ansible-ct-token") if auth == "token" else (4112, "ansible-ct-password")
    assert _container(sim, vmid) is None

    # Create.
    result = ansible.run(vmid, hostname, "present")
    assert result["changed"] is True, result
    ct = _container(sim, vmid)
    assert ct is not None, "Ansible reported a create, but pve_sim has no such CT"
    assert ct["node"] == NODE
    assert ct["status"] == "stopped"
    assert ct["lock"] is None
    config = ct["config"]
    assert config["hostname"] == hostname
    assert config["memory"] == 768
    assert config["swap"] == 256
    assert config["cores"] == 2
    assert config["net0"].startswith("name=eth0,bridge=vmbr0,") and "ip=dhcp" in config["net0"]
    assert config["rootfs"] == f"local-lvm:vm-{vmid}-disk-0,size=3G"
    assert config["ostype"] == "debian"
    creates = [t for t in _tasks(sim, vmid) if t["type"] == "vzcreate"]
    assert len(creates) == 1 and creates[0]["status"] == "OK" and creates[0]["node"] == NODE
    assert creates[0]["upid"].endswith(f":{task_user}:")

    # Create again: the module reads the CT's config back (GET .../config), finds it as asked and changes
    # nothing ("Container config is already up to date.").
    result = ansible.run(vmid, hostname, "present")
    assert result["changed"] is False, result
    assert "already" in result["msg"], result
    assert len([t for t in _tasks(sim, vmid) if t["type"] == "vzcreate"]) == 1
    again = _container(sim, vmid)
    assert again is not None and again["config"] == config

    # Start.
    result = ansible.run(vmid, hostname, "started")
    assert result["changed"] is True, result
    ct = _container(sim, vmid)
    assert ct is not None and ct["status"] == "running"
    assert ct["usage"]["mem"] > 0
    assert [t["status"] for t in _tasks(sim, vmid) if t["type"] == "vzstart"] == ["OK"]
    result = ansible.run(vmid, hostname, "started")
    assert result["changed"] is False, result

    # Stop (the module shuts the CT down: POST .../status/shutdown).
    result = ansible.run(vmid, hostname, "stopped")
    assert result["changed"] is True, result
    ct = _container(sim, vmid)
    assert ct is not None and ct["status"] == "stopped"
    assert ct["usage"]["mem"] == 0
    assert [t["status"] for t in _tasks(sim, vmid) if t["type"] == "vzshutdown"] == ["OK"]

    # Delete.
    result = ansible.run(vmid, hostname, "absent")
    assert result["changed"] is True, result
    assert _container(sim, vmid) is None, "Ansible reported a delete, but pve_sim still has the CT"
    assert [t["status"] for t in _tasks(sim, vmid) if t["type"] == "vzdestroy"] == ["OK"]
    result = ansible.run(vmid, hostname, "absent")
    assert result["changed"] is False, result

    # The lab's foreign CT was never touched.
    foreign = _container(sim, 3150)
    assert foreign is not None and foreign["status"] == "running"


def test_ansible_venv_is_the_pinned_version(ansible_venv: Path) -> None:
    proc = subprocess.run(
        [
            str(ansible_venv / "bin" / "python"),
            "-c",
            "from importlib.metadata import version; print(version('ansible'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == pinned_versions()["ANSIBLE_VERSION"]
