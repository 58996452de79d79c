"""`python -m pve_operator --help` is plain text: no reStructuredText markup from docstrings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "--help"], ["plan", "--help"]], ids=["help", "run-help", "plan-help"]
)
def test_help_has_no_rst_backticks(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pve_operator", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "operator"), "COLUMNS": "100", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("usage: python -m pve_operator")
    assert "``" not in result.stdout
    assert "run" in result.stdout and "--namespace" in result.stdout
