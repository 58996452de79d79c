"""The image's payload, built and run without Docker (these machines have no container engine).

What the Dockerfile's build stage does, done here: the build context is exactly what its COPY lines take
(parsed from the Dockerfile), the wheel is built with its own ``pip wheel --no-deps`` command, and it is
installed into a fresh virtualenv with its runtime dependencies only (pip downloads them from PyPI, as
``docker build`` does), then compiled like the image's ``compileall`` step. Then, like the image:

* ``python -m pve_operator run --help`` works from that virtualenv alone (no checkout on the path);
* the payload carries only what it needs: ``pve_sim`` is not importable, and no test or dev tool
  (pytest, mypy, ruff, hypothesis, ...) is installed;
* ``python -m pve_operator run`` connects a pool (Ready=True, Connected) against the local control plane
  and pve_sim, from a read-only working directory, with HOME and TMPDIR in one writable directory (the
  Deployment's /tmp emptyDir) and, when the tests run as root, as the image's user 65532 (root ignores
  file modes, so a read-only directory would prove nothing for root); then it stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab
from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import connect_pool
from tests.unit.test_deploy_security import _dockerfile_instructions
from tests.unit.test_distributions import IGNORED

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: The image's user (Dockerfile: USER 65532:65532); the payload runs as it when the tests run as root.
IMAGE_UID = 65532
INSTALL_TIMEOUT_SECONDS = 600
#: Never in the image: the test, lint and type tools, the simulator and the test-only second PVE backend.
NOT_IN_THE_IMAGE = frozenset(
    {
        "pytest",
        "pytest-timeout",
        "mypy",
        "ruff",
        "hypothesis",
        "import-linter",
        "fakepve",
        "lupa",
        "pve-sim",
        "rich",
        "psutil",
    }
)


@dataclass(frozen=True)
class Payload:
    root: Path
    venv: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _build_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    starts = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    assert len(starts) == 2, "a build stage and a runtime stage"
    return instructions[starts[0] : starts[1]]


def _copy_build_context(context: Path) -> None:
    """What the build stage's COPY lines put under its WORKDIR, nothing else (.dockerignore drops caches)."""
    copies = [arg.split() for name, arg in _build_stage() if name == "COPY"]
    assert copies, "the build stage copies its sources"
    for *sources, destination in copies:
        for source in sources:
            origin = REPO / source
            if destination.endswith("/"):
                target = context / destination / Path(source).name
            else:
                assert len(sources) == 1, f"COPY {sources} {destination}: several sources need a directory"
                target = context / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=IGNORED)
            else:
                shutil.copy2(origin, target)


def _run(command: list[str], *, what: str, timeout: float = INSTALL_TIMEOUT_SECONDS, **kwargs: Any) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def payload() -> Iterator[Payload]:
    """The wheel built as the Dockerfile builds it, installed into a fresh venv with its runtime dependencies."""
    run_steps = [arg for name, arg in _build_stage() if name == "RUN"]
    assert any("pip wheel --no-deps --wheel-dir /wheels ." in step for step in run_steps), run_steps
    assert any("/opt/venv/bin/pip install /wheels/*.whl" in step for step in run_steps), run_steps
    # Not pytest's tmp_path: its parents are private to root, and the payload may run as the image's user.
    root = Path(tempfile.mkdtemp(prefix="pve-image-payload-"))
    try:
        root.chmod(0o755)
        context, wheels, venv = root / "src", root / "wheels", root / "venv"
        _copy_build_context(context)
        base_env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LANG": "C.UTF-8"}
        pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        pip_env.pop("PYTHONPATH", None)
        # Stage 1, step by step: `python -m pip wheel --no-deps --wheel-dir /wheels .` (build isolation, as there).
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), "."],
            what="building the wheel",
            cwd=context,
            env=pip_env,
        )
        (wheel,) = wheels.glob("*.whl")
        _run([sys.executable, "-m", "venv", str(venv)], what="python -m venv", env=base_env)
        _run(
            [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
            what="pip install of the wheel",
            env={**pip_env, "VIRTUAL_ENV": str(venv)},
            cwd=root,
        )
        lib = next((venv / "lib").glob("python3.*"))
        _run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "compileall",
                "-q",
                "-f",
                "--invalidation-mode",
                "unchecked-hash",
                str(lib),
            ],
            what="compileall",
            env=base_env,
        )
        yield Payload(root, venv, wheel)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Sandbox:
    """A read-only working directory and a writable HOME/TMPDIR (the image's /tmp), for the image's user."""

    cwd: Path
    home: Path
    #: Prefix that runs a command as the image's user (empty when the tests do not run as root).
    as_user: tuple[str, ...]

    def command(self, payload: Payload, *args: str) -> list[str]:
        return [*self.as_user, str(payload.python), *args]

    def env(self, payload: Payload, **extra: str) -> dict[str, str]:
        # The image's ENV, and nothing of this test run's environment (no PYTHONPATH, no venv of the checkout).
        # USER stands in for the image's /etc/passwd entry of 65532 ("nonroot", made by its useradd), which this
        # host lacks: Kopf names its peering identity after getpass.getuser(), which reads USER first and
        # otherwise fails (KeyError) for a UID without an account.
        user = {"USER": "nonroot"} if self.as_user else {}
        return {
            **user,
            "PATH": f"{payload.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.home),
            "TMPDIR": str(self.home),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            **extra,
        }


@pytest.fixture
def sandbox(payload: Payload) -> Iterator[Sandbox]:
    base = Path(tempfile.mkdtemp(prefix="sandbox-", dir=payload.root))
    base.chmod(0o755)
    cwd, home = base / "workdir", base / "tmp"
    cwd.mkdir()
    home.mkdir(mode=0o700)
    as_user: tuple[str, ...] = ()
    if os.geteuid() == 0:
        os.chown(home, IMAGE_UID, IMAGE_UID)
        # setpriv (util-linux), not Popen(user=...): the latter's exec of a Python under /root is refused here.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root needs setpriv (util-linux) to run the payload as the image's user")
        as_user = (setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups")
    cwd.chmod(0o555)  # chmod a-w
    try:
        yield Sandbox(cwd, home, as_user)
    finally:
        cwd.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _python(payload: Payload, sandbox: Sandbox, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sandbox.command(payload, "-c", code),
        capture_output=True,
        text=True,
        cwd=sandbox.cwd,
        env=sandbox.env(payload),
        timeout=60,
        check=False,
    )


def test_the_working_directory_is_really_read_only_for_the_payload(payload: Payload, sandbox: Sandbox) -> None:
    result = _python(payload, sandbox, "open('probe', 'w')")
    assert result.returncode != 0 and "PermissionError" in result.stderr, (result.stdout, result.stderr)


def test_run_help_works_from_the_payload_alone(payload: Payload, sandbox: Sandbox) -> None:
    result = subprocess.run(
        sandbox.command(payload, "-m", "pve_operator", "run", "--help"),
        capture_output=True,
        text=True,
        cwd=sandbox.cwd,
        env=sandbox.env(payload),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m pve_operator run"), result.stdout
    assert "--namespace" in result.stdout and "--liveness" in result.stdout
    where = _python(payload, sandbox, "import pve_operator; print(pve_operator.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(payload.venv), f"imported from {where.stdout.strip()}"


def test_the_payload_carries_only_what_the_operator_needs(payload: Payload, sandbox: Sandbox) -> None:
    result = _python(payload, sandbox, "import pve_sim")
    assert result.returncode != 0 and "ModuleNotFoundError: No module named 'pve_sim'" in result.stderr, result.stderr
    listed = _python(
        payload,
        sandbox,
        "import importlib.metadata as m, json\nnames = {d.metadata['Name'] for d in m.distributions()}\n"
        "print(json.dumps(sorted(names)))",
    )
    assert listed.returncode == 0, listed.stderr
    installed = {_normalize(name) for name in json.loads(listed.stdout)}
    assert "pve-operator" in installed
    unwanted = sorted(installed & NOT_IN_THE_IMAGE) + sorted(n for n in installed if n.startswith("types-"))
    assert not unwanted, f"the payload installs test/dev packages: {unwanted}"
    for module in ("pytest", "mypy", "ruff", "hypothesis", "pve_sim", "tests", "simulator"):
        probe = _python(payload, sandbox, f"import importlib.util as u; print(u.find_spec({module!r}) is None)")
        assert probe.stdout.strip() == "True", f"{module} is importable from the payload"
    # Its own files: only the pve_operator package (and its dist-info) from the wheel.
    site = next((payload.venv / "lib").glob("python3.*/site-packages"))
    ours = [p.name for p in site.iterdir() if p.name.startswith(("pve_operator", "pve_sim", "pve-sim"))]
    assert sorted(ours) == sorted(["pve_operator", *[p.name for p in site.glob("pve_operator-*.dist-info")]]), ours


def test_the_payload_runs_the_operator_from_a_read_only_directory_and_connects_a_pool(
    payload: Payload,
    sandbox: Sandbox,
    kube: KubeCluster,
    kube_namespace: str,
    installed_crds: tuple[str, ...],
    pve_sim_server: Any,
) -> None:
    sim = pve_sim_server(time_scale=0.05)
    connect_pool(kube, kube_namespace, sim)
    # The image reads the in-cluster service account; here, a copy of the admin kubeconfig the user can read.
    kubeconfig = sandbox.home / "kubeconfig"
    shutil.copy(kube.kubeconfig, kubeconfig)
    if sandbox.as_user:
        os.chown(kubeconfig, IMAGE_UID, IMAGE_UID)
    log_path = payload.root / f"operator-{kube_namespace}.log"
    env = sandbox.env(
        payload,
        KUBECONFIG=str(kubeconfig),
        PVE_OPERATOR_MONITOR_TICK="1",
        PVE_OPERATOR_RECONCILE_INTERVAL="2",
        PVE_OPERATOR_METRICS_PORT="0",
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            sandbox.command(payload, "-m", "pve_operator", "run", "-n", kube_namespace, "--log-format=plain"),
            cwd=sandbox.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            lab = Lab(kube, kube_namespace, sim, None)
            deadline = time.monotonic() + 120
            while True:
                ready = lab.condition("proxmoxserverpool", "lab", "Ready")
                if ready and ready["status"] == "True" and ready["reason"] == "Connected":
                    break
                assert process.poll() is None, f"the operator exited ({process.returncode}):\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"pool not Ready/Connected: {ready}\n{log_path.read_text()}"
                time.sleep(0.5)
            assert lab.status("proxmoxserverpool", "lab").get("pveVersion") == sim.scenario.cluster.pve_version
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
                pytest.fail(f"the operator did not stop within 30 s of SIGTERM:\n{log_path.read_text()}")
    logs = log_path.read_text(errors="replace")
    assert code in (0, -signal.SIGTERM), f"exit code {code}:\n{logs}"
    assert "Traceback" not in logs, logs
    assert not any(sandbox.cwd.iterdir()), "the operator wrote into its working directory"
