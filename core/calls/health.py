"""Passive health of one deployment: a circuit breaker and a latency estimate.

The breaker counts upstream failures (server errors, timeouts, refused
connections, rate limits) in a sliding window. ``failures`` of them within
``window`` open it: the deployment is skipped for ``cooldown`` seconds (longer
each time it opens again in a row, up to ``max_cooldown``). Then it is
half-open: exactly one request is let through as a probe; success closes the
breaker, failure opens it again. When the failure that opens it is a rate
limit with a Retry-After, the rest lasts at least that long. Client errors and
waits for a pool slot never count.

Latency is an exponentially weighted moving average of successful calls (time
to the response, or to the first chunk of a stream), used by the
``lowest-latency`` strategy.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerSettings", "DeploymentHealth"]

State = Literal["closed", "open", "half_open"]


class BreakerSettings:
    """When a deployment is rested, and for how long."""

    __slots__ = ("cooldown", "failures", "max_cooldown", "window")

    def __init__(
        self,
        failures: int = 5,
        window: float = 60.0,
        cooldown: float = 30.0,
        max_cooldown: float = 300.0,
    ) -> None:
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown


class DeploymentHealth:
    """Breaker state, in-flight count and latency for one deployment."""

    __slots__ = (
        "_failures",
        "_opened_times",
        "_probe_out",
        "inflight",
        "latency",
        "on_open",
        "open_reason",
        "open_until",
        "settings",
        "state",
    )

    # Weight of the newest sample in the latency average.
    ALPHA = 0.2

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self.state: State = "closed"
        self.open_until = 0.0
        # The kind of failure that opened the breaker (e.g. "rate_limit").
        self.open_reason: str | None = None
        self.inflight = 0
        self.latency: float | None = None
        self._failures: collections.deque[float] = collections.deque()
        self._opened_times = 0
        self._probe_out = False
        # Told (rest in seconds, reason) when this breaker opens: for sharing the rest.
        self.on_open: Callable[[float, str | None], None] | None = None

    def available(self, now: float | None = None) -> bool:
        """Whether a request could be sent now; claims nothing."""
        if self.state == "closed":
            return True
        now = time.monotonic() if now is None else now
        if self.state == "open":
            return now >= self.open_until
        return not self._probe_out

    def admit(self, now: float | None = None) -> bool:
        """Whether a request may be sent now; in half-open state this claims the one
        probe, in the same step as the check, so two requests cannot both probe.
        An admitted request that is not sent after all calls :meth:`record_neutral`."""
        if self.state == "closed":
            return True
        now = time.monotonic() if now is None else now
        if self.state == "open":
            if now < self.open_until:
                return False
            self.state = "half_open"
            self._probe_out = False
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def claim(self) -> None:
        """Record that a request is going out. Pair with :meth:`finish` when the
        request (or its whole stream) ends."""
        self.inflight += 1

    def finish(self) -> None:
        self.inflight -= 1

    def record_success(self, latency: float) -> None:
        self.latency = (
            latency
            if self.latency is None
            else (self.ALPHA * latency + (1 - self.ALPHA) * self.latency)
        )
        if self.state != "closed":
            self.state = "closed"
            self._opened_times = 0
            self._failures.clear()
        self._probe_out = False

    def record_neutral(self) -> None:
        """The attempt ended without telling us anything about the upstream."""
        if self.state == "half_open":
            self._probe_out = False

    def record_failure(
        self, kind: str = "server", *, rest_for: float | None = None, now: float | None = None
    ) -> None:
        """An upstream failure; ``rest_for`` opens the breaker for at least that long."""
        now = time.monotonic() if now is None else now
        if self.state == "open":
            return  # already resting: late failures of earlier requests say nothing new
        if self.state == "half_open":
            self.open_reason = kind
            self._open(now, rest_for)
            return
        failures = self._failures
        failures.append(now)
        horizon = now - self.settings.window
        while failures and failures[0] < horizon:
            failures.popleft()
        if len(failures) >= self.settings.failures:
            self.open_reason = kind
            self._open(now, rest_for)

    def _open(self, now: float, rest_for: float | None) -> None:
        cooldown = min(self.settings.cooldown * (2**self._opened_times), self.settings.max_cooldown)
        if rest_for is not None:
            cooldown = min(max(cooldown, rest_for), max(self.settings.max_cooldown, cooldown))
        self._opened_times += 1
        self.state = "open"
        self.open_until = now + cooldown
        self._probe_out = False
        self._failures.clear()
        if self.on_open is not None:
            self.on_open(cooldown, self.open_reason)

    def rest(self, seconds: float, reason: str | None, now: float | None = None) -> None:
        """Rest for ``seconds`` from now, as another instance decided (a longer rest
        already under way stands)."""
        now = time.monotonic() if now is None else now
        if self.state == "open" and self.open_until >= now + seconds:
            return
        # A probe already out still reports; the rest only keeps others away.
        self.state = "open"
        self.open_until = now + seconds
        self.open_reason = reason
