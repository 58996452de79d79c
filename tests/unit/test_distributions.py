"""Two distributions in one repository: the operator's wheel never carries the simulator or its needs.

``pve-operator`` (the root ``pyproject.toml``, package ``pve_operator`` under ``operator/``) is what the
image installs; ``pve-sim`` (``simulator/pyproject.toml``, package ``pve_sim``) is the Proxmox VE API
simulator the demo, the tests and the benchmarks install beside it. Both wheels are built here, offline
(``pip wheel --no-build-isolation`` with the venv's setuptools, which the dev extra pins to a version that
reads these pyproject files), from copies of their sources, so the checkout gains no ``build/``.

* the operator's wheel holds ``pve_operator`` and nothing of ``pve_sim``, declares no runtime
  requirement on ``cryptography`` (only the simulator and the dev tools use it) and no ``pve-sim`` script;
* the simulator's wheel holds ``pve_sim`` (with its ``handlers`` subpackage and ``py.typed``), nothing of
  ``pve_operator``, and the ``pve-sim`` console script;
* each wheel declares every third-party package its code imports (directly, or through a declared
  requirement, as ``pydantic_core`` comes with ``pydantic``).
"""

from __future__ import annotations

import ast
import email.message
import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".mypy_cache", "build", "dist")
BUILD_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Wheel:
    path: Path
    names: frozenset[str]
    metadata: email.message.Message
    entry_points: str

    @property
    def top_level(self) -> set[str]:
        return {name.split("/", 1)[0] for name in self.names if not name.split("/", 1)[0].endswith(".dist-info")}

    def runtime_requirements(self) -> dict[str, str]:
        """Normalized name -> requirement, for the Requires-Dist lines without an ``extra == ...`` marker."""
        found = {}
        for line in self.metadata.get_all("Requires-Dist") or []:
            if "extra ==" in line:
                continue
            found[_normalize(re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0])] = line
        return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        names = frozenset(archive.namelist())
        dist_info = {name.split("/", 1)[0] for name in names if name.split("/", 1)[0].endswith(".dist-info")}
        assert len(dist_info) == 1, f"{path.name}: dist-info directories {sorted(dist_info)}"
        (info,) = dist_info
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points_file = f"{info}/entry_points.txt"
        entry_points = archive.read(entry_points_file).decode() if entry_points_file in names else ""
    return Wheel(path, names, metadata, entry_points)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    """Both wheels, built in parallel from copies of the checkout's sources."""
    root = tmp_path_factory.mktemp("distributions")
    operator_src = root / "operator-src"
    operator_src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, operator_src / name)
    # The whole source root, and the simulator beside it as in the checkout: neither may leak into the wheel.
    shutil.copytree(REPO / "operator", operator_src / "operator", ignore=IGNORED)
    shutil.copytree(REPO / "simulator", operator_src / "simulator", ignore=IGNORED)
    simulator_src = root / "simulator-src"
    shutil.copytree(REPO / "simulator", simulator_src, ignore=IGNORED)

    builds = {}
    for label, source in (("operator", operator_src), ("simulator", simulator_src)):
        out = root / f"{label}-wheel"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        command += ["--quiet", "--wheel-dir", str(out), str(source)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        builds[label] = (process, out)
    built = {}
    for label, (process, out) in builds.items():
        output, _ = process.communicate(timeout=BUILD_TIMEOUT_SECONDS)
        assert process.returncode == 0, f"building the {label} wheel failed:\n{output}"
        (path,) = out.glob("*.whl")
        built[label] = _read_wheel(path)
    return built


def test_operator_wheel_holds_pve_operator_and_nothing_of_the_simulator(wheels: dict[str, Wheel]) -> None:
    wheel = wheels["operator"]
    assert wheel.metadata["Name"] == "pve-operator"
    assert wheel.top_level == {"pve_operator"}, sorted(wheel.top_level)
    assert {"pve_operator/__init__.py", "pve_operator/__main__.py", "pve_operator/py.typed"} <= wheel.names
    assert any(name.startswith("pve_operator/handlers/") for name in wheel.names)
    assert not [name for name in wheel.names if "pve_sim" in name], "the operator's wheel contains pve_sim"
    assert "pve-sim" not in wheel.entry_points and "pve_sim" not in wheel.entry_points


def test_operator_wheel_does_not_require_what_only_the_simulator_needs(wheels: dict[str, Wheel]) -> None:
    requirements = wheels["operator"].runtime_requirements()
    assert "kopf" in requirements and "proxmoxer" in requirements, requirements  # the parser found them
    assert "cryptography" not in requirements, requirements["cryptography"]
    assert "pve-sim" not in requirements


def test_simulator_wheel_holds_pve_sim_its_script_and_its_requirements(wheels: dict[str, Wheel]) -> None:
    wheel = wheels["simulator"]
    assert wheel.metadata["Name"] == "pve-sim"
    assert wheel.top_level == {"pve_sim"}, sorted(wheel.top_level)
    expected = {"pve_sim/__init__.py", "pve_sim/__main__.py", "pve_sim/tls.py", "pve_sim/py.typed"}
    assert expected <= wheel.names, sorted(expected - wheel.names)
    assert "pve_sim/handlers/__init__.py" in wheel.names
    assert re.search(r"^pve-sim\s*=\s*pve_sim\.__main__:main\s*$", wheel.entry_points, re.MULTILINE), wheel.entry_points
    assert "cryptography" in wheel.runtime_requirements()
    assert "pve-operator" not in wheel.runtime_requirements()


def test_simulator_version_is_its_package_version(wheels: dict[str, Wheel]) -> None:
    init = (REPO / "simulator" / "pve_sim" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', init, re.MULTILINE)
    assert match, "pve_sim/__init__.py has no __version__"
    version = wheels["simulator"].metadata["Version"]
    assert version == match.group(1), "bump both: simulator/pyproject.toml and pve_sim.__version__"


def _third_party_imports(package: Path) -> set[str]:
    """Top-level names of the non-standard-library modules a package's code imports (absolute imports)."""
    own = package.name
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".", 1)[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".", 1)[0])
    return {name for name in found if name != own and name not in sys.stdlib_module_names and name != "__future__"}


@pytest.mark.parametrize(
    ("label", "package"),
    [("operator", REPO / "operator" / "pve_operator"), ("simulator", REPO / "simulator" / "pve_sim")],
)
def test_every_third_party_import_is_a_declared_requirement(
    wheels: dict[str, Wheel], label: str, package: Path
) -> None:
    declared = set(wheels[label].runtime_requirements())
    provided = set(declared)
    for name in declared:  # one level down: pydantic brings pydantic_core
        for line in importlib.metadata.requires(name) or []:
            if "extra ==" not in line:
                provided.add(_normalize(re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0]))
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_third_party_imports(package)):
        names = {_normalize(d) for d in distributions.get(module, [module])}
        if not names & provided:
            undeclared[module] = sorted(names)
    assert not undeclared, f"{package.name} imports what its wheel does not require: {undeclared}"
