"""The cors plugin over real sockets: preflights and answers checked by hand with
httpx, then the real thing, a page in headless Chromium calling the gateway
from another origin."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sluiceway_api_keys import KeyStore

import sluiceway.api as sluiceway
from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
APP = "https://app.example.com"
CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
PREFLIGHT = {"origin": APP, "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type, x-stainless-os"}


@pytest.fixture
def secret(tmp_path: Path) -> str:
    return KeyStore(tmp_path / "keys.toml").create("web").secret


def config(tmp_path: Path, cors: dict[str, Any] | None, *extra: str,
           **plugin: Any) -> dict[str, Any]:
    plugins = ["mock", "api-keys", *extra, *(["cors"] if cors is not None else [])]
    return {
        "gateway": {"plugins": plugins},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "auth": {"chain": ["api-keys"],
                 "api-keys": {"keys_file": str(tmp_path / "keys.toml")}},
        "plugin": {**({"cors": cors} if cors is not None else {}), **plugin},
    }


def test_preflight_is_answered_before_auth_and_answers_carry_the_headers(
    gateway_factory: Factory, tmp_path: Path, secret: str,
) -> None:
    server = gateway_factory(config(tmp_path, {"allow_origins": [APP]}))
    with httpx.Client(base_url=server.base_url) as client:
        preflight = client.options("/chat/completions", headers=PREFLIGHT)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == (
            "authorization, content-type, x-stainless-os")
        assert preflight.headers["access-control-max-age"] == "600"
        assert preflight.headers["vary"] == (
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")

        answer = client.post("/chat/completions", json=CHAT,
                             headers={"origin": APP, "authorization": f"Bearer {secret}"})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        # An error is rendered inside the edge slot: it carries the headers too.
        refused = client.post("/chat/completions", json=CHAT,
                              headers={"origin": APP, "authorization": "Bearer sk-wrong"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == APP
        # No Origin: not a cross-origin call, nothing added.
        plain = client.post("/chat/completions", json=CHAT,
                            headers={"authorization": f"Bearer {secret}"})
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
        # ...but a cache is told the answer depends on the Origin.
        assert plain.headers["vary"] == "Origin"


def test_what_is_not_allowed_is_refused_and_says_why(
    gateway_factory: Factory, tmp_path: Path, secret: str,
) -> None:
    server = gateway_factory(config(tmp_path, {
        "allow_origins": [APP], "allow_methods": ["POST"],
        "allow_headers": ["authorization", "content-type"],
    }))
    with httpx.Client(base_url=server.base_url) as client:
        other = client.options("/chat/completions",
                               headers={**PREFLIGHT, "origin": "https://evil.example"})
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "cors_origin_not_allowed"
        assert "access-control-allow-origin" not in other.headers
        method = client.options("/chat/completions",
                                headers={**PREFLIGHT, "access-control-request-method": "DELETE"})
        assert method.status_code == 403
        assert method.json()["error"]["code"] == "cors_method_not_allowed"
        headers = client.options("/chat/completions", headers=PREFLIGHT)
        assert headers.status_code == 403
        assert headers.json()["error"]["code"] == "cors_headers_not_allowed"
        assert "x-stainless-os" in headers.json()["error"]["message"]
        # An answer to an origin that is not allowed gets no CORS headers: the
        # browser keeps it from the page.
        answer = client.post("/chat/completions", json=CHAT, headers={
            "origin": "https://evil.example", "authorization": f"Bearer {secret}"})
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers


def test_any_origin_with_credentials_echoes_the_origin(
    gateway_factory: Factory, tmp_path: Path, secret: str,
) -> None:
    server = gateway_factory(config(tmp_path, {"allow_origins": ["*"]}))
    with httpx.Client(base_url=server.base_url) as client:
        assert client.options("/chat/completions", headers=PREFLIGHT).headers[
            "access-control-allow-origin"] == "*"
    server = gateway_factory(config(tmp_path, {"allow_origins": ["*"],
                                               "allow_credentials": True, "max_age": "1h"}))
    with httpx.Client(base_url=server.base_url) as client:
        preflight = client.options("/chat/completions", headers=PREFLIGHT)
        assert preflight.headers["access-control-allow-origin"] == APP
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert preflight.headers["access-control-max-age"] == "3600"
        assert preflight.headers["vary"].startswith("Origin")


def test_preflights_are_not_counted_against_a_key(
    gateway_factory: Factory, tmp_path: Path, secret: str,
) -> None:
    server = gateway_factory(config(tmp_path, {"allow_origins": [APP]}, "limits",
                                    limits={"default_rpm": 2}))
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(5):
            assert client.options("/chat/completions", headers=PREFLIGHT).status_code == 204
        headers = {"origin": APP, "authorization": f"Bearer {secret}"}
        assert [client.post("/chat/completions", json=CHAT, headers=headers).status_code
                for _ in range(3)] == [200, 200, 429]


def test_off_unless_listed_and_a_bad_origin_is_a_config_error(
    gateway_factory: Factory, tmp_path: Path, secret: str,
) -> None:
    server = gateway_factory(config(tmp_path, None))
    with httpx.Client(base_url=server.base_url) as client:
        answer = client.post("/chat/completions", json=CHAT,
                             headers={"origin": APP, "authorization": f"Bearer {secret}"})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    with pytest.raises(sluiceway.ConfigError, match=r"plugin\.cors.*app\.example\.com"):
        sluiceway.create_app(config(tmp_path, {"allow_origins": ["app.example.com"]}))


PAGE = """<!doctype html><title>web app</title><script>
async function call(url, key) {
  try {
    const r = await fetch(url, {method: "POST", headers: {
      "authorization": "Bearer " + key, "content-type": "application/json",
      "x-stainless-os": "web"}, body: JSON.stringify(CHAT_BODY)});
    return {status: r.status, requestId: r.headers.get("x-request-id"),
            model: (await r.json()).model || null};
  } catch (e) { return {error: String(e)}; }
}
</script>""".replace("CHAT_BODY", json.dumps(CHAT))


def test_a_page_on_another_origin_calls_the_gateway_in_chromium(
    gateway_factory: Factory, serve_asgi: Factory, tmp_path: Path, secret: str,
) -> None:
    from playwright.sync_api import sync_playwright

    async def page(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": PAGE.encode()})

    site, elsewhere = serve_asgi(page), serve_asgi(page)
    server = gateway_factory(config(tmp_path, {"allow_origins": [site.url]}))
    url = server.base_url + "/chat/completions"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page()
            tab.goto(site.url)
            allowed = tab.evaluate("([url, key]) => call(url, key)", [url, secret])
            tab.goto(elsewhere.url)
            blocked = tab.evaluate("([url, key]) => call(url, key)", [url, secret])
        finally:
            browser.close()
    # The browser sent its own preflight (custom headers), then the call, and
    # let the page read the answer and the exposed x-request-id.
    assert allowed["status"] == 200 and allowed["model"] == "mock-gpt"
    assert allowed["requestId"]
    # From an origin that is not allowed, the browser refused to send it.
    assert "Failed to fetch" in blocked["error"]
