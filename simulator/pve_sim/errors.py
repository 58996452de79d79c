"""Errors the simulator answers with, shaped exactly as PVE's API daemon shapes them.

PVE puts the (first line of the) message in the HTTP reason phrase and, since
libpve-http-server-perl 5.2.0, also in the JSON body as ``message`` with a trailing newline.
Parameter errors are 400 "Parameter verification failed." with a per-parameter ``errors`` map.
Auth-layer 401s and the 59x proxy codes have an empty body.
"""

from __future__ import annotations


class PveApiError(Exception):
    """An API answer with a non-2xx status.

    ``message`` is PVE's message without the trailing newline; the HTTP layer adds it to the body
    and uses the first line as the reason phrase. ``errors`` is the per-parameter map (400 only).
    ``empty_body`` is set for the auth-layer 401s and for 59x, which PVE sends without JSON.
    """

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, str] | None = None,
        *,
        empty_body: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.empty_body = empty_body

    def __repr__(self) -> str:
        return f"PveApiError({self.status}, {self.message!r}, errors={self.errors!r})"


class ParameterError(PveApiError):
    """400 "Parameter verification failed." with ``errors`` = {parameter: PVE's wording}."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(400, "Parameter verification failed.", errors)


def internal(message: str) -> PveApiError:
    """A handler that dies with a plain string: HTTP 500 with that message."""
    return PveApiError(500, message)


def permission_denied(path: str | None = None, privilege: str | None = None) -> PveApiError:
    """403 ``Permission check failed`` with PVE's ``(<path>, <priv>)`` detail when given."""
    if path is None:
        return PveApiError(403, "Permission check failed")
    detail = f"{path}, {privilege}" if privilege else path
    return PveApiError(403, f"Permission check failed ({detail})")


def not_implemented(method: str, path: str) -> PveApiError:
    """501 for a path the simulator does not serve (PVE answers 501 for unknown methods too)."""
    return PveApiError(
        501, f"Method '{method} {path}' not implemented (pve_sim does not implement this endpoint)"
    )
