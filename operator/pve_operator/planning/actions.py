"""Actions the planners propose: plain data with a reason a user can read.

Execution (``pve_operator.execution``) applies them under limits; status and events show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class CreateContainer:
    vmid: int
    node: str
    index: int
    hostname: str
    reason: str
    kind: Literal["Create"] = "Create"


@dataclass(frozen=True)
class StartContainer:
    vmid: int
    node: str
    reason: str
    kind: Literal["Start"] = "Start"


@dataclass(frozen=True)
class DestroyContainer:
    """Stop (if running) and destroy with purge. Only ever proposed for CTs proven ours."""

    vmid: int
    node: str
    running: bool
    reason: str
    kind: Literal["Delete"] = "Delete"


@dataclass(frozen=True)
class RestoreConfig:
    """Put drifted settings back (``changes`` are PVE config keys and values)."""

    vmid: int
    node: str
    changes: dict[str, int | str] = field(default_factory=dict)
    reason: str = ""
    kind: Literal["Repair"] = "Repair"


Action = CreateContainer | StartContainer | DestroyContainer | RestoreConfig
