"""The admin API end to end: a real gateway on hypercorn, driven with httpx (the admin
side) and the real openai SDK (the keys it makes, used as clients use them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sluiceway_admin.openapi import OPENAPI

from sluiceway.testing import RunningServer, wait_until

ADMIN_KEY = "admin-secret-for-tests"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gateway(tmp_path: Path, gateway_factory: Callable[..., RunningServer],
            monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    monkeypatch.setenv("SLUICEWAY_TEST_ADMIN_KEY", ADMIN_KEY)
    keys = tmp_path / "keys.toml"
    keys.write_text("")
    return gateway_factory({
        "gateway": {"plugins": ["mock", "api-keys", "admin"]},
        "auth": {"chain": ["api-keys"],
                 "api-keys": {"keys_file": str(keys), "reload_interval": "100ms"}},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"admin": {"admin_keys": ["env:SLUICEWAY_TEST_ADMIN_KEY"]}},
    })


@pytest.fixture
def admin(gateway: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url + "/admin/v1", timeout=30,
                      headers={"authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def _works(gateway: RunningServer, secret: str) -> bool:
    with openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0) as client:
        try:
            client.chat.completions.create(model="mock-gpt", messages=HI)  # type: ignore[arg-type]
        except (openai.AuthenticationError, openai.RateLimitError):
            return False
    return True


def test_only_an_admin_key_opens_it(gateway: RunningServer, admin: httpx.Client) -> None:
    created = admin.post("/keys", json={"name": "crm"}).json()
    with httpx.Client(base_url=gateway.url + "/admin/v1", timeout=30) as anonymous:
        missing = anonymous.get("/keys")
        with_api_key = anonymous.get("/keys",
                                     headers={"authorization": f"Bearer {created['secret']}"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "admin_key_required"
    assert with_api_key.status_code == 401
    assert with_api_key.json()["error"]["code"] == "invalid_admin_key"
    # And the admin key is no API key.
    assert not _works(gateway, ADMIN_KEY)


def test_a_key_s_whole_life(gateway: RunningServer, admin: httpx.Client) -> None:
    made = admin.post("/keys", json={"name": "crm", "rpm": 100, "models": ["mock-*"],
                                     "expires_in": "30d", "team": "alpha", "budget": 5})
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["secret"].startswith("sk-sw-") and key["status"] == "enabled"
    assert key["rpm"] == 100 and key["models"] == ["mock-*"] and key["expires_at"]
    assert (key["team"], key["budget"]) == ("alpha", 5.0)
    assert wait_until(lambda: _works(gateway, key["secret"]))

    listed = admin.get("/keys").json()["data"]
    assert [row["id"] for row in listed] == [key["id"]]
    assert "secret" not in listed[0] and "hash" not in listed[0]
    changed = admin.patch(f"/keys/{key['id']}", json={"rpm": None, "tpm": 5000, "team": None})
    assert (changed.json()["rpm"], changed.json()["tpm"]) == (None, 5000)
    assert changed.json()["team"] is None

    assert admin.post(f"/keys/{key['id']}/revoke").json()["status"] == "revoked"
    assert wait_until(lambda: not _works(gateway, key["secret"]))
    admin.post(f"/keys/{key['id']}/enable")
    rotated = admin.post(f"/keys/{key['id']}/rotate").json()
    assert rotated["id"] == key["id"] and rotated["secret"] != key["secret"]
    assert wait_until(lambda: _works(gateway, rotated["secret"]))
    assert not _works(gateway, key["secret"])

    assert admin.delete(f"/keys/{key['id']}").json() == {"id": key["id"], "deleted": True}
    assert admin.get(f"/keys/{key['id']}").json()["error"]["code"] == "key_not_found"


def test_providers_requests_spend_and_stats(gateway: RunningServer,
                                            admin: httpx.Client) -> None:
    key = admin.post("/keys", json={"name": "app", "team": "alpha"}).json()
    assert wait_until(lambda: _works(gateway, key["secret"]))
    providers = admin.get("/providers").json()["data"]
    assert providers[0]["name"] == "mock"
    assert providers[0]["pool"]["concurrency"] >= 1
    (deployment,) = providers[0]["deployments"]
    assert deployment["model"] == "mock-gpt" and deployment["state"] == "closed"
    assert deployment["latency_ms"] is not None

    requests = admin.get("/requests", params={"model": "mock-gpt"}).json()["data"]
    assert requests and requests[0]["status"] == 200 and requests[0]["key_id"] == key["id"]
    assert requests[0]["usage"]["completion_tokens"] > 0
    spend = admin.get("/spend", params={"by": "key"}).json()["data"]
    assert any(row["key"] == key["id"] and row["requests"] >= 1 and row["tokens"] > 0
               for row in spend)
    by_team = admin.get("/spend", params={"by": "team"}).json()["data"]
    assert [(row["team"], row["requests"]) for row in by_team] == [("alpha", 1)]
    assert admin.get("/teams").json()["data"] == [
        {"team": "alpha", "keys": [key["id"]], "budget": None}]
    assert admin.get("/sessions").json()["data"] == []
    assert admin.get("/stats").json()["total_requests"] >= 1


def test_bad_requests_are_clear(admin: httpx.Client) -> None:
    cases: list[tuple[str, str, dict[str, Any] | None, int, str | None]] = [
        ("POST", "/keys", {}, 400, "name"),
        ("POST", "/keys", {"name": "x", "rpm": 0}, 400, "rpm"),
        ("POST", "/keys", {"name": "x", "models": "gpt"}, 400, "models"),
        ("POST", "/keys", {"name": "x", "budget": -1}, 400, "budget"),
        ("POST", "/keys", {"name": "x", "expires_at": "2001-01-01"}, 400, "expires_at"),
        ("PATCH", "/keys/key_nope", {"rpm": 5}, 404, None),
        ("GET", "/spend?by=project", None, 400, "by"),
        ("GET", "/nothing-here", None, 404, None),
        ("DELETE", "/providers", None, 405, None),
    ]
    for method, path, body, status, param in cases:
        answer = admin.request(method, path, json=body)
        assert answer.status_code == status, (method, path, answer.text)
        assert answer.json()["error"]["message"]
        if param is not None:
            assert answer.json()["error"]["param"] == param, (method, path)
    bad_json = admin.post("/keys", content=b"{not json", headers={
        "content-type": "application/json"})
    assert bad_json.status_code == 400


def test_the_openapi_document_covers_every_endpoint(admin: httpx.Client) -> None:
    served = admin.get("/openapi.json").json()
    assert served == OPENAPI
    assert served["openapi"].startswith("3.1")
    assert set(served["paths"]) == {
        "/keys", "/keys/{id}", "/keys/{id}/rotate", "/keys/{id}/revoke", "/keys/{id}/enable",
        "/providers", "/sessions", "/requests", "/spend", "/stats", "/reload", "/teams",
        "/teams/{name}"}
    for path, operations in served["paths"].items():
        for method in operations:
            if method == "parameters":
                continue
            answer = admin.request(method.upper(), path.replace("{id}", "key_unknown")
                                   .replace("{name}", "team-x"),
                                   json={"name": "x"} if method == "post" else {"rpm": 1})
            # Every documented operation exists: it answers, never 404 for the path itself.
            assert answer.status_code != 405, (method, path)
            assert answer.json().get("error", {}).get("code") != "not_found", (method, path)


def test_a_guessed_admin_key_is_stopped(gateway: RunningServer) -> None:
    with httpx.Client(base_url=gateway.url + "/admin/v1", timeout=30) as guesser:
        codes = [guesser.get("/keys", headers={"authorization": f"Bearer guess-{n}"}).status_code
                 for n in range(12)]
        right = guesser.get("/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    # Even the right key waits: the address is blocked, not the guess.
    assert right.status_code == 429
    assert right.json()["error"]["code"] == "too_many_admin_failures"
    assert int(right.headers["retry-after"]) >= 1


def test_a_jwt_with_the_admin_role_opens_it_and_a_user_s_does_not(
    gateway_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jwt

    secret = "jwt-signing-secret-long-enough-for-hs256"
    monkeypatch.setenv("SLUICEWAY_TEST_JWT_SECRET", secret)
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "jwt", "admin"]},
        "auth": {"chain": ["jwt"], "jwt": {"secret": "env:SLUICEWAY_TEST_JWT_SECRET",
                                           "algorithms": ["HS256"]}},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"admin": {"admin_role": "admin"}},
    })

    def token(**claims: Any) -> str:
        return jwt.encode({"sub": "someone", "exp": int(time.time()) + 300, **claims}, secret,
                          algorithm="HS256")

    operator, user = token(roles=["admin", "ops"]), token(roles=["reader"])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        allowed = client.get("/admin/v1/providers", headers={"authorization": f"Bearer {operator}"})
        refused = client.get("/admin/v1/providers", headers={"authorization": f"Bearer {user}"})
        forgery = jwt.encode({"sub": "x", "roles": ["admin"], "exp": int(time.time()) + 300},
                             "not-the-signing-secret-but-as-long-as-it", algorithm="HS256")
        forged = client.get("/admin/v1/providers",
                            headers={"authorization": f"Bearer {forgery}"})
        chat = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {user}"},
                           json={"model": "mock-gpt", "messages": HI})
    assert allowed.status_code == 200, allowed.text
    assert refused.status_code == forged.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_admin_key"
    assert chat.status_code == 200  # the user's token is good for what users do


def test_a_team_budget_set_here_is_enforced(
    tmp_path: Path, gateway_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_ADMIN_KEY", ADMIN_KEY)
    keys = tmp_path / "keys.toml"
    keys.write_text("")
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "api-keys", "costs", "admin"]},
        "auth": {"chain": ["api-keys"],
                 "api-keys": {"keys_file": str(keys), "reload_interval": "100ms"}},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"admin": {"admin_keys": ["env:SLUICEWAY_TEST_ADMIN_KEY"]},
                   "costs": {"prices": {"mock-gpt": {"input": 1.0, "output": 1.0}}}},
    })
    with httpx.Client(base_url=server.url + "/admin/v1", timeout=30,
                      headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        key = admin.post("/keys", json={"name": "svc", "team": "alpha"}).json()
        assert wait_until(lambda: _works(server, key["secret"]))
        assert admin.put("/teams/alpha", json={"budget": 0}).json() == {
            "team": "alpha", "budget": 0.0}
        assert admin.get("/teams").json()["data"] == [
            {"team": "alpha", "keys": [key["id"]], "budget": 0.0}]

        def refused() -> bool:
            with openai.OpenAI(base_url=server.base_url, api_key=key["secret"],
                               max_retries=0) as client:
                try:
                    client.chat.completions.create(model="mock-gpt", messages=HI)  # type: ignore[arg-type]
                except openai.RateLimitError as exc:
                    return exc.code == "team_budget_exceeded"
            return False

        assert wait_until(refused)
        assert admin.put("/teams/alpha", json={"budget": -1}).status_code == 400
        assert admin.delete("/teams/alpha").json() == {"team": "alpha", "deleted": True}
        assert admin.delete("/teams/alpha").json()["error"]["code"] == "team_not_found"
        assert wait_until(lambda: _works(server, key["secret"]))
    assert "[[teams]]" not in keys.read_text()  # deleted from the file as well
