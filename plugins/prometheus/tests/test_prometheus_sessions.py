"""Session logins (web-login providers) are counted from their events."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sluiceway
from sluiceway.events import SessionLogin


def test_prometheus_counts_session_logins() -> None:
    gateway = sluiceway.create_app({"gateway": {"plugins": ["prometheus"]}})
    ((_, sink),) = gateway.events.sinks
    for reason, outcome, seconds in (("absent", "ok", 1.2), ("refresh", "ok", 0.8),
                                     ("rejected", "failed", 3.0)):
        gateway.events.emit(SessionLogin(request_id="", provider="demo", reason=reason,
                                         outcome=outcome, duration=seconds))
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(sink.registry).decode())}
    logins = {(s.labels["reason"], s.labels["outcome"]): s.value
              for s in families["sluiceway_session_logins"].samples
              if s.name.endswith("_total")}
    assert logins == {("absent", "ok"): 1, ("refresh", "ok"): 1, ("rejected", "failed"): 1}
    counts = {s.labels["outcome"]: s.value
              for s in families["sluiceway_session_login_duration_seconds"].samples
              if s.name.endswith("_count")}
    assert counts == {"ok": 2, "failed": 1}
