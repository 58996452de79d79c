"""Chaos tests: the real operator process against pve_sim's fault injection, and a recovery table.

Markers:
    chaos       every test here (pyproject.toml).
    chaos_full  a scenario of the full fault matrix: skipped unless ``--chaos-full`` or
                ``PVE_CHAOS_FULL=1`` (``make chaos`` sets it). The other scenarios are the fast
                subset that runs in ``make test``.

Every scenario leaves a :class:`~tests.chaos.harness.RecoveryRecord` (time from lifting the fault to
every invariant holding and Ready=True, and what each invariant found); at the end of the session
they are printed as a table and written to ``<basetemp>/chaos-recovery.md`` (and ``.json``), or to
the path in ``PVE_CHAOS_REPORT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chaos.harness import RECORDS_KEY, RecoveryRecord, render_table

FULL_OPTION = "--chaos-full"
FULL_ENV = "PVE_CHAOS_FULL"
REPORT_ENV = "PVE_CHAOS_REPORT"
_BASETEMP_KEY = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    # Only seen when pytest is pointed at tests/chaos (or a file in it), as `make chaos` does;
    # PVE_CHAOS_FULL=1 works from anywhere.
    parser.addoption(
        FULL_OPTION,
        action="store_true",
        default=False,
        help=f"run the whole chaos fault matrix in tests/chaos (env: {FULL_ENV}=1; `make chaos`)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos_full: a chaos scenario of the full matrix only (`make chaos`, --chaos-full, PVE_CHAOS_FULL=1)"
    )
    config.stash.setdefault(RECORDS_KEY, [])


def _full_matrix(config: pytest.Config) -> bool:
    try:
        option = bool(config.getoption(FULL_OPTION))
    except ValueError:  # the option is not registered when pytest was not pointed at tests/chaos
        option = False
    return option or os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _full_matrix(config):
        return
    skip = pytest.mark.skip(
        reason=f"full chaos matrix only: run `make chaos` (or {FULL_ENV}=1 pytest tests/chaos, "
        f"or pytest tests/chaos {FULL_OPTION})"
    )
    for item in items:
        if item.get_closest_marker("chaos_full") is not None:
            item.add_marker(skip)


@pytest.fixture
def chaos_records(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[RecoveryRecord]:
    """The session's recovery records; a scenario appends its own."""
    request.config.stash[_BASETEMP_KEY] = tmp_path_factory.getbasetemp()
    return request.config.stash[RECORDS_KEY]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    records: list[RecoveryRecord] = config.stash.get(RECORDS_KEY, [])
    if not records:
        return
    table = render_table(records)
    terminalreporter.section("chaos: time to recover after the fault was lifted")
    for line in table.splitlines():
        terminalreporter.write_line(line)
    target = os.environ.get(REPORT_ENV)
    path = Path(target) if target else config.stash.get(_BASETEMP_KEY, Path.cwd()) / "chaos-recovery.md"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table + "\n")
        path.with_suffix(".json").write_text(json.dumps([r.as_dict() for r in records], indent=1) + "\n")
    except OSError as error:
        terminalreporter.write_line(f"could not write the recovery table to {path}: {error}")
        return
    terminalreporter.write_line(f"recovery table written to {path} (and {path.with_suffix('.json').name})")
