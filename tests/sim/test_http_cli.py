"""``python -m pve_sim``: serve in a separate process, use what it prints, stop it with a signal."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pve_sim.admin_client import SimAdminClient
from tests.fixtures.sim import LAB_SCENARIO, REPO_ROOT

CURL_RE = re.compile(
    r"^curl --cacert (?P<ca>\S+) -H 'Authorization: PVEAPIToken=(?P<token>[^']+)' "
    r"https://127\.0\.0\.1:(?P<port>\d+)/api2/json/version$"
)
STARTUP_DEADLINE_SECONDS = 60.0


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "simulator"), env.get("PYTHONPATH", "")])
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pve_sim", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        cwd=REPO_ROOT,
    )


@dataclass
class RunningCli:
    process: subprocess.Popen[str]
    state_file: Path
    details: dict[str, Any]
    banner: list[str]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RunningCli]:
    state_file = tmp_path / "sim.json"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pve_sim", "serve",
            "--scenario", str(LAB_SCENARIO),
            "--port", "0",
            "--time-scale", "0",
            "--cert-dir", str(tmp_path / "tls"),
            "--state-file", str(state_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while not state_file.exists():
            if process.poll() is not None:
                _, stderr = process.communicate(timeout=30)
                pytest.fail(f"pve-sim exited early ({process.returncode}): {stderr}")
            if time.monotonic() > deadline:
                pytest.fail("pve-sim did not write its state file in time")
            time.sleep(0.05)
        details = json.loads(state_file.read_text())
        assert process.stdout is not None
        banner: list[str] = []
        while not banner or not banner[-1].strip().startswith("curl "):
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"banner ended early: {banner}")
            banner.append(line.rstrip("\n"))
        yield RunningCli(process, state_file, details, banner)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_serve_prints_a_working_curl_and_stops_on_sigterm(served: RunningCli) -> None:
    details = served.details
    curl_line = served.banner[-1].strip()
    match = CURL_RE.match(curl_line)
    assert match is not None, curl_line
    assert int(match.group("port")) == details["port"]
    assert match.group("ca") == details["caPath"]
    assert match.group("token").startswith("ctoperator@pve!operator=")

    result = subprocess.run(shlex.split(curl_line), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"data"}
    assert answer["data"]["version"] == "9.1.2"
    assert {"release", "repoid"} <= set(answer["data"])

    banner = "\n".join(served.banner)
    assert details["url"] in banner and str(details["caPath"]) in banner
    assert f"Admin token:  {details['adminToken']}" in banner
    assert "root@pam" in banner and "sim-root-password" in banner

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    assert not served.state_file.exists()
    _, stderr = served.process.communicate(timeout=30)
    assert '"GET /api2/json/version" 200' in stderr  # curl's request in the access log ...
    assert "ctoperator@pve!operator" in stderr
    assert "6f5d2c9e-3b1a-4f8e-9c7d-2a4b6e8f0a1c" not in stderr  # ... without its secret


def test_state_file_drives_the_admin_client_and_sigint_stops(served: RunningCli) -> None:
    assert os.stat(served.state_file).st_mode & 0o077 == 0  # it holds credentials
    users = {entry["userid"]: entry for entry in served.details["users"]}
    assert users["ctoperator@pve"]["tokens"][0]["fullId"] == "ctoperator@pve!operator"

    with SimAdminClient.from_state_file(served.state_file) as admin:
        assert admin.state()["cluster"] == "lab"
        assert admin.advance_clock(30)["elapsed"] == pytest.approx(30)

    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(timeout=30) == 0


def test_validate_accepts_a_good_scenario() -> None:
    result = run_cli("validate", str(LAB_SCENARIO))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "2 nodes" in result.stdout


def test_validate_rejects_a_bad_scenario_with_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(LAB_SCENARIO.read_text().replace("memoryGiB: 32", "memoryGiB: -1", 1))
    result = run_cli("validate", str(bad))
    assert result.returncode != 0
    assert str(bad) in result.stderr
    assert "nodes[0].memoryGiB" in result.stderr


def test_serve_refuses_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: pve-sim/v1\nkind: Scenario\nnodes: {not: a list}\n")
    result = run_cli("serve", "--scenario", str(bad), "--port", "0")
    assert result.returncode == 2
    assert str(bad) in result.stderr


def test_serve_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--scenario", str(LAB_SCENARIO), "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
