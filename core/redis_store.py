"""Shared state in Redis for plugins: one connection per owner, Lua scripts, and a
failure policy that never lets a Redis outage become a traceback.

Policies that must hold across gateway processes (rate limits, bans, budgets)
keep their state in Redis. :class:`RedisConnection` is what they share: the
storage URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
``redis+cluster://``) checked at startup, one client created on first use in
the serving event loop and closed by the owner's ``lifespan()``, scripts
registered once and run with ``EVALSHA``, and :meth:`RedisConnection.call`,
which turns any Redis failure into ``None`` (and leaves Redis alone for a
second, with a warning at most every 10 s) so that the caller can apply its
``"open"`` or ``"closed"`` policy.

Requires the ``redis`` package (``pip install redis``); the core itself does
not import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .errors import ServiceUnavailable

__all__ = [
    "LEASE_ACQUIRE",
    "LEASE_RENEW",
    "REDIS_ERRORS",
    "STORAGE_SCHEMES",
    "OnStorageError",
    "RedisConnection",
    "check_storage_url",
    "connect",
    "redact_url",
]

T = TypeVar("T")
OnStorageError = Literal["open", "closed"]

STORAGE_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# After a failure, Redis is not tried again for this long: requests neither
# wait for a refused connection nor pile up on a dead server.
RETRY_AFTER_FAILURE = 1.0
WARN_EVERY = 10.0


# Slots held across processes, as leases: a sorted set of lease ids scored by
# their expiry on the Redis clock, so that a crashed holder's slots lapse.
# KEYS[1]: the lease set. ARGV: limit, lease id, lease ttl (ms). 1: taken, 0: full.
LEASE_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
-- Never shorten the set's life below a lease another holder asked for.
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

# KEYS[1]: the lease set. ARGV: lease ttl (ms), then the lease ids still held: each
# that has not lapsed is extended. Returns how many were.
LEASE_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- a lapsed lease stays lapsed
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i])
end
if renewed > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return renewed
"""


def check_storage_url(url: str) -> None:
    """Raise ``ValueError`` naming the problem unless ``url`` is ``memory://`` or a
    Redis URL of a supported scheme (for a ``__post_init__`` of plugin options)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"storage must start with one of {', '.join(s + '://' for s in STORAGE_SCHEMES)},"
            f" not {url!r}"
        )
    if scheme == "memory" and rest:
        raise ValueError(f"storage must be exactly 'memory://', not {url!r}")
    if scheme != "memory" and not rest:
        raise ValueError(f"storage {url!r} names no Redis server")
    if scheme in ("redis+sentinel", "redis+cluster"):
        netloc, _, path = rest.partition("/")
        _hosts(netloc)
        if scheme == "redis+sentinel" and not path.partition("/")[0]:
            raise ValueError(f"storage {url!r} names no sentinel service (.../mymaster)")


def redact_url(url: str) -> str:
    """``url`` without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


def _hosts(netloc: str) -> tuple[str | None, list[tuple[str, int]]]:
    """``[:password@]host:port[,host:port...]`` -> (password, [(host, port)])."""
    password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.partition(":")[2] or userinfo) or None
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, not {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    return password, hosts


def connect(url: str, timeout: float) -> tuple[aredis.Redis, list[aredis.Redis]]:
    """A client for ``redis://``, ``rediss://``, ``unix://`` (one server),
    ``redis+sentinel://[:pw@]host:port[,...]/service[/db]`` (the master the
    sentinels name) or ``redis+cluster://[:pw@]host:port[,...]`` (a cluster);
    and the clients it uses on the side (the sentinels), to close with it."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # Never re-send: the scripts count, and one re-sent after it ran (a reply
        # lost to a timeout) would count twice. A failure goes to the owner's
        # open/closed policy instead; idle pooled connections are checked first.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    scheme, _, rest = url.partition("://")
    if scheme == "redis+sentinel":
        netloc, _, path = rest.partition("/")
        service, _, db = path.partition("/")
        password, hosts = _hosts(netloc)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, socket_timeout=timeout, socket_connect_timeout=timeout)
        client: aredis.Redis = sentinel.master_for(
            service, password=password, db=int(db or 0), **options)
        return client, list(sentinel.sentinels)
    if scheme == "redis+cluster":
        password, hosts = _hosts(rest.partition("/")[0])
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in hosts],
            password=password, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # as above: never re-send a counting script
        )
        return cluster, []  # type: ignore[return-value]  # the same commands and scripts
    return aredis.Redis.from_url(url, **options), []


class RedisConnection:
    """One owner's Redis client, its scripts, and its failure policy.

    ``what`` names the owner in warnings (``"limits"``); ``logger`` is where
    they go; ``unavailable_code`` and ``unavailable_message`` make the 503 that
    :meth:`unavailable` builds for ``on_storage_error = "closed"``. Keys made
    with :meth:`key` carry a hash tag, so that everything one script touches is
    in one Redis Cluster slot.
    """

    def __init__(
        self,
        url: str,
        *,
        what: str,
        logger: logging.Logger,
        key_prefix: str,
        on_storage_error: OnStorageError = "open",
        unavailable_code: str = "storage_unavailable",
        unavailable_message: str = "The gateway's shared storage is unavailable right now.",
        timeout: float = 1.0,
    ) -> None:
        check_storage_url(url)
        self.url = url
        self.what = what
        self.log = logger
        self.key_prefix = key_prefix
        self.on_storage_error: OnStorageError = on_storage_error
        self.unavailable_code = unavailable_code
        self.unavailable_message = unavailable_message
        self.timeout = timeout
        self._client: aredis.Redis | None = None
        self._side_clients: list[aredis.Redis] = []
        self._sources: dict[str, str] = {}
        self._scripts: dict[str, Any] = {}
        self._down_until = 0.0
        self._warned_at = -math.inf
        self._ready: asyncio.Lock | None = None

    def client(self) -> aredis.Redis:
        """The client, created on first use (in the serving event loop)."""
        if self._client is None:
            self._client, self._side_clients = connect(self.url, self.timeout)
            self._scripts = {
                name: self._client.register_script(source)
                for name, source in self._sources.items()
            }
        return self._client

    def add_script(self, name: str, source: str) -> None:
        """Make a Lua script callable as ``script(name, ...)``."""
        self._sources[name] = source
        if self._client is not None:
            self._scripts[name] = self._client.register_script(source)

    async def script(
        self, name: str, keys: Sequence[str], args: Sequence[int | str | bytes]
    ) -> Any:
        """Run a registered script (``EVALSHA``, loaded again if Redis forgot it)."""
        client = self.client()
        if isinstance(client, RedisCluster) and client._initialize:
            await self._learn_slots(client)
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def _learn_slots(self, cluster: RedisCluster) -> None:
        # A new cluster client learns the slots on its first command; many first
        # commands at once race inside the library. One learns, the others wait.
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if time.monotonic() < self._down_until:
                # The one before us failed just now: fail fast, do not queue up.
                raise RedisConnectionError("the cluster could not be reached just now")
            if cluster._initialize:
                await cluster.initialize()

    def key(self, key: str) -> str:
        """``<key_prefix>{<key>}``: the braces are the Redis Cluster hash tag."""
        return f"{self.key_prefix}{{{key}}}"

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """``operation``'s result, or ``None`` when Redis failed (or failed just now)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            return await operation()
        # Not only RedisError: a cluster client can fail inside the library (an
        # AttributeError while its first commands race to learn the slots). Any
        # failure to talk to Redis gets the owner's open/closed policy, not a 500.
        except Exception as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE
            self._warn(exc)
            return None

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            fallback = ("falling back to this process's in-memory state"
                        if self.on_storage_error == "open" else "refusing the requests it guards")
            self.log.warning("%s: Redis storage %s failed (%s: %s); %s", self.what,
                             redact_url(self.url), type(exc).__name__, exc, fallback)

    def unavailable(self) -> ServiceUnavailable:
        """The 503 to raise when the storage is down and the policy is ``"closed"``."""
        return ServiceUnavailable(self.unavailable_message, code=self.unavailable_code,
                                  retry_after=1)

    async def aclose(self) -> None:
        """Close the client (and any sentinel clients); it is created again on use."""
        client, self._client = self._client, None
        side, self._side_clients = self._side_clients, []
        self._scripts = {}
        self._ready = None
        for closing in [*([client] if client is not None else []), *side]:
            with contextlib.suppress(*REDIS_ERRORS):
                await closing.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """For the owner's ``lifespan()``: closes the client at shutdown."""
        try:
            yield
        finally:
            await self.aclose()
