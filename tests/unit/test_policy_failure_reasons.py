"""The reason a ContainerPolicy's conditions give when its creations fail (issue 15 §7).

Without ``Sys.Audit`` on ``/`` the pool cannot read the cluster's tag settings in advance; PVE's 403 for
a refused tag (pve-guest-common ``GuestHelpers.pm`` ``assert_tag_permissions``) is then recognised in
the failed create and told as ``TagsNotAllowed`` with the fix, also in the cycles that only wait out
the creation backoff.
"""

from __future__ import annotations

from pve_operator.execution.executor import Outcome
from pve_operator.handlers.containerpolicy import _failure_condition, _reason_of_recorded_failure
from pve_operator.planning.actions import CreateContainer
from pve_operator.pve.errors import PvePermissionError, classify

REFUSED = "Permission check failed (/, Sys.Modify for modifying tag 'ctp-0123456789')"


def failed_create(message: str) -> Outcome:
    error = classify(403, message, request="POST /nodes/srv-px1/lxc")
    assert isinstance(error, PvePermissionError)
    action = CreateContainer(vmid=3100, node="srv-px1", index=0, hostname="ct-web-00", reason="scale up")
    return Outcome(action, False, f"Create CT 3100 failed: {error}", error=error)


def test_a_refused_tag_is_tags_not_allowed_with_the_fix() -> None:
    reason, message = _failure_condition([failed_create(REFUSED)])
    assert reason == "TagsNotAllowed"
    assert "ctp-0123456789" in message and "user-tag-access" in message and "Sys.Modify on /" in message


def test_other_permission_errors_stay_actions_failed() -> None:
    reason, _ = _failure_condition([failed_create("Permission check failed (/vms/3100, VM.Allocate)")])
    assert reason == "ActionsFailed"


def test_a_backed_off_cycle_keeps_the_reason() -> None:
    assert _reason_of_recorded_failure(f"Create CT 3100 failed: {REFUSED}") == "TagsNotAllowed"
    assert _reason_of_recorded_failure("Create CT 3100 failed: no such bridge") == "ActionsFailed"
