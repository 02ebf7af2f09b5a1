"""The one retry loop: pick a deployment, take a pool slot, call, and on failure
fall over, retry with backoff, or give up.

Rules, in the order they apply to a failed attempt:

* A client error (the request itself is wrong) is returned at once.
* A deployment that failed is rested by its breaker as the failure warrants
  (see :mod:`sluiceway.calls.health`); a wait for a pool slot is never a failure.
* If another deployment of the group has not been tried, the request falls
  over to it at once, for the kinds listed in the group's ``fallback_on``.
* Otherwise the same deployment is retried after a fully jittered exponential
  backoff, or after the upstream's own Retry-After when it fits, up to the
  group's ``max_retries``.
* Every re-send needs room in the retry budget (at most ``retry_budget`` of the
  requests in flight are retrying, with a floor of ``retry_budget_min``) and
  time before the request's deadline, which covers every attempt and wait.
* Nothing is retried once a byte has gone to the client: a stream is handed
  over only with its first chunk in hand.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import (
    GatewayError,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from ..events import AttemptEnded, AttemptStarted

if TYPE_CHECKING:
    from .call import ModelCall
    from .router import Deployment, ModelGroup

__all__ = ["Attempts", "Dispatcher", "HeldStream", "RetryBudget", "first_and_rest"]

T = TypeVar("T")
C = TypeVar("C")

# Kinds that say nothing about the upstream's health.
_NOT_UPSTREAM_FAULTS = frozenset({"client", "busy", "context_window", "auth"})
# Other credentials of one provider tried within one request, at most.
_MAX_ALTERNATES = 8
# Kinds worth sending again to the same deployment.
_RETRY_SAME = frozenset({"rate_limit", "server", "timeout", "connect"})


class RetryBudget:
    """Caps how many requests may be retrying at once, relative to load."""

    __slots__ = ("active", "minimum", "ratio")

    def __init__(self, ratio: float = 0.2, minimum: int = 3) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.active = 0

    def try_acquire(self, inflight: int) -> bool:
        if self.active >= max(self.minimum, int(self.ratio * inflight)):
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


@dataclass(slots=True)
class Attempts:
    """What the loop did, for the response headers and the log."""

    deployment: Deployment | None = None
    count: int = 0
    upstream_seconds: float = 0.0
    # Waiting for a pool slot (the gateway's own queueing) and backing off
    # between retries (the upstream's doing) are kept apart.
    queued_seconds: float = 0.0
    backoff_seconds: float = 0.0
    last_kind: str | None = None


class Dispatcher:
    """Runs requests for model groups against their deployments."""

    def __init__(
        self,
        budget: RetryBudget,
        inflight: Callable[[], int],
        *,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        max_retry_after: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        # The configured budget: its ratio and floor apply to each provider's own.
        self.budget = budget
        self._budgets: dict[str, RetryBudget] = {}
        self.inflight = inflight
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.rng = rng or random.Random()

    async def run(
        self,
        model_call: ModelCall,
        call: Callable[[Deployment], Awaitable[T]],
        *,
        hold: bool,
    ) -> T:
        """The loop itself, for any kind of call: ``call(deployment)`` makes one
        attempt (``request.upstream_model`` is already the deployment's id) and
        raises a ``GatewayError`` on failure. What the loop does is recorded in
        ``model_call.attempts``. With ``hold``, a successful call keeps the
        deployment's pool slot: its result must hand it on (as
        :func:`first_and_rest` does) to be released later."""
        clock = time.monotonic
        loop = asyncio.get_running_loop()
        ctx = model_call.context
        group = model_call.group
        request = model_call.request
        key_id = model_call.key_id
        # The deadline counts from the request's arrival: reading the body and
        # waiting for the gateway's capacity are part of it.
        deadline = clock() + group.timeout - ctx.elapsed
        attempts = model_call.attempts
        events = ctx.gateway.events
        emit = events.emit if events.enabled else None
        order = model_call.candidates()
        tried: set[int] = set()
        retries = 0
        alternates = 0
        budget: RetryBudget | None = None
        last_error: GatewayError | None = None
        try:
            while True:
                deployment = _admit_next(order, tried)
                if deployment is None:
                    raise last_error or _all_cooling(group, order)
                health = deployment.health
                started = clock()
                if started >= deadline:
                    health.record_neutral()
                    raise last_error or _deadline_error(group)
                try:
                    await deployment.pool.acquire(deadline - started)
                except ServiceUnavailable as busy:
                    # A full pool is not a failure: try another deployment, if any.
                    health.record_neutral()
                    attempts.queued_seconds += clock() - started
                    tried.add(id(deployment))
                    last_error = busy
                    continue
                except BaseException:
                    health.record_neutral()
                    raise
                sent = clock()
                attempts.queued_seconds += sent - started
                attempts.deployment = deployment
                attempts.count += 1
                request.upstream_model = deployment.upstream_model
                if emit is not None:
                    emit(AttemptStarted(
                        request_id=ctx.request_id, provider=deployment.provider_name,
                        deployment=_name(deployment), model=deployment.upstream_model,
                        key_id=key_id, attempt=attempts.count, stream=hold,
                    ))
                health.claim()
                # Cheaper than asyncio.timeout per attempt: a timer that interrupts
                # the request, absorbed below if it is what fired.
                timer = loop.call_later(max(deadline - sent, 0.0), ctx.interrupt, "deadline")
                try:
                    result = await call(deployment)
                except asyncio.CancelledError:
                    timer.cancel()
                    health.record_neutral()
                    health.finish()
                    deployment.pool.release()
                    if not ctx.resume("deadline"):
                        if emit is not None:  # a hang-up or shutdown: the attempt ends too
                            emit(_ended(model_call, deployment, attempts, clock() - sent,
                                        "give_up", status=499, kind="cancelled"))
                        raise
                    # Out of time: not this deployment's fault, and nothing to retry.
                    attempts.upstream_seconds += clock() - sent
                    timed_out = _deadline_error(group)
                    if emit is not None:
                        emit(_ended(model_call, deployment, attempts, clock() - sent, "give_up",
                                    error=timed_out))
                    raise timed_out from None
                except GatewayError as exc:
                    error = exc
                except BaseException:
                    timer.cancel()
                    health.record_neutral()
                    health.finish()
                    deployment.pool.release()
                    if emit is not None:
                        emit(_ended(model_call, deployment, attempts, clock() - sent,
                                    "give_up", status=500, kind="server"))
                    raise
                else:
                    timer.cancel()
                    answered = clock() - sent
                    attempts.upstream_seconds += answered
                    health.record_success(answered)
                    if emit is not None:
                        emit(_ended(model_call, deployment, attempts, answered, "done"))
                    if not hold:
                        health.finish()
                        deployment.pool.release()
                    return result
                # -- the attempt failed ----------------------------------------
                timer.cancel()
                health.finish()
                deployment.pool.release()
                latency = clock() - sent
                attempts.upstream_seconds += latency
                kind = error.kind
                attempts.last_kind = kind
                if kind in _NOT_UPSTREAM_FAULTS or error.alternate:
                    # Not the deployment's health: a bad request, no capacity, a key
                    # the provider rested (it has another), or our own credential.
                    health.record_neutral()
                else:
                    health.record_failure(
                        kind, rest_for=error.retry_after if kind == "rate_limit" else None
                    )
                last_error = error
                tried.add(id(deployment))
                if error.alternate and alternates < _MAX_ALTERNATES:
                    # The provider has another key: try it at once. This re-sends to
                    # the same upstream with another credential, so it takes no budget.
                    alternates += 1
                    tried.discard(id(deployment))
                    if emit is not None:
                        emit(_ended(model_call, deployment, attempts, latency, "retry",
                                    error=error))
                    continue
                delay = 0.0
                if kind in group.fallback_on and _any_available(order, tried):
                    step = "fallback"
                elif (
                    kind in _RETRY_SAME
                    and retries < group.max_retries
                    and not (error.retry_after or 0) > self.max_retry_after
                ):
                    # (An upstream asking for a longer wait than we would sleep is
                    # answered with its own Retry-After instead.)
                    retries += 1
                    tried.discard(id(deployment))
                    delay = self._backoff(retries, error.retry_after)
                    step = "retry"
                else:
                    step = "give_up"
                if step != "give_up" and budget is None:
                    budget = self._budget_for(deployment)
                    if not budget.try_acquire(deployment.pool.active + deployment.pool.waiting):
                        budget = None
                        step = "give_up"
                if delay and clock() + delay >= deadline:
                    step = "give_up"
                if emit is not None:
                    label = step
                    if step == "retry" and not health.available(clock() + delay):
                        # This very failure opened the breaker for longer than the
                        # backoff: the loop will go on elsewhere, or nowhere.
                        label = "fallback" if _any_available(order, tried) else "give_up"
                    emit(_ended(model_call, deployment, attempts, latency, label, error=error))
                if step == "give_up":
                    raise error
                if delay:
                    await asyncio.sleep(delay)
                    attempts.backoff_seconds += delay
        except GatewayError as error:
            if attempts.count:
                error.headers["x-sluiceway-attempts"] = str(attempts.count)
            raise
        finally:
            if budget is not None:
                budget.release()

    def _budget_for(self, deployment: Deployment) -> RetryBudget:
        """One retry budget per provider, as Envoy keeps one per cluster: a failing
        provider cannot use up the retries of the others."""
        budget = self._budgets.get(deployment.provider_name)
        if budget is None:
            budget = self._budgets[deployment.provider_name] = RetryBudget(
                self.budget.ratio, self.budget.minimum
            )
        return budget

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None and 0 < retry_after <= self.max_retry_after:
            return retry_after
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (retry - 1)))
        return self.rng.uniform(0, ceiling)


def _name(deployment: Deployment) -> str:
    return f"{deployment.provider_name}/{deployment.upstream_model}"


def _ended(
    call: ModelCall, deployment: Deployment, attempts: Attempts, latency: float,
    step: str, *, error: GatewayError | None = None, status: int | None = None,
    kind: str | None = None,
) -> AttemptEnded:
    if error is not None:
        status, kind = error.status, error.kind
    return AttemptEnded(
        request_id=call.request_id, provider=deployment.provider_name,
        deployment=_name(deployment), model=deployment.upstream_model, key_id=call.key_id,
        attempt=attempts.count, status=200 if status is None else status,
        latency=latency, error=kind, next=step,
    )


def _deadline_error(group: ModelGroup) -> GatewayError:
    return UpstreamTimeout(
        f"No answer for model {group.name!r} within its {group.timeout:g}s deadline.",
        code="deadline_exceeded",
    )


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def first_and_rest(
    deployment: Deployment, chunks: AsyncIterator[C]
) -> tuple[C, HeldStream[C]]:
    """Wait for a stream's first item (a stream that ends at once is an
    ``UpstreamError``); the rest holds the deployment's slot until it is done."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise UpstreamError(
            f"Provider {deployment.provider_name!r} ended the stream without sending anything."
        ) from None
    except BaseException:
        await _aclose(chunks)
        raise
    return first, HeldStream(chunks, deployment)


class HeldStream(Generic[C]):
    """The rest of a stream; gives its deployment's slot back exactly once, when
    exhausted, failed or closed, even if it is closed before it was ever read."""

    __slots__ = ("_chunks", "_deployment", "_done")

    def __init__(self, chunks: AsyncIterator[C], deployment: Deployment) -> None:
        self._chunks = chunks
        self._deployment = deployment
        self._done = False

    def __aiter__(self) -> HeldStream[C]:
        return self

    async def __anext__(self) -> C:
        try:
            return await anext(self._chunks)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            # Close the upstream first, so its connection is back before the slot is.
            await _aclose(self._chunks)
        finally:
            self._deployment.health.finish()
            self._deployment.pool.release()


def _admit_next(order: list[Deployment], tried: set[int]) -> Deployment | None:
    """The first untried deployment whose breaker admits a request (claiming the
    half-open probe, if that is what it is)."""
    now = time.monotonic()
    for deployment in order:
        if id(deployment) not in tried and deployment.health.admit(now):
            return deployment
    return None


def _any_available(order: list[Deployment], tried: set[int]) -> bool:
    now = time.monotonic()
    return any(id(d) not in tried and d.health.available(now) for d in order)


def _all_cooling(group: ModelGroup, order: list[Deployment]) -> GatewayError:
    now = time.monotonic()
    soonest = min((d.health.open_until for d in order), default=now + 1.0)
    retry_after = max(soonest - now, 1.0)
    if all(d.health.open_reason == "rate_limit" for d in order):
        return RateLimited(
            f"The upstream for model {group.name!r} is rate limited; retry after the time it gave.",
            retry_after=retry_after,
        )
    return ServiceUnavailable(
        f"Every deployment of model {group.name!r} is cooling down after failures.",
        code="no_healthy_deployment",
        retry_after=retry_after,
    )
