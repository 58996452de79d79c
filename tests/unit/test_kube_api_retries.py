"""After a Kubernetes API outage the operator resumes within seconds, not after Kopf's 21 s backoff.

Seen in a review: after a kube-apiserver outage, drift repair resumed only 23 s after the API was
back: Kopf retries a failed request after 1, 1, 2, 3, 5, 8, 13 and 21 s by default, so a request
that failed during the outage could sleep 21 s past its end.
"""

from __future__ import annotations

from types import SimpleNamespace

import kopf

from pve_operator.handlers import lifecycle


def test_no_retry_of_a_kubernetes_request_waits_longer_than_5_s_and_they_span_a_minute(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(lifecycle, "load_kubernetes_config", lambda: None)
    monkeypatch.setattr(lifecycle, "METRICS_PORT", 0)
    settings = kopf.OperatorSettings()
    default_longest = max(settings.networking.error_backoffs)  # type: ignore[type-var, arg-type]
    lifecycle.configure(settings=settings, memo=SimpleNamespace())
    backoffs = list(settings.networking.error_backoffs)  # type: ignore[arg-type]
    assert default_longest > 5 >= max(backoffs)
    assert sum(backoffs) >= 60, "an outage of a minute is ridden out without losing the request"
