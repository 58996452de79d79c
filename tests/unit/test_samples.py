"""deploy/samples: `kubectl apply -k` never sends the credentials template, and the sample's Proxmox VE
privileges are docs/proxmox-setup.md's, which are the operator's REQUIRED_PRIVILEGES plus SDN.Use."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from local_control_plane import ControlPlaneBinariesMissing, controlplane_binaries
from pve_operator.handlers.common import REQUIRED_PRIVILEGES

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "deploy" / "samples"
SECRET_TEMPLATE = SAMPLES / "pve-credentials-secret.yaml"
PROXMOX_SETUP = REPO / "docs" / "proxmox-setup.md"
LOCAL_CONFIG = "config.kubernetes.io/local-config"

ROLE_ADD = re.compile(r'pveum role add (\S+) --privs "([^"]+)"')
ACL_PAIRS = re.compile(r"for path_role in ([^;]+?); do", re.DOTALL)
#: Checked by the operator on no path, but needed by Proxmox VE for every network interface.
UNCHECKED = {"SDN.Use"}


def roles(text: str) -> dict[str, frozenset[str]]:
    """``pveum role add NAME --privs "..."`` lines: role -> privileges."""
    found = {name: frozenset(privs.split()) for name, privs in ROLE_ADD.findall(text)}
    assert found, "no `pveum role add` line"
    return found


def role_paths(text: str) -> dict[str, str]:
    """The ACL loop ``for path_role in /vms:CTOperatorVMs ...``: role -> path."""
    match = ACL_PAIRS.search(text)
    assert match, "no `for path_role in ...` ACL loop"
    pairs = match.group(1).replace("\\", " ").replace("#", " ").split()
    return {role: path for path, role in (pair.split(":") for pair in pairs)}


def kustomization() -> dict[str, object]:
    document = yaml.safe_load((SAMPLES / "kustomization.yaml").read_text())
    assert isinstance(document, dict)
    return document


def test_sample_and_docs_grant_the_same_roles() -> None:
    sample, docs = SECRET_TEMPLATE.read_text(), PROXMOX_SETUP.read_text()
    assert roles(sample) == roles(docs)
    assert role_paths(sample) == role_paths(docs)


def test_roles_grant_exactly_what_the_operator_checks_on_each_path() -> None:
    granted = roles(SECRET_TEMPLATE.read_text())
    paths = role_paths(SECRET_TEMPLATE.read_text())
    by_path: dict[str, set[str]] = {}
    optional = {role: privileges for role, privileges in granted.items() if role not in paths}
    # The one role outside the loop is spec.ha's, granted on / by its own lines (docs/proxmox-setup.md).
    assert optional == {"CTOperatorHA": frozenset({"Sys.Audit", "Sys.Console"})}
    for role, privileges in granted.items():
        if role in paths:
            by_path.setdefault(paths[role], set()).update(privileges)
    checked = {path: set(privileges) for path, privileges in REQUIRED_PRIVILEGES.items()}
    assert {p: v for p, v in by_path.items() if p in checked} == checked
    assert set().union(*(v for p, v in by_path.items() if p not in checked)) == UNCHECKED
    assert "Pool.Audit" not in set().union(*granted.values()), "docs/proxmox-setup.md: Pool.Audit is not needed"


def test_no_secret_of_the_kustomization_is_ever_emitted() -> None:
    """A Secret among the resources must be local-config (kustomize drops it); no generator makes one."""
    document = kustomization()
    assert "secretGenerator" not in document
    resources = document["resources"]
    assert isinstance(resources, list)
    for name in resources:
        for manifest in yaml.safe_load_all((SAMPLES / name).read_text()):
            if manifest and manifest["kind"] == "Secret":
                annotations = manifest["metadata"].get("annotations", {})
                assert annotations.get(LOCAL_CONFIG) == "true", f"{name} would be applied by kubectl apply -k"


def test_kustomize_renders_the_pool_and_policy_without_the_secret() -> None:
    try:
        kubectl = controlplane_binaries().kubectl
    except ControlPlaneBinariesMissing as missing:
        pytest.skip(str(missing))
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(SAMPLES)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered) if d)
    assert kinds == [("ContainerPolicy", "web"), ("ProxmoxServerPool", "lab")]
    assert "REPLACE-WITH-THE-TOKEN-SECRET" not in rendered
    # The Argo CD example builds on deploy/samples and patches the template away: it must still render.
    subprocess.run(
        [str(kubectl), "kustomize", str(REPO / "deploy" / "argocd" / "example")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
