"""The ledger: one admission and one settlement per request, whatever the backend.

The middleware asks a :class:`Ledger` two things per request: ``admit`` (take a
concurrency slot, a request and the token estimate, all or nothing) and
``finish`` (settle the tokens with the real usage, give the slot back). A
backend that can do each in one step does: :class:`~sluiceway_limits.RedisLedger`
is one Lua script each, two Redis round trips per request.
:class:`LimiterLedger` composes the per-limit protocols (:class:`Limiter`,
:class:`ConcurrencyLimiter`) for everything else: the in-memory counters, and
the moving window in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from .limiter import ConcurrencyLimiter, Decision, Limiter

__all__ = ["Admission", "Ledger", "LimiterLedger", "Refusal"]

Refusal = Literal["concurrency", "tokens_exceed", "requests", "tokens"]


@dataclass(slots=True)
class Admission:
    """The outcome of ``admit``. ``refused`` names the limit that said no (``None``:
    admitted, and everything was taken); ``requests`` and ``tokens`` are the
    decisions for the headers (the state after taking, or as it stands when
    refused). ``lease`` is the backend's handle on the concurrency slot."""

    refused: Refusal | None
    requests: Decision | None = None
    tokens: Decision | None = None
    lease: Any = None


@runtime_checkable
class Ledger(Protocol):
    """Admission and settlement for one principal ``key``; ``None`` limits are off."""

    async def admit(
        self, key: str, *, rpm: int | None, tpm: int | None, max_concurrent: int | None,
        estimate: int, window: float,
    ) -> Admission: ...

    async def finish(
        self, key: str, admission: Admission, *, tokens_delta: int, tpm: int | None,
        window: float, release: bool,
    ) -> Decision | None:
        """Add ``tokens_delta`` (negative: give back) to the key's tokens, release the
        concurrency slot if ``release``; the tokens decision after, when ``tpm``."""
        ...


class LimiterLedger:
    """A ledger over the per-limit protocols: one call per limit. Refusals give
    back what earlier steps took, so nothing is left counted."""

    def __init__(
        self, requests: Limiter, tokens: Limiter, concurrency: ConcurrencyLimiter
    ) -> None:
        self.requests = requests
        self.tokens = tokens
        self.concurrency = concurrency

    async def _current(
        self, key: str, rpm: int | None, tpm: int | None, window: float
    ) -> tuple[Decision | None, Decision | None]:
        requests = (await self.requests.reserve(f"rpm:{key}", 0, rpm, window)
                    if rpm is not None else None)
        tokens = (await self.tokens.reserve(f"tpm:{key}", 0, tpm, window)
                  if tpm is not None else None)
        return requests, tokens

    async def admit(
        self, key: str, *, rpm: int | None, tpm: int | None, max_concurrent: int | None,
        estimate: int, window: float,
    ) -> Admission:
        if max_concurrent is not None and not await self.concurrency.acquire(
                key, max_concurrent):
            return Admission("concurrency", *await self._current(key, rpm, tpm, window))
        lease = True if max_concurrent is not None else None
        try:
            return await self._take(key, rpm, tpm, estimate, window, lease)
        except BaseException:
            if lease is not None:
                await self.concurrency.release(key)
            raise

    async def _take(
        self, key: str, rpm: int | None, tpm: int | None, estimate: int, window: float,
        lease: Any,
    ) -> Admission:
        refused: Refusal | None = None
        if tpm is not None and estimate > tpm:
            refused = "tokens_exceed"
        requests = tokens = None
        if refused is None and rpm is not None:
            requests = await self.requests.reserve(f"rpm:{key}", 1, rpm, window)
            if not requests.allowed:
                refused = "requests"
        if refused is None and tpm is not None:
            tokens = await self.tokens.reserve(f"tpm:{key}", estimate, tpm, window)
            if not tokens.allowed:
                refused = "tokens"
                if rpm is not None:  # this request will not be made after all
                    await self.requests.adjust(f"rpm:{key}", -1, window)
                    requests = None
        if refused is not None:
            if lease is not None:
                await self.concurrency.release(key)
            current = await self._current(key, rpm, tpm, window)
            # The refusing decision carries retry_after: keep it over a fresh read.
            return Admission(refused, requests or current[0], tokens or current[1])
        return Admission(None, requests, tokens, lease)

    async def finish(
        self, key: str, admission: Admission, *, tokens_delta: int, tpm: int | None,
        window: float, release: bool,
    ) -> Decision | None:
        decision = None
        try:
            if tokens_delta:
                await self.tokens.adjust(f"tpm:{key}", tokens_delta, window)
            if tpm is not None:
                decision = await self.tokens.reserve(f"tpm:{key}", 0, tpm, window)
        finally:
            if release and admission.lease is not None:
                admission.lease = None
                await self.concurrency.release(key)
        return decision
