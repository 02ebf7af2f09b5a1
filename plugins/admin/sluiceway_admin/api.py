"""The admin API's endpoints, under ``/admin/v1/``.

One route takes every path below the prefix and dispatches on method and path.
Every request needs an admin key (``Authorization: Bearer``, compared in constant
time with each of ``admin_keys``); an API key, however privileged, never opens
it. Keys are read and changed through the same store code as ``sluiceway
keys`` (the file or Redis, as ``[auth.api-keys]`` says), in a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluiceway_api_keys import ApiKeysOptions, KeyNotFound, KeyOperations, describe_key, key_store

from sluiceway.api import (
    CONTEXT_KEY,
    AuthenticationFailed,
    Config,
    ConfigError,
    Duration,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    StartupError,
    send_bytes,
    validate_options,
)

from .openapi import OPENAPI
from .options import AdminOptions
from .recent import TrafficLog
from .status import providers_status, sessions_status

if TYPE_CHECKING:
    from sluiceway.api import Gateway, Receive, RequestContext, Scope, Send

__all__ = ["PREFIX", "AdminApi"]

PREFIX = "/admin/v1/"
_KEY_PATH = re.compile(r"^keys/(?P<id>[A-Za-z0-9_-]+)(?:/(?P<action>rotate|revoke|enable))?$")
_TEAM_PATH = re.compile(r"^teams/(?P<name>[A-Za-z0-9_.-]+)$")
Handler = Callable[["RequestContext", dict[str, str]], Awaitable[tuple[int, Any]]]
_LIMITS = ("rpm", "tpm", "max_concurrent")
# Failed admin logins allowed per client address within the window, and how many
# addresses are remembered.
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
MAX_TRACKED = 10_000


def _json_bytes(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


class AdminApi:
    """The admin API of one gateway build."""

    def __init__(self, options: AdminOptions, config: Config) -> None:
        # Digests, so that a comparison's time says nothing of a secret's length.
        self._digests = [hashlib.sha256(key.reveal().encode()).digest()
                         for key in options.admin_keys]
        self._role = options.admin_role
        self._config = config
        self._store: KeyOperations | None = None
        # Failed admin logins per client address: a guesser is stopped for a while.
        self._failures: dict[str, collections.deque[float]] = {}

    # -- plumbing ----------------------------------------------------------

    async def _check_admin(self, ctx: RequestContext) -> None:
        client = (ctx.scope.get("client") or ("unknown",))[0]
        now = time.monotonic()
        failures = self._failures.get(client)
        while failures and now - failures[0] > FAILURE_WINDOW:
            failures.popleft()
        if failures is not None and len(failures) >= MAX_FAILURES:
            raise RateLimited("Too many failed admin logins from this address; wait.",
                              code="too_many_admin_failures",
                              retry_after=FAILURE_WINDOW - (now - failures[0]))
        header = ctx.header(b"authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("The admin API needs an admin key: "
                                       "Authorization: Bearer <admin key>.",
                                       code="admin_key_required")
        given = hashlib.sha256(token.strip().encode()).digest()
        if any(hmac.compare_digest(given, digest) for digest in self._digests):
            return
        if self._role is not None and await self._has_role(ctx):
            return
        if len(self._failures) >= MAX_TRACKED and client not in self._failures:
            self._failures.pop(next(iter(self._failures)))  # bounded memory
        self._failures.setdefault(client, collections.deque()).append(now)
        raise AuthenticationFailed("That is not an admin key.", code="invalid_admin_key")

    async def _has_role(self, ctx: RequestContext) -> bool:
        """Whether the auth chain knows the bearer as a principal with the admin role."""
        try:
            principal = await ctx.gateway.authenticate(ctx)
        except AuthenticationFailed:
            return False
        roles = principal.attributes.get("roles") if principal is not None else None
        return isinstance(roles, tuple | list) and self._role in roles

    def store(self) -> KeyOperations:
        if self._store is None:
            raw = self._config.auth.options.get("api-keys")
            if raw is None:
                raise NotFound("No keys here: the api-keys auth strategy is not configured.",
                               code="no_key_store")
            options = validate_options(raw, ApiKeysOptions, source=self._config.source,
                                       key="auth.api-keys")
            self._store = key_store(options, self._config.base_dir)
        return self._store

    async def _keys(self, work: Callable[[KeyOperations], Any]) -> Any:
        store = self.store()
        try:
            return await asyncio.to_thread(work, store)
        except KeyNotFound as exc:
            raise NotFound(f"No key has the id {exc.args[0]!r}.", code="key_not_found") from None
        except (ValueError, ConfigError) as exc:
            raise InvalidRequest(str(exc), code="invalid_value") from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        await self._check_admin(ctx)
        path = scope["path_params"].get("rest", "").strip("/")
        method = scope["method"]
        handler, params = self._route(method, path)
        status, payload = await handler(ctx, params)
        await send_bytes(send, status, _json_bytes(payload))

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        simple: dict[str, dict[str, Handler]] = {
            "openapi.json": {"GET": self._openapi},
            "keys": {"GET": self._list_keys, "POST": self._create_key},
            "teams": {"GET": self._teams},
            "providers": {"GET": self._providers},
            "sessions": {"GET": self._sessions},
            "requests": {"GET": self._requests},
            "spend": {"GET": self._spend},
            "stats": {"GET": self._stats},
            "reload": {"POST": self._reload},
        }
        params: dict[str, str] = {}
        methods = simple.get(path)
        if methods is None and (team := _TEAM_PATH.match(path)):
            params = {"name": team["name"]}
            methods = {"PUT": self._set_team, "DELETE": self._delete_team}
        if methods is None and (match := _KEY_PATH.match(path)):
            params = {"id": match["id"]}
            methods = ({"POST": self._key_action} if match["action"] else
                       {"GET": self._get_key, "PATCH": self._change_key,
                        "DELETE": self._delete_key})
            if match["action"]:
                params["action"] = match["action"]
        if methods is None:
            raise NotFound(f"No admin endpoint at {PREFIX}{path}.", code="not_found")
        handler = methods.get(method)
        if handler is None:
            raise MethodNotAllowed(f"{method} is not allowed on {PREFIX}{path}; use "
                                   f"{', '.join(methods)}.", code="method_not_allowed")
        return handler, params

    # -- endpoints ---------------------------------------------------------

    async def _openapi(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        return 200, OPENAPI

    async def _list_keys(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        records = await self._keys(lambda store: store.read())
        now = datetime.now(UTC)
        return 200, {"object": "list", "data": [describe_key(r, now) for r in records]}

    async def _create_key(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        body = await _object(ctx)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("Missing required parameter: 'name'.", param="name",
                                 code="missing_required_parameter")
        fields = _key_fields(body, creating=True)
        created = await self._keys(lambda store: store.create(name.strip(), **fields))
        return 201, {**describe_key(created.record), "secret": created.secret}

    async def _get_key(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        record = await self._keys(lambda store: store.get(params["id"]))
        return 200, describe_key(record)

    async def _change_key(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        body = await _object(ctx)
        fields = _key_fields(body, creating=False)
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise InvalidRequest("'enabled' must be true or false.", param="enabled",
                                 code="invalid_type")
        if not fields and enabled is None:
            raise InvalidRequest("Nothing to change: give name, rpm, tpm, max_concurrent, "
                                 "models, expires_at or enabled.", code="invalid_value")
        key_id = params["id"]

        def apply(store: KeyOperations) -> Any:
            record = store.change(key_id, **fields) if fields else store.get(key_id)
            return store.set_enabled(key_id, enabled) if enabled is not None else record

        return 200, describe_key(await self._keys(apply))

    async def _delete_key(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        record = await self._keys(lambda store: store.delete(params["id"]))
        return 200, {"id": record.id, "deleted": True}

    async def _key_action(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        key_id, action = params["id"], params["action"]
        if action == "rotate":
            created = await self._keys(lambda store: store.rotate(key_id))
            return 200, {**describe_key(created.record), "secret": created.secret}
        record = await self._keys(lambda store: store.set_enabled(key_id, action == "enable"))
        return 200, describe_key(record)

    async def _teams(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        """Each team: its keys, and its budget (the store's, else the costs plugin's
        ``team_budgets``)."""
        records, stored = await self._keys(lambda store: (store.read(), store.read_teams()))
        budgets = dict(self._config.plugin_options("costs").get("team_budgets") or {})
        budgets.update({team.name: team.budget for team in stored if team.budget is not None})
        teams: dict[str, list[str]] = {team.name: [] for team in stored}
        for record in records:
            if record.team is not None:
                teams.setdefault(record.team, []).append(record.id)
        for name in budgets:
            teams.setdefault(name, [])
        return 200, {"object": "list", "data": [
            {"team": name, "keys": keys, "budget": budgets.get(name)}
            for name, keys in sorted(teams.items())]}

    async def _set_team(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        """Create a team or set its budget (US dollars per budget period, or null)."""
        body = await _object(ctx)
        budget = body.get("budget")
        if budget is not None and (not isinstance(budget, int | float)
                                   or isinstance(budget, bool) or budget < 0):
            raise InvalidRequest("'budget' must be US dollars (0 or more), or null.",
                                 param="budget", code="invalid_value")
        name = params["name"]
        team = await self._keys(lambda store: store.set_team(
            name, float(budget) if budget is not None else None))
        return 200, {"team": team.name, "budget": team.budget}

    async def _delete_team(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        name = params["name"]
        try:
            await self._keys(lambda store: store.delete_team(name))
        except NotFound:
            raise NotFound(f"No team is named {name!r}.", code="team_not_found") from None
        return 200, {"team": name, "deleted": True}

    async def _providers(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"object": "list", "data": providers_status(ctx.gateway)}

    async def _sessions(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"object": "list", "data": sessions_status(ctx.gateway)}

    async def _requests(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        query = ctx.query_params()
        log = traffic_of(ctx.gateway)
        limit = _int(query.get("limit"), 100, "limit")
        rows = [row for row in await log.recent_rows()
                if all(row.get(field) == query[field] for field in ("key_id", "model", "provider")
                       if field in query)]
        return 200, {"object": "list", "data": rows[:limit]}

    async def _spend(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        query = ctx.query_params()
        by = query.get("by", "key")
        if by not in ("key", "model", "team"):
            raise InvalidRequest("'by' must be 'key', 'model' or 'team'.", param="by",
                                 code="invalid_value")
        days = _int(query.get("days"), 7, "days")
        log = traffic_of(ctx.gateway)
        if by != "team":
            return 200, {"object": "list", "by": by, "data": await log.spend_rows(by, days)}
        # A team's spend: its keys' (as the keys belong to teams now).
        records = await self._keys(lambda store: store.read())
        team_of = {record.id: record.team for record in records if record.team is not None}
        totals: dict[tuple[str, str], dict[str, Any]] = {}
        for row in await log.spend_rows("key", days):
            team = team_of.get(row["key"])
            if team is None:
                continue
            entry = totals.setdefault((row["day"], team), {
                "day": row["day"], "team": team, "requests": 0, "tokens": 0, "cost": 0.0})
            for field in ("requests", "tokens", "cost"):
                entry[field] += row[field]
        ordered = sorted(totals.values(), key=lambda row: (row["day"], row["team"]),
                         reverse=True)
        return 200, {"object": "list", "by": "team", "data": ordered}

    async def _reload(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        """Reload the configuration file; a bad one is a 400 and changes nothing."""
        try:
            new = await ctx.gateway.root.reload()
        except StartupError as exc:  # ConfigError included
            raise InvalidRequest(f"The configuration was not reloaded, the current one "
                                 f"keeps serving: {exc}", code="config_invalid") from None
        return 200, {"reloaded": True, "source": new.config.source,
                     "providers": sorted(new.providers),
                     "models": sorted(group.name for group in new.router.groups())}

    async def _stats(self, ctx: RequestContext, params: dict[str, str]) -> tuple[int, Any]:
        gateway = ctx.gateway
        return 200, {**gateway.stats.snapshot(gateway), "at": time.time()}


def traffic_of(gateway: Gateway) -> TrafficLog:
    """This gateway's traffic log (the admin plugin's event sink)."""
    for _, sink in gateway.events.sinks:
        if isinstance(sink, TrafficLog):
            return sink
    raise NotFound("The admin plugin's traffic log is not running.", code="no_traffic_log")


async def _object(ctx: RequestContext) -> dict[str, Any]:
    body = await ctx.json()
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.",
                             code="invalid_request_body")
    return body


def _int(value: str | None, default: int, name: str) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 0 < int(value) <= 100_000:
        raise InvalidRequest(f"'{name}' must be a whole number from 1.", param=name,
                             code="invalid_value")
    return int(value)


def _key_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The key fields a body sets, checked: limits, models, expiry."""
    fields: dict[str, Any] = {}
    for name in _LIMITS:
        if name in body:
            value = body[name]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise InvalidRequest(f"'{name}' must be a whole number from 1, or null.",
                                     param=name, code="invalid_value")
            fields[name] = value
    if "models" in body:
        models = body["models"]
        if models is not None and (not isinstance(models, list) or not models or not all(
                isinstance(m, str) and m for m in models)):
            raise InvalidRequest("'models' must be a list of model globs, or null.",
                                 param="models", code="invalid_value")
        fields["models"] = models
    if "team" in body:
        team = body["team"]
        if team is not None and (not isinstance(team, str) or not team.strip()):
            raise InvalidRequest("'team' must be a non-empty string, or null.", param="team",
                                 code="invalid_value")
        fields["team"] = team.strip() if isinstance(team, str) else None
    if "budget" in body:
        budget = body["budget"]
        if budget is not None and (not isinstance(budget, int | float)
                                   or isinstance(budget, bool) or budget < 0):
            raise InvalidRequest("'budget' must be US dollars (0 or more), or null.",
                                 param="budget", code="invalid_value")
        fields["budget"] = float(budget) if budget is not None else None
    if "name" in body and not creating:
        if not isinstance(body["name"], str) or not body["name"].strip():
            raise InvalidRequest("'name' must be a non-empty string.", param="name",
                                 code="invalid_value")
        fields["name"] = body["name"].strip()
    if "expires_in" in body or "expires_at" in body:
        fields["expires_at"] = _expiry(body)
    return fields


def _expiry(body: dict[str, Any]) -> datetime | None:
    now = datetime.now(UTC)
    if body.get("expires_in") is not None:
        try:
            seconds = float(Duration.parse(body["expires_in"]))
        except (TypeError, ValueError):
            raise InvalidRequest("'expires_in' must be a duration such as '30d'.",
                                 param="expires_in", code="invalid_value") from None
        return (now + timedelta(seconds=seconds)).replace(microsecond=0)
    value = body.get("expires_at")
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidRequest("'expires_at' must be an ISO 8601 date-time.",
                             param="expires_at", code="invalid_value") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise InvalidRequest("'expires_at' is in the past.", param="expires_at",
                             code="invalid_value")
    return moment
