"""Small types shared by the simulator's layers: who is calling, and envelope extras."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subject:
    """An authenticated caller. ``tokenid`` is set for API-token requests (``user@realm!tokenid``)."""

    userid: str
    tokenid: str | None = None

    @property
    def upid_user(self) -> str:
        """The user as PVE writes it into a UPID and into task lists: ``user@realm`` or ``user@realm!tok``."""
        return f"{self.userid}!{self.tokenid}" if self.tokenid else self.userid

    @property
    def is_root(self) -> bool:
        """root@pam itself (not one of its tokens) bypasses every permission check, as in PVE."""
        return self.userid == "root@pam" and self.tokenid is None


@dataclass(frozen=True)
class ApiResult:
    """A handler result with envelope extras: ``{"data": data, "total": total}`` (task logs, task lists)."""

    data: object
    total: int | None = None
