"""plugins.toml's tables the core owns, typed: what each key may hold and its default.

The core owns ``[gateway]``, ``[server]``, ``[auth] chain`` and each
``[[providers]]`` table's ``name``/``type``/``models``. Everything else in a
provider table is validated against the ``config_model`` of its provider type,
and each ``[auth.<strategy>]`` table against its strategy type's. A
``[plugin.<name>]`` table is handed to its plugin as it is
(:meth:`Config.plugin_options`); the plugin validates it with
:func:`validate_options` to get the same error messages.

Values may use two conveniences, both resolved here, once, at startup:

* secrets as ``"env:VAR"`` in any field typed :class:`Secret`;
* durations as ``"250ms"``, ``"5s"``, ``"2m"``, ``"12h"`` (or a bare number of
  seconds) in any field typed :class:`Duration`; sizes as ``"10MB"``/``"512KiB"``
  in any field typed :class:`ByteSize`.

Every error is a :class:`~sluiceway.errors.ConfigError` naming the file, the key
path, what was found and what was expected.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .values import ByteSize, Duration, Secret, validate_options

__all__ = [
    "AliasSettings",
    "AliasTarget",
    "AuthSettings",
    "ByteSize",
    "Config",
    "Duration",
    "GatewaySettings",
    "ModelEntry",
    "ProviderPolicy",
    "ProviderSettings",
    "Secret",
    "ServerSettings",
    "SessionSettings",
    "validate_options",
]

# An HTTP header name (RFC 9110 token).
_HTTP_TOKEN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[server]``: how ``sluiceway serve`` listens."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    # In-flight requests get this long after SIGTERM; streams still open then get
    # an error frame and a clean end instead of a cut.
    graceful_timeout: Duration = Duration(30)
    # Idle keep-alive connections close after this; it is also how long a client
    # may take to send its request headers (hypercorn's slow-loris guard).
    # A slow body is bounded separately by [gateway] body_timeout.
    keep_alive_timeout: Duration = Duration(5)
    # hypercorn's default of 1000 churns HTTP/2 connections.
    keep_alive_max_requests: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    access_log: bool = False
    # "json": every log line is a JSON object (ts, level, logger, message).
    log_format: Literal["text", "json"] = "text"
    uvloop: bool = True
    # Providers and plugin lifespans must be up within this; a browser login may need more.
    startup_timeout: Duration = Duration(60)
    # The cyclic garbage collector's thresholds in each serving process. A request
    # leaves no cycles behind, so collections only walk the requests in flight; at
    # Python's default (700 allocations) they ran often enough with a thousand in
    # flight to add a quarter second to the p99.
    gc_threshold: tuple[
        Annotated[int, msgspec.Meta(ge=1)], Annotated[int, msgspec.Meta(ge=1)],
        Annotated[int, msgspec.Meta(ge=1)],
    ] = (20_000, 20, 20)


class GatewaySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[gateway]``: which plugins load (and in what order) and core request limits."""

    plugins: list[str] = msgspec.field(default_factory=list)
    max_body_size: ByteSize = ByteSize(8 * 1024 * 1024)
    # More messages than this in one chat request is a 400 naming `messages`.
    max_messages: Annotated[int, msgspec.Meta(ge=1)] = 4096
    # A body trickled in slowly holds a socket and a task; past this it is a 408.
    body_timeout: Duration = Duration(30)
    # Requests served at once across all providers (0: no cap); more wait up to
    # queue_timeout, then get 503 with Retry-After.
    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=0)] = 0
    queue_timeout: Duration = Duration(10)
    # At most this share of in-flight requests may be retrying at once (with a
    # floor of retry_budget_min), so a failing upstream is not hammered.
    retry_budget: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    retry_budget_min: Annotated[int, msgspec.Meta(ge=0)] = 3
    # Trust a caller's x-request-id only if it looks like an id, not a payload.
    request_id_header: Annotated[str, msgspec.Meta(pattern=_HTTP_TOKEN)] = "x-request-id"
    # Key ids (of any auth strategy) that may read what the gateway knows about
    # every caller: GET /info, and metrics labelled by key. Empty: nobody, while
    # authentication is on (with it off, everyone).
    operator_keys: list[str] = msgspec.field(default_factory=list)


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth]``: the ordered chain of auth strategies; empty means authentication is off.

    Each ``[auth.<strategy>]`` sub-table holds that strategy's options.
    """

    chain: list[str] = msgspec.field(default_factory=list)
    options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


# The variable a session key is read from when ``[sessions] key`` is not set.
SESSION_KEY_ENV = "SLUICEWAY_SESSION_KEY"


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


class StateSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[state]``: where the state that must hold across gateway instances lives.

    ``memory`` (the default): each process keeps its own. ``redis``: the gateway-wide
    in-flight cap, each provider's pool and its deployments' rests (open breakers,
    rate-limit cooldowns) are shared by every instance on ``url``; a slot a crashed
    instance held frees itself within ``lease_ttl``.
    """

    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None
    key_prefix: str = "sluiceway:"
    # Slots are leases renewed while held; a dead holder's lapse after this long.
    lease_ttl: Duration = Duration(30)
    # How often each instance reads the rests the others decided.
    sync_interval: Duration = Duration(0.5)
    # When Redis is down: "open" falls back to this process's own caps (logged),
    # "closed" answers 503 until it is back.
    on_storage_error: Literal["open", "closed"] = "open"

    def __post_init__(self) -> None:
        if self.backend == "redis" and not (self.url or "").startswith(_REDIS_SCHEMES):
            raise ValueError(f"backend = \"redis\" needs a url starting with one of "
                             f"{', '.join(_REDIS_SCHEMES)}")
        if self.backend == "memory" and self.url is not None:
            raise ValueError('url is for backend = "redis"')
        if not (self.lease_ttl > 0 and self.sync_interval > 0):
            raise ValueError("lease_ttl and sync_interval must be longer than 0s")


class SessionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sessions]``: the encrypted store of logins (browser sessions, tokens) that
    providers whose credentials expire keep between requests and restarts."""

    # "file" (one encrypted file per provider under `path`) or a Redis URL, for
    # several gateway instances sharing their logins.
    storage: str = "file"
    path: str = ".sessions"
    # Fernet key(s), comma-separated, the first encrypting: only as "env:VAR".
    # Unset: $SLUICEWAY_SESSION_KEY when set, else `key_file`.
    key: Secret | None = None
    # Created with mode 0600 on first use; default <path>/session.key.
    key_file: str | None = None
    # How long a login is trusted at most, whatever the site says.
    lifetime: Duration = Duration(12 * 3600)
    # A session this close to expiry is renewed in the background while still used.
    refresh_margin: Duration = Duration(600)
    # After a failed login, requests fail at once for this long instead of each
    # starting a browser against a site that is down.
    login_backoff: Duration = Duration(10)

    def __post_init__(self) -> None:
        if self.storage != "file":
            # Checked here without importing redis (an optional extra); the full URL
            # check runs when the store is opened.
            scheme = self.storage.partition("://")[0]
            if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
                raise ValueError(
                    f"expected 'file' or a Redis URL (redis://...), got {self.storage!r}"
                )
        if self.key is not None and not self.key.source.startswith("env:"):
            raise ValueError("write the session key as 'env:VAR', never in the file")
        if self.refresh_margin >= self.lifetime:
            raise ValueError("refresh_margin must be shorter than lifetime")


class ModelEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One model a provider serves: the public ``name`` and the provider's own id for it."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    upstream: Annotated[str, msgspec.Meta(min_length=1)] | None = None

    @property
    def upstream_id(self) -> str:
        return self.upstream or self.name


FailureKind = Literal[
    "context_window", "auth", "rate_limit", "server", "timeout", "connect", "busy"
]
# Falling over to another deployment is worth it for every failure the request
# itself did not cause.
DEFAULT_FALLBACK_ON: tuple[FailureKind, ...] = (
    "context_window", "auth", "rate_limit", "server", "timeout", "connect", "busy",
)
StrategyName = Literal["fallback", "weighted", "least-busy", "lowest-latency", "prefix-affinity"]


class ProviderPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The keys of a ``[[providers]]`` table that the core owns: capacity, retries, health."""

    # Requests in flight to this provider at once; more wait, up to `buffer` of them.
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 1024
    buffer: Annotated[int, msgspec.Meta(ge=0)] = 1024
    # Past the buffer: refuse at once (503) rather than queue anyway.
    drop_excess: bool = False
    queue_timeout: Duration = Duration(10)
    # Re-sends of a failed request to the same provider (falling over to another
    # target of an alias does not count).
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    # One deadline for the whole request, every retry and wait included (for a
    # stream: until its first chunk).
    timeout: Duration = Duration(300)
    cooldown_failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    cooldown_window: Duration = Duration(60)
    cooldown: Duration = Duration(30)
    fallback_on: list[FailureKind] = msgspec.field(
        default_factory=lambda: list(DEFAULT_FALLBACK_ON)
    )


POLICY_KEYS = frozenset(f.name for f in msgspec.structs.fields(ProviderPolicy))


class ProviderSettings(msgspec.Struct, kw_only=True):
    """One ``[[providers]]`` table. ``options`` holds every key that is neither the
    core's (``name``, ``type``, ``models``, and the :class:`ProviderPolicy` keys)
    nor anyone else's: the provider type validates them."""

    name: str
    type: str
    models: list[ModelEntry] = msgspec.field(default_factory=list)
    policy: ProviderPolicy = msgspec.field(default_factory=ProviderPolicy)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    index: int = 0


class AliasTarget(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One target of an alias: ``"provider/model"`` and its share of traffic."""

    target: Annotated[str, msgspec.Meta(pattern=r"^[^/]+/.+$")]
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0

    @property
    def provider(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def model(self) -> str:
        return self.target.split("/", 1)[1]


class AliasSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[[aliases]]``: a public model name served by several targets, in a strategy."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    targets: Annotated[list[AliasTarget], msgspec.Meta(min_length=1)]
    strategy: StrategyName = "fallback"
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    timeout: Duration = Duration(300)
    fallback_on: list[FailureKind] = msgspec.field(
        default_factory=lambda: list(DEFAULT_FALLBACK_ON)
    )


class Config(msgspec.Struct, kw_only=True):
    """The whole configuration, as read from one file (or built in code)."""

    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    providers: list[ProviderSettings] = msgspec.field(default_factory=list)
    aliases: list[AliasSettings] = msgspec.field(default_factory=list)
    plugin: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    sessions: SessionSettings = msgspec.field(default_factory=SessionSettings)
    state: StateSettings = msgspec.field(default_factory=StateSettings)
    source: str = "<config>"
    base_dir: str = "."

    def plugin_options(self, name: str) -> dict[str, Any]:
        """The raw ``[plugin.<name>]`` table (empty if absent)."""
        return self.plugin.get(name, {})

    def shared_storage(self) -> str:
        """Where state shared by instances lives unless a plugin's table says: the
        ``[state]`` Redis URL, or ``memory://`` (each process its own)."""
        state = self.state
        return state.url if state.backend == "redis" and state.url else "memory://"
