"""``python -m pve_operator plan`` and ``kubectl pve`` are tools a user runs beside the operator: they
must not register the operator's Kopf handlers (importing ``pve_operator.handlers`` does, as a side
effect of its decorators) nor need Kopf's registry at all (issue 10: plan_command imported handlers/).

Checked in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.operator import REPO_ROOT

PROBE = """
import json, sys
import {module}
import kopf
registry = kopf.get_default_registry()
handlers = [h.id for h in registry._changing.get_all_handlers()]
handlers += [h.id for h in registry._spawning.get_all_handlers()]
handlers += [h.id for h in registry._indexing.get_all_handlers()]
print(json.dumps({{
    "handler_modules": sorted(m for m in sys.modules if m.startswith("pve_operator.handlers")),
    "registered": handlers,
}}))
"""


def _probe(module: str) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT / "operator"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("module", ["pve_operator.plan_command", "pve_operator.kubectl_plugin"])
def test_a_read_only_command_registers_no_kopf_handler(module: str) -> None:
    found = _probe(module)
    assert found == {"handler_modules": [], "registered": []}


def test_the_probe_sees_handlers_when_they_are_imported() -> None:
    """The check above can fail: importing the handlers registers them, and the probe sees it."""
    found = _probe("pve_operator.handlers")
    assert "pve_operator.handlers.balancing" in found["handler_modules"]
    assert len(found["registered"]) >= 5
