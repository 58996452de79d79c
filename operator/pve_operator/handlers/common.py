"""Names shared by the handler modules."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import kopf

from pve_operator.api.v1alpha1 import GROUP, VERSION

log = logging.getLogger(__name__)
_Handler = TypeVar("_Handler", bound=Callable[..., Any])

POOLS = (GROUP, VERSION, "proxmoxserverpools")
POLICIES = (GROUP, VERSION, "containerpolicies")

#: Privileges the operator needs, by ACL path (docs/proxmox-setup.md has the pveum commands).
REQUIRED_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "/vms": (
        "VM.Allocate",
        "VM.Audit",
        "VM.PowerMgmt",
        "VM.Migrate",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Disk",
        "VM.Config.Network",
        "VM.Config.Options",
    ),
    "/storage": ("Datastore.AllocateSpace", "Datastore.Audit"),
    "/nodes": ("Sys.Audit",),
}


def namespaced(namespace: str | None) -> str:
    """Both kinds are namespaced, so Kopf always passes a namespace; this makes that explicit."""
    if namespace is None:
        raise ValueError("pve.ctoperator.io objects are namespaced")
    return namespace


def contained(retry_after_seconds: float) -> Callable[[_Handler], _Handler]:
    """Whatever a handler raises leaves it as a ``kopf.TemporaryError`` with a redacted message,
    retried after ``retry_after_seconds`` (the handler's normal interval, not Kopf's 60 s backoff).

    Kopf logs an unexpected exception with its traceback and stores its text in the object's progress
    annotation; an exception can quote a credential (a header value, a URL). Here every message passes
    through ``OperatorRuntime.redact`` first, and the original exception is not chained.
    """

    def decorate(handler: _Handler) -> _Handler:
        @functools.wraps(handler)
        def wrapper(**kwargs: Any) -> Any:
            try:
                return handler(**kwargs)
            except kopf.PermanentError as exc:
                raise kopf.PermanentError(_redacted(kwargs, str(exc))) from None
            except kopf.TemporaryError as exc:
                raise kopf.TemporaryError(_redacted(kwargs, str(exc)), delay=exc.delay) from None
            except Exception as exc:
                message = _redacted(kwargs, f"{type(exc).__name__}: {exc}")
                where = f"{kwargs.get('namespace')}/{kwargs.get('name')}"
                log.error("%s of %s failed: %s", handler.__name__, where, message)
                raise kopf.TemporaryError(message, delay=retry_after_seconds) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def _redacted(kwargs: dict[str, Any], text: str) -> str:
    memo = kwargs.get("memo")
    runtime = getattr(memo, "runtime", None)
    return runtime.redact(text)[:1024] if runtime is not None else text[:1024]
