"""Fixtures of the third-party client conformance tests: the clients, built once per machine.

Each client is built (or found in the cache outside the clone) by its script under hack/, once per
session: ``hack/build-ansible.sh`` (a venv with Ansible) and ``hack/build-go-proxmox-client.sh`` (a Go
program on go-proxmox). The scripts' progress goes straight to the terminal (pytest's capture is
suspended meanwhile), so a first, cold build is never silent. A build that fails -- say a package
registry is unreachable -- FAILS every test that needs it, with the script's message: never a skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.sim import REPO_ROOT

HACK = REPO_ROOT / "hack"
VERSIONS_ENV = HACK / "conformance" / "versions.env"


def pinned_versions() -> dict[str, str]:
    """``hack/conformance/versions.env`` as a dict (ANSIBLE_VERSION, GO_PROXMOX_VERSION)."""
    versions: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            versions[name.strip()] = value.strip()
    return versions


def _build(request: pytest.FixtureRequest, script: str, key: str) -> Path:
    """Run ``hack/<script>`` with its progress on the terminal; return the path it prints as ``key=``."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        sys.stderr.write(f"\n==> tests/conformance: bash hack/{script} (builds once, then cached outside the clone)\n")
        sys.stderr.flush()
        # stderr is inherited: the script's progress lines reach the terminal as they come.
        result = subprocess.run(
            ["bash", str(HACK / script)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ},
        )
        sys.stderr.write(f"==> hack/{script}: exit {result.returncode} after {time.monotonic() - started:.1f}s\n")
    if result.returncode != 0:
        pytest.fail(
            f"hack/{script} failed (exit {result.returncode}); its messages are above. A package registry "
            "(PyPI, the Go module proxy) that cannot be reached is the usual cause. Run it by hand to see more.",
            pytrace=False,
        )
    for line in result.stdout.splitlines():
        if line.startswith(f"{key}="):
            path = Path(line.partition("=")[2])
            if path.exists():
                return path
            pytest.fail(f"hack/{script} printed {line!r}, which does not exist", pytrace=False)
    pytest.fail(f"hack/{script} printed no {key}= line; stdout was:\n{result.stdout}", pytrace=False)


@pytest.fixture(scope="session")
def ansible_venv(request: pytest.FixtureRequest) -> Path:
    """The cached venv with Ansible (pinned in hack/conformance/ansible/requirements.txt)."""
    return _build(request, "build-ansible.sh", "ANSIBLE_VENV")


@pytest.fixture(scope="session")
def go_proxmox_client(request: pytest.FixtureRequest) -> Path:
    """The cached binary of hack/conformance/go-proxmox (go-proxmox pinned in its go.mod)."""
    return _build(request, "build-go-proxmox-client.sh", "GO_PROXMOX_CLIENT")
