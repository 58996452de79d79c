"""The ContainerPolicy lifecycle suite again, against fakepve instead of pve_sim.

fakepve (PyPI, AGPL-3.0, test-only) is a PVE fake written by someone else from PVE's schema and
sources. Passing the same suite against it shows the operator depends on PVE's contract, not on
pve_sim's quirks. The tests are not duplicated: every test function of ``test_policy_lifecycle`` is
collected here again (as copies, so marks added here never reach the originals), and this module
overrides ``pve_sim_server`` so that everything they build (the conftest's ``lab``, and the tests
that start their own server) talks to a fakepve seeded from the same lab scenario.
``tests/fixtures/fakepve.py`` says what fakepve does and does not model.

Running against this second backend with realistic creation times (10 s) exposed two ownership bugs
(a CT still locked ``create`` has no marks yet); the tests that caught them now live in
``test_policy_lifecycle`` and run on both backends.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
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
            scenario: Any = None, *, time_scale: float | None = 0.0, auth_failure_delay_seconds: float = 0.0
        ) -> FakePveServer:
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


#: Lifecycle tests that cannot hold on fakepve, and why.
NOT_ON_FAKEPVE = {
    "test_fill_mode_stops_where_the_limit_says_split_by_weight": (
        "fill mode's expected count comes from pve_sim's load model (a ct-* CT uses 55% of its memory, nodes "
        "carry 8% base load); fakepve has no load model: /cluster/resources reports mem=0 for every CT and fixed "
        "node figures, so the pool's usage never grows and the stop point the test computes cannot exist"
    ),
    "test_an_offline_node_and_a_restart_do_not_freeze_the_policy": (
        "it takes a node offline through pve_sim's cluster model (set_node_online, with quorum kept by a third "
        "node); fakepve has no way to take a node offline or to add one"
    ),
}

# Every test of the lifecycle suite, present and future, is collected here too.
for _name, _test in vars(lifecycle).items():
    if _name.startswith("test_") and isinstance(_test, types.FunctionType):
        if _name in NOT_ON_FAKEPVE:
            continue  # not a skipped test: it cannot mean anything on fakepve (the reason is above)
        globals()[_name] = _rerun(_test)
