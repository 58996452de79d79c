"""No exception text carries a credential out of a handler: every message is redacted first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from pve_operator.handlers.common import contained
from pve_operator.runtime import OperatorRuntime

SECRET = "6f5d2c9e-ünï-€-3b1a"


def runtime_knowing_the_secret() -> OperatorRuntime:
    runtime = OperatorRuntime()
    runtime.remember_secrets([SECRET, "ct@pve!op", "abc"])
    return runtime


@pytest.mark.parametrize(
    "text",
    [
        f"Invalid header value b'PVEAPIToken=ct@pve!op={SECRET}'",
        f"Invalid header value {SECRET.encode()!r}",
        f"Invalid header value {SECRET!r}",
        "https://pve:8006/?token=6f5d2c9e-%C3%BCn%C3%AF-%E2%82%AC-3b1a",
    ],
    ids=["plain", "bytes-repr", "str-repr", "url-encoded"],
)
def test_every_spelling_of_a_secret_is_redacted(text: str) -> None:
    redacted = runtime_knowing_the_secret().redact(text)
    assert "6f5d2c9e" not in redacted and "***" in redacted


def test_short_values_are_not_redacted_out_of_ordinary_words() -> None:
    assert runtime_knowing_the_secret().redact("abcdef cabbage") == "abcdef cabbage"


def test_a_handler_that_raises_leaves_a_redacted_temporary_error_at_its_own_interval() -> None:
    @contained(15)
    def handler(**_: Any) -> None:
        raise ValueError(f"Invalid header value b'PVEAPIToken=ct@pve!op={SECRET}'")

    with pytest.raises(kopf.TemporaryError) as raised:
        handler(memo=SimpleNamespace(runtime=runtime_knowing_the_secret()), namespace="ns", name="lab")
    assert raised.value.delay == 15
    assert SECRET not in str(raised.value) and "ValueError" in str(raised.value)
    assert raised.value.__suppress_context__ and raised.value.__cause__ is None


def test_deliberate_kopf_errors_keep_their_delay_and_are_redacted_too() -> None:
    @contained(15)
    def handler(**_: Any) -> None:
        raise kopf.TemporaryError(f"deletion waits: {SECRET}", delay=30)

    with pytest.raises(kopf.TemporaryError) as raised:
        handler(memo=SimpleNamespace(runtime=runtime_knowing_the_secret()))
    assert raised.value.delay == 30 and SECRET not in str(raised.value)
