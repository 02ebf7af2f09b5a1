"""The demo site on its own, without a browser: what a provider has to get past."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
from sluiceway_webchat_demo import DemoSite

from sluiceway.testing import RunningServer

USERS = {"dave@example.com": "open sesame"}


def _login(client: httpx.Client, password: str = "open sesame") -> httpx.Response:
    page = client.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return client.post("/login", data={"csrf": match.group(1), "email": "dave@example.com",
                                       "password": password})


def test_the_site_needs_a_login_a_cookie_and_a_token(
    serve_asgi: Callable[..., RunningServer],
) -> None:
    site = DemoSite(USERS)
    url = serve_asgi(site).url
    with httpx.Client(base_url=url) as client:
        # A POST without the form's CSRF token is refused.
        assert client.post("/login", data={"email": "dave@example.com",
                                           "password": "open sesame"}).status_code == 403
        wrong = _login(client, "guess")
        assert wrong.status_code == 303 and wrong.headers["location"] == "/login?error=1"
        right = _login(client)
        assert right.status_code == 303 and right.headers["location"] == "/app"
        assert "httponly" in right.headers["set-cookie"].lower()
        app = client.get("/app")
        token = json.loads(re.search(r'"access_token", ("[^"]+")', app.text).group(1))  # type: ignore[union-attr]
        body = {"messages": [{"role": "user", "content": "two words"}]}
        assert client.post("/api/chat", json=body).status_code == 401  # the cookie alone
        auth = {"authorization": f"Bearer {token}"}
        answer = client.post("/api/chat", json=body, headers=auth)
        assert answer.json() == {"reply": "You said: two words", "tokens": {"in": 2, "out": 4}}
        streamed = client.post("/api/chat", json={**body, "stream": True}, headers=auth)
        events = [json.loads(line) for line in streamed.text.splitlines()]
        assert "".join(e.get("text", "") for e in events) == "You said: two words"
        assert events[-1] == {"type": "done", "tokens": {"in": 2, "out": 4}}
        site.revoke_all()
        assert client.post("/api/chat", json=body, headers=auth).status_code == 401
    assert (site.logins, site.failed_logins, site.chats, site.rejected) == (1, 1, 2, 2)
