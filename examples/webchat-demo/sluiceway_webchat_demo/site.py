"""A small chat website that can only be used after a browser login: the stand-in
for a real site in the demo and in the tests.

What makes it like the sites a web-login provider is written for:

* ``GET /login`` serves a form with a CSRF token tied to a cookie, so a login
  cannot be replayed with a plain POST;
* ``POST /login`` checks the token and the password, sets an httpOnly ``sid``
  cookie and redirects to ``/app``;
* ``GET /app`` runs a script that writes a bearer token to ``localStorage``;
* ``POST /api/chat`` needs both the cookie and the token, answers in its own
  JSON shape, or streams newline-delimited JSON deltas (``"stream": true``);
* tokens expire (``token_ttl``) and can be revoked (:meth:`DemoSite.revoke_all`):
  then the API answers 401.

It counts what happened (``logins``, ``chats``, ``rejected``) so tests can
check, for example, that twenty cold requests caused exactly one login.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route

__all__ = ["DemoSite"]

_LOGIN_PAGE = """<!doctype html>
<html><head><title>Demo chat: sign in</title></head>
<body>
<h1>Demo chat</h1>{error}
<form method="post" action="/login">
  <input type="hidden" name="csrf" value="{csrf}">
  <label>Email <input id="email" name="email" type="email"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>
</body></html>"""

_APP_PAGE = """<!doctype html>
<html><head><title>Demo chat</title></head>
<body data-ready="0">
<h1>Welcome, {user}</h1>
<script>
  // What single-page apps do: keep the API token in localStorage.
  localStorage.setItem("access_token", {token});
  sessionStorage.setItem("tab_id", "tab-1");
  document.body.dataset.ready = "1";
</script>
</body></html>"""


@dataclass
class _Token:
    sid: str
    expires_at: float


class DemoSite:
    """The site as an ASGI app. ``users`` maps email to password."""

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        token_ttl: float = 3600.0,
        login_gate: int = 0,
        gate_timeout: float = 30.0,
    ) -> None:
        self.users = dict(users)
        self.token_ttl = token_ttl
        # When set, GET /login holds each visitor until this many are waiting at
        # once: only logins that really run in parallel get through in time.
        self.login_gate = login_gate
        self.gate_timeout = gate_timeout
        self._csrf: dict[str, str] = {}
        self._sessions: dict[str, str] = {}
        self._tokens: dict[str, _Token] = {}
        self._gate_waiting = 0
        self._gate_open: asyncio.Event | None = None
        self.login_pages = 0
        self.logins = 0
        self.failed_logins = 0
        self.chats = 0
        self.rejected = 0
        self.app = Starlette(routes=[
            Route("/", self.home),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/app", self.app_page),
            Route("/api/chat", self.chat, methods=["POST"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- controls for demos and tests -------------------------------------------

    def revoke_all(self) -> None:
        """Every token issued so far is refused from now on (the site logged us out)."""
        self._tokens.clear()

    def expire_all(self) -> None:
        """Every token issued so far has expired."""
        for token in self._tokens.values():
            token.expires_at = 0.0

    # -- pages ---------------------------------------------------------------------

    async def home(self, request: Request) -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    async def _pass_gate(self) -> None:
        if self._gate_open is None:
            self._gate_open = asyncio.Event()
        self._gate_waiting += 1
        if self._gate_waiting >= self.login_gate:
            self._gate_open.set()
        await asyncio.wait_for(self._gate_open.wait(), self.gate_timeout)

    async def login_page(self, request: Request) -> HTMLResponse:
        self.login_pages += 1
        if self.login_gate:
            await self._pass_gate()
        pre = secrets.token_urlsafe(16)
        csrf = secrets.token_urlsafe(16)
        self._csrf[pre] = csrf
        failed = "error" in request.query_params
        error = '<p id="error">Wrong email or password.</p>' if failed else ""
        response = HTMLResponse(_LOGIN_PAGE.format(error=error, csrf=csrf))
        response.set_cookie("pre", pre, httponly=True, samesite="strict")
        return response

    async def login(self, request: Request) -> RedirectResponse | HTMLResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        expected = self._csrf.pop(request.cookies.get("pre", ""), None)
        if expected is None or not secrets.compare_digest(expected, form.get("csrf", "")):
            return HTMLResponse("<p>Bad CSRF token.</p>", status_code=403)
        email = form.get("email", "")
        password = self.users.get(email)
        if password is None or not secrets.compare_digest(password, form.get("password", "")):
            self.failed_logins += 1
            return RedirectResponse("/login?error=1", status_code=303)
        sid = secrets.token_urlsafe(24)
        self._sessions[sid] = email
        self.logins += 1
        response = RedirectResponse("/app", status_code=303)
        response.set_cookie("sid", sid, httponly=True, samesite="lax")
        response.delete_cookie("pre")
        return response

    async def app_page(self, request: Request) -> HTMLResponse | RedirectResponse:
        sid = request.cookies.get("sid", "")
        user = self._sessions.get(sid)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(sid, time.time() + self.token_ttl)
        return HTMLResponse(_APP_PAGE.format(user=html.escape(user), token=json.dumps(token)))

    # -- the API -----------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        sid = request.cookies.get("sid", "")
        header = request.headers.get("authorization", "")
        token = self._tokens.get(header.removeprefix("Bearer ")) if header else None
        return (
            token is not None and token.sid == sid and sid in self._sessions
            and token.expires_at > time.time()
        )

    async def chat(self, request: Request) -> JSONResponse | StreamingResponse:
        if not self._authorised(request):
            self.rejected += 1
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        self.chats += 1
        body = await request.json()
        messages = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"),
                    "")
        reply = f"You said: {last}"
        tokens = {"in": sum(len(str(m.get("content", "")).split()) for m in messages),
                  "out": len(reply.split())}
        if not body.get("stream"):
            return JSONResponse({"reply": reply, "tokens": tokens})

        async def lines() -> AsyncIterator[bytes]:
            words = reply.split(" ")
            for index, word in enumerate(words):
                text = word if index == 0 else " " + word
                yield json.dumps({"type": "delta", "text": text}).encode() + b"\n"
            yield json.dumps({"type": "done", "tokens": tokens}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
