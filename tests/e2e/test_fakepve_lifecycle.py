"""The ContainerPolicy lifecycle suite again, against fakepve instead of pve_sim.

fakepve (PyPI, AGPL-3.0, test-only) is a PVE fake written by someone else from PVE's schema and
sources. Passing the same suite against it shows the operator depends on PVE's contract, not on
pve_sim's quirks. The tests are not duplicated: the functions of ``test_policy_lifecycle`` are
collected here again, and this module overrides ``pve_sim_server`` so that everything they build
(the conftest's ``lab``, and the tests that start their own server) talks to a fakepve seeded from
the same lab scenario. See ``tests/fixtures/fakepve.py`` for what fakepve does and does not model.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import test_policy_lifecycle as lifecycle
from tests.fixtures.fakepve import FakePveFactory, FakePveServer, fakepve_servers

pytestmark = [pytest.mark.kube, pytest.mark.slow]


@pytest.fixture
def pve_sim_server(tmp_path: Path) -> Iterator[FakePveFactory]:
    """Overrides the pve_sim factory for this module: same call, a fakepve server back."""
    with fakepve_servers(tmp_path) as start:

        def start_like_pve_sim(
            scenario: Mapping[str, Any] | str | Path | None = None,
            *,
            time_scale: float | None = 0.0,
            auth_failure_delay_seconds: float = 0.0,
        ) -> FakePveServer:
            if scenario is not None and not isinstance(scenario, Mapping | str | Path):
                raise TypeError("fakepve is seeded from a scenario mapping or file, not a parsed pve_sim Scenario")
            if auth_failure_delay_seconds:
                raise NotImplementedError("fakepve answers a failed login at once")
            # pve_sim's None is its default clock: real time.
            return start(scenario, time_scale=1.0 if time_scale is None else time_scale)

        yield start_like_pve_sim


def _rerun(test: Callable[..., None], *marks: pytest.MarkDecorator) -> Callable[..., None]:
    """A copy of a lifecycle test to collect here; marks go on the copy, never on the original."""
    copy = types.FunctionType(test.__code__, test.__globals__, test.__name__, test.__defaults__, test.__closure__)
    copy.__kwdefaults__ = test.__kwdefaults__
    copy.__annotations__ = dict(test.__annotations__)
    copy.__doc__ = test.__doc__
    copy.__qualname__ = test.__qualname__
    for mark in marks:
        copy = mark(copy)
    return copy


test_lab_policy_places_nine_cts_six_and_three_all_running = _rerun(
    lifecycle.test_lab_policy_places_nine_cts_six_and_three_all_running
)
test_scale_to_twelve_then_four_removes_the_newest = _rerun(lifecycle.test_scale_to_twelve_then_four_removes_the_newest)
test_drift_behind_the_operators_back_is_repaired = _rerun(lifecycle.test_drift_behind_the_operators_back_is_repaired)
test_deleting_a_policy_destroys_exactly_its_cts_and_retain_keeps_them = _rerun(
    lifecycle.test_deleting_a_policy_destroys_exactly_its_cts_and_retain_keeps_them
)
test_operator_killed_mid_creation_converges_without_duplicates = _rerun(
    lifecycle.test_operator_killed_mid_creation_converges_without_duplicates
)
test_fill_mode_stops_where_the_limit_says_split_by_weight = _rerun(
    lifecycle.test_fill_mode_stops_where_the_limit_says_split_by_weight,
    pytest.mark.skip(
        reason="fill mode's expected count comes from pve_sim's load model (a ct-* CT uses 55% of its memory, "
        "nodes carry 8% base load); fakepve has no load model: /cluster/resources reports mem=0 for every CT "
        "and fixed node figures, so the pool's usage never grows and the stop point the test computes cannot exist"
    ),
)

