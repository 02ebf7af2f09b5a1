"""The traffic log shared by every instance (``[state] backend = "redis"``).

Each finished request is queued (bounded: under a flood the oldest wait is
dropped rather than memory growing) and written by one background task: the row
pushed onto a capped list, and the day's totals per key and per model raised in
a hash that expires after :data:`~sluiceway_admin.recent.DAYS` days. The admin
API then reads what every instance saw. Redis down: rows are dropped (logged
by the connection), and the admin API answers from what Redis holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import msgspec

from sluiceway.api import RedisConnection

__all__ = ["SharedTraffic"]

log = logging.getLogger("sluiceway.admin")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_QUEUE = 10_000


class SharedTraffic:
    """Rows and daily totals in Redis, written in the background."""

    def __init__(self, url: str, key_prefix: str, size: int, days: int) -> None:
        self.connection = RedisConnection(url, what="admin traffic", logger=log,
                                          key_prefix=key_prefix)
        self.size, self.days = size, days
        self._queue: asyncio.Queue[tuple[dict[str, Any], list[tuple[str, str, int, float]]]] \
            | None = None

    def _day_key(self, day: str) -> str:
        return self.connection.key(f"day:{day}")

    def put(self, row: dict[str, Any], totals: list[tuple[str, str, int, float]]) -> None:
        """Queue a row and its (kind, name, tokens, cost) totals; never blocks."""
        queue = self._queue
        if queue is None:
            return  # not serving (no lifespan entered)
        if queue.full():
            queue.get_nowait()  # the oldest goes: memory stays bounded
        queue.put_nowait((row, totals))

    async def _write(self, row: dict[str, Any],
                     totals: list[tuple[str, str, int, float]]) -> None:
        client = self.connection.client()
        day = datetime.fromtimestamp(row["at"], UTC).strftime("%Y-%m-%d")
        pipe = client.pipeline(transaction=False)
        recent = self.connection.key("recent")
        pipe.lpush(recent, _encode(row))
        pipe.ltrim(recent, 0, self.size - 1)
        day_key = self._day_key(day)
        for kind, name, tokens, cost in totals:
            pipe.hincrby(day_key, f"{kind}|{name}|requests", 1)
            pipe.hincrby(day_key, f"{kind}|{name}|tokens", tokens)
            pipe.hincrbyfloat(day_key, f"{kind}|{name}|cost", cost)
        pipe.expire(day_key, int(timedelta(days=self.days + 1).total_seconds()))
        await pipe.execute()

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            row, totals = await self._queue.get()
            await self.connection.call(partial(self._write, row, totals))

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self._queue = asyncio.Queue(_QUEUE)
        writer = asyncio.get_running_loop().create_task(self._drain())
        try:
            yield
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._queue = None
            await self.connection.aclose()

    async def recent(self) -> list[dict[str, Any]]:
        """The last rows of every instance, newest first."""
        connection = self.connection
        raw = await connection.call(
            lambda: connection.client().lrange(connection.key("recent"), 0, self.size - 1))
        return [_decode(item) for item in raw or ()]

    async def spend(self, by: str, days: int) -> list[dict[str, Any]]:
        """Totals per day and per ``by``, newest day first, of every instance."""
        connection = self.connection
        today = datetime.now(UTC).date()
        rows: list[dict[str, Any]] = []
        for back in range(days):
            day = (today - timedelta(days=back)).strftime("%Y-%m-%d")
            key = self._day_key(day)

            async def read(key: str = key) -> Any:
                return await connection.client().hgetall(key)

            fields = await connection.call(read)
            totals: dict[str, dict[str, Any]] = {}
            for field, value in (fields or {}).items():
                text = field.decode() if isinstance(field, bytes) else str(field)
                kind, name, measure = text.split("|", 2)
                if kind != by:
                    continue
                entry = totals.setdefault(name, {"day": day, by: name, "requests": 0,
                                                 "tokens": 0, "cost": 0.0})
                entry[measure] = (round(float(value), 10) if measure == "cost"
                                  else int(value))
            rows.extend(totals[name] for name in sorted(totals))
        return rows
