"""AbuseGuard around an ASGI app of your own (Starlette here), not a gateway:
its 401 responses count as failed authentications and bans are answered by
the guard itself, as JSON 403s."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from sluiceway_guard import AbuseGuard, GuardOptions, RedisGuardStore
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sluiceway import Duration
from sluiceway.testing import RedisServer, RunningServer

Serve = Callable[..., RunningServer]


async def secret(request: Request) -> Response:
    if request.headers.get("authorization") != "Bearer open-sesame":
        return JSONResponse({"detail": "who are you?"}, status_code=401)
    return JSONResponse({"treasure": 42})


async def forbidden(request: Request) -> Response:
    return JSONResponse({"detail": "not for you"}, status_code=403)


def starlette_app(**kwargs: Any) -> Starlette:
    return Starlette(routes=[Route("/secret", secret), Route("/forbidden", forbidden)], **kwargs)


def get(server: RunningServer, path: str, key: str | None = None,
        forwarded_for: str | None = None) -> httpx.Response:
    headers = {"connection": "close"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    return httpx.get(server.url + path, headers=headers, timeout=30)


def test_guard_own_app_bans_after_401s(serve_asgi: Serve) -> None:
    guard = AbuseGuard(starlette_app(), options=GuardOptions(
        max_failed_auth=3, trusted_proxies=["127.0.0.1"], ban_for=Duration(600),
    ))
    server = serve_asgi(guard)
    attacker, neighbour = "203.0.113.7", "203.0.113.8"
    assert [get(server, "/secret", "guess", attacker).status_code for _ in range(3)] == [401] * 3
    refused = get(server, "/secret", "open-sesame", attacker)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/json"
    assert 590 <= int(refused.headers["retry-after"]) <= 600
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("permission_error", "ip_banned", None)
    assert "blocked" in error["message"]
    good = get(server, "/secret", "open-sesame", neighbour)
    assert (good.status_code, good.json()) == (200, {"treasure": 42})


def test_guard_own_app_counts_only_401s(serve_asgi: Serve) -> None:
    server = serve_asgi(AbuseGuard(starlette_app(), options=GuardOptions(max_failed_auth=2)))
    for _ in range(5):
        assert get(server, "/forbidden").status_code == 403  # the app's own, not a ban
        assert get(server, "/nowhere").status_code == 404
    assert get(server, "/secret", "open-sesame").status_code == 200
    assert get(server, "/secret", "guess").status_code == 401
    assert get(server, "/secret", "guess").status_code == 401
    assert get(server, "/secret", "open-sesame").json()["error"]["code"] == "ip_banned"


def test_guard_own_app_ban_expires(serve_asgi: Serve) -> None:
    server = serve_asgi(AbuseGuard(starlette_app(), options=GuardOptions(
        max_failed_auth=1, ban_for=Duration(1),
    )))
    assert get(server, "/secret").status_code == 401
    refused = get(server, "/secret", "open-sesame")
    assert (refused.status_code, refused.headers["retry-after"]) == (403, "1")
    time.sleep(1.2)
    assert get(server, "/secret", "open-sesame").status_code == 200


def test_guard_own_app_shares_bans_through_redis_and_closes_its_client(
    serve_asgi: Serve, redis_server: RedisServer,
) -> None:
    options = GuardOptions(max_failed_auth=2, storage=redis_server.url)
    one, two = AbuseGuard(starlette_app(), options), AbuseGuard(starlette_app(), options)
    first, second = serve_asgi(one), serve_asgi(two)
    assert [get(first, "/secret").status_code for _ in range(2)] == [401, 401]
    assert get(second, "/secret", "open-sesame").status_code == 403
    assert isinstance(two.store, RedisGuardStore) and two.store._client is not None
    # The app's lifespan ends: the guard closes its Redis client on the way.
    second.stop()
    assert two.store._client is None


def test_guard_own_app_closed_storage_answers_503(
    serve_asgi: Serve, redis_server: RedisServer,
) -> None:
    guard = AbuseGuard(starlette_app(), GuardOptions(storage=redis_server.url,
                                                     on_storage_error="closed"))
    server = serve_asgi(guard)
    assert get(server, "/secret", "open-sesame").status_code == 200
    redis_server.kill()
    refused = get(server, "/secret", "open-sesame")
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
    assert refused.json()["error"]["code"] == "guard_unavailable"


async def test_guard_own_app_lifespan_closes_the_client(redis_server: RedisServer) -> None:
    """``guard.lifespan()``, for a host that runs it in its own lifespan."""
    guard = AbuseGuard(starlette_app(), GuardOptions(storage=redis_server.url, max_failed_auth=1))
    store = guard.store
    assert isinstance(store, RedisGuardStore)
    transport = httpx.ASGITransport(app=guard, client=("192.0.2.1", 1234))
    async with guard.lifespan(), httpx.AsyncClient(
        transport=transport, base_url="http://app"
    ) as client:
        assert (await client.get("/secret")).status_code == 401
        assert (await client.get("/secret")).json()["error"]["code"] == "ip_banned"
        assert store._client is not None
    assert store._client is None


async def test_guard_own_app_passes_websockets_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    guard = AbuseGuard(app, GuardOptions(max_failed_auth=1))
    scope = {"type": "websocket", "client": ("192.0.2.1", 1), "headers": []}
    await guard(scope, None, None)  # type: ignore[arg-type]
    assert seen == [scope]
