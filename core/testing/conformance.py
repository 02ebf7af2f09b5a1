"""The provider conformance suite: what every provider plugin, bundled or
third-party, must do the same way, checked end to end.

Subclass :class:`ProviderConformance` (a provider with no upstream, such as a
simulator) or :class:`HttpProviderConformance` (one that calls an HTTP API) in a
test module, as ``Test...``, and say how to reach a fake of your upstream::

    class TestMyProviderConformance(HttpProviderConformance):
        plugins = ("myprovider",)
        model = "my-model"

        @pytest.fixture
        def upstream_url(self, serve_asgi):
            return serve_asgi(FakeMyUpstream()).url

        def provider_table(self, url: str) -> dict:
            return {"type": "myprovider", "base_url": url, "api_key": "k",
                    "models": [self.model]}

Each test starts a real gateway and drives it with the real ``openai`` SDK: a
whole answer and a stream (text, ``finish_reason``, usage in the answer and on
the call) and a client hang-up mid-stream that ends the call (settled, and
marked ``disconnected``).
The HTTP suite puts a :class:`FaultProxy` between the gateway and your fake and
adds: upstream errors
mapped to the gateway's statuses (401/403 -> 502 ``upstream_auth_error``, 429
-> 429 with ``Retry-After``, other 4xx passed on, 5xx -> 502), retries of a 429
and a 503 that wait the upstream's ``Retry-After``, a garbage answer as a 502,
and a client hang-up that closes the upstream connection mid-stream.
``error_body(status)`` gives the error answers in your upstream's own shape
(an OpenAI-style ``{"error": {...}}`` by default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import httpx
import openai
import pytest

from ..api import CallPolicyType, ModelCall, Settle, Usage, hookimpl
from .fault_proxy import FaultProxy
from .fixtures import wait_until

__all__ = ["HttpProviderConformance", "ProviderConformance"]

Serve = Callable[..., Any]


class _UsageLog:
    """Keeps each settled call's status and usage, and the calls whose client hung
    up, as a call policy sees them."""

    name = "conformance-usage"
    kinds = frozenset({"chat"})

    def __init__(self) -> None:
        self.settled: list[tuple[int, Usage | None]] = []
        self.hung_up = 0
        # The wait the retry loop chose before each call's later attempts.
        self.backoffs: list[float] = []

    async def admit(self, call: ModelCall) -> Settle:
        async def settle(call: ModelCall) -> None:
            self.settled.append((call.status, call.usage))
            self.hung_up += call.disconnected
            self.backoffs.append(call.attempts.backoff_seconds)

        return settle

    @hookimpl
    def register_call_policies(self, register: Callable[[CallPolicyType], None]) -> None:
        register(CallPolicyType(self.name, lambda gateway: self))


class ProviderConformance:
    """The suite for any provider; see the module docstring. Override ``plugins``
    (or ``plugin_objects``), ``model`` and ``provider_table(url)`` (``url`` is
    empty here: there is no upstream); optionally ``prompt``. The provider's
    streams must be slow enough for a hang-up to land mid-stream (a simulator's
    delay between tokens)."""

    plugins: ClassVar[tuple[str, ...]] = ()
    # Plugin objects registered in-process, as ``gateway_factory(plugins=...)`` takes them
    # (a provider still being written, not yet installed): ``(("name", Plugin()),)``.
    plugin_objects: ClassVar[tuple[tuple[str, object], ...]] = ()
    model: ClassVar[str] = ""
    prompt: ClassVar[str] = "Say hello."

    def provider_table(self, url: str) -> dict[str, Any]:
        """The ``[[providers]]`` table (without ``name``) whose upstream is at ``url``."""
        raise NotImplementedError

    # -- the parts ---------------------------------------------------------

    @pytest.fixture
    def usage_log(self) -> _UsageLog:
        return _UsageLog()

    def _gateway(self, gateway_factory: Serve, url: str, usage_log: _UsageLog,
                 **policy: Any) -> Any:
        table = {"name": "conformance", "max_retries": 0, **self.provider_table(url), **policy}
        return gateway_factory({"gateway": {"plugins": list(self.plugins)},
                                "providers": [table]},
                               plugins=[("conformance-usage", usage_log), *self.plugin_objects])

    @pytest.fixture
    def gateway(self, gateway_factory: Serve, usage_log: _UsageLog) -> Any:
        return self._gateway(gateway_factory, "", usage_log)

    @pytest.fixture
    def slow_stream(self) -> None:
        """Makes the next stream slow enough to hang up in the middle of."""

    def _client(self, server: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=server.base_url, api_key="conformance", max_retries=0)

    def _ask(self, client: openai.OpenAI, **extra: Any) -> Any:
        return client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": self.prompt}], **extra)

    def _body(self, **extra: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": self.prompt}],
                **extra}

    # -- the suite ---------------------------------------------------------

    def test_conformance_a_whole_answer_has_text_and_usage(
        self, gateway: Any, usage_log: _UsageLog,
    ) -> None:
        with self._client(gateway) as client:
            answer = self._ask(client)
        choice = answer.choices[0]
        assert choice.message.role == "assistant" and choice.message.content
        assert choice.finish_reason == "stop"
        usage = answer.usage
        assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        status, seen = usage_log.settled[-1]
        assert status == 200 and seen is not None
        assert (seen.prompt_tokens, seen.completion_tokens) == (
            usage.prompt_tokens, usage.completion_tokens)

    def test_conformance_a_stream_has_text_a_finish_and_usage(
        self, gateway: Any, usage_log: _UsageLog,
    ) -> None:
        with self._client(gateway) as client:
            chunks = list(self._ask(client, stream=True,
                                    stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "stop" and finishes.count("stop") == 1
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        status, seen = usage_log.settled[-1]
        assert status == 200 and seen is not None
        assert seen.completion_tokens == chunks[-1].usage.completion_tokens

    def _hang_up_mid_stream(self, gateway: Any, until: Callable[[], bool]) -> None:
        """Start a stream, read its first bytes, hang up; then wait (at most 5 s)
        for ``until()``."""
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http, http.stream(
            "POST", "/chat/completions", json=self._body(stream=True),
        ) as answer:
            assert answer.status_code == 200
            next(answer.iter_raw())
        wait_until(until, within=5.0)

    def test_conformance_a_client_hang_up_ends_the_call(
        self, gateway: Any, usage_log: _UsageLog, slow_stream: None,
    ) -> None:
        self._hang_up_mid_stream(gateway, lambda: bool(usage_log.settled))
        assert len(usage_log.settled) == 1, "the call was not settled"
        assert usage_log.hung_up == 1, "the call was settled as if the client had stayed"


class HttpProviderConformance(ProviderConformance):
    """The suite for a provider that calls an HTTP API. Also override
    ``upstream_url`` (a fixture giving the fake's ``http://127.0.0.1:PORT``);
    ``provider_table(url)`` gets the proxy's address in front of it.
    ``error_body(status)`` gives an error answer in the upstream's own shape."""

    def error_body(self, status: int) -> bytes:
        """An error answer of ``status`` in the upstream's shape."""
        return json.dumps({"error": {"message": f"Conformance error {status}.",
                                     "type": "error", "code": None}}).encode()

    @pytest.fixture
    def upstream_url(self) -> str:
        raise NotImplementedError("an HTTP provider's suite needs its fake's address")

    @pytest.fixture
    def proxy(self, upstream_url: str) -> Iterator[FaultProxy]:
        proxy = FaultProxy(upstream_url).start()
        yield proxy
        proxy.stop()
        if proxy.errors:
            raise RuntimeError(f"the fault proxy failed: {proxy.errors[0]!r}")

    @pytest.fixture
    def gateway(self, gateway_factory: Serve, proxy: FaultProxy, usage_log: _UsageLog) -> Any:
        return self._gateway(gateway_factory, proxy.url, usage_log, key_cooldown="1s")

    @pytest.fixture
    def slow_stream(self, proxy: FaultProxy) -> None:
        proxy.trickle()

    @pytest.mark.parametrize(("upstream", "status", "code"), [
        (400, 400, None), (401, 502, "upstream_auth_error"), (403, 502, "upstream_auth_error"),
        (429, 429, None), (500, 502, None), (503, 502, None),
    ])
    def test_conformance_upstream_errors_are_mapped(
        self, gateway: Any, proxy: FaultProxy, upstream: int, status: int, code: str | None,
    ) -> None:
        proxy.fail(upstream, self.error_body(upstream), {"retry-after": "7"})
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            answer = http.post("/chat/completions", json=self._body())
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["message"] and "Traceback" not in answer.text
        if code is not None:
            assert error["code"] == code
        if upstream == 429:
            assert answer.headers["retry-after"] == "7"

    @pytest.mark.parametrize("upstream", [429, 503])
    def test_conformance_429_and_5xx_are_retried_after_their_retry_after(
        self, gateway_factory: Serve, proxy: FaultProxy, usage_log: _UsageLog, upstream: int,
    ) -> None:
        server = self._gateway(gateway_factory, proxy.url, usage_log, max_retries=1,
                               key_cooldown="1s")
        proxy.fail(upstream, self.error_body(upstream), {"retry-after": "1"})
        with self._client(server) as client:
            answer = client.chat.completions.with_raw_response.create(**self._body())
        assert answer.parse().choices[0].message.content
        assert answer.headers["x-sluiceway-attempts"] == "2"
        assert len(proxy.arrivals) == 2  # the refusal, then the retry
        # The retry waited what the upstream asked (the wait chosen, not a clock read).
        assert usage_log.backoffs[-1] == 1.0

    def test_conformance_a_garbage_answer_is_a_502(
        self, gateway: Any, proxy: FaultProxy,
    ) -> None:
        proxy.fail(200, b"\x00\xff<html>not what was asked</html>",
                   {"content-type": "application/json"})
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            answer = http.post("/chat/completions", json=self._body())
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"]["message"]

    def test_conformance_a_client_hang_up_closes_the_upstream_stream(
        self, gateway: Any, proxy: FaultProxy, slow_stream: None,
    ) -> None:
        self._hang_up_mid_stream(gateway, lambda: proxy.disconnects > 0)
        assert proxy.disconnects == 1, f"the upstream saw {proxy.disconnects} hang-ups"
