"""The azure provider end to end: the real openai SDK -> a real gateway on hypercorn
-> FakeOpenAI answering at Azure's deployment paths (each request's path, query and
headers recorded), and a local Microsoft Entra token endpoint for the
client-credentials grant."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import openai
import pytest

from sluiceway import ConfigError, create_app
from sluiceway.testing import RunningServer, read_body, wait_until
from sluiceway.testing.fakes import FakeOpenAI, Status

StartFake = Callable[..., FakeOpenAI]
StartServer = Callable[..., RunningServer]
HI = [{"role": "user", "content": "hi"}]


def _config(fake: FakeOpenAI, **options: Any) -> dict[str, Any]:
    endpoint = fake.url.removesuffix("/v1")
    provider = {"name": "azure", "type": "azure", "endpoint": endpoint, "max_retries": 0,
                "models": [{"name": "gpt-4o", "upstream": "my-gpt4o"}], **options}
    return {"gateway": {"plugins": ["azure"]}, "providers": [provider]}


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="client-key", max_retries=0)


class TokenEndpoint:
    """A Microsoft Entra token endpoint: counts the grants it answers."""

    def __init__(self, lifetime: int = 3600, status: int = 200) -> None:
        self.lifetime, self.status = lifetime, status
        self.forms: list[dict[str, str]] = []
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.forms.append(dict(parse_qsl(body.decode())))
        self.paths.append(scope["path"])
        await asyncio.sleep(0.05)  # long enough for concurrent requests to pile up
        number = len(self.forms)
        answer = ({"token_type": "Bearer", "expires_in": self.lifetime,
                   "access_token": f"entra-token-{number}"} if self.status == 200
                  else {"error": "invalid_client", "error_description": "Bad secret."})
        data = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})


def test_requests_go_to_the_deployment_with_the_api_version_and_api_key(
    fake_openai: StartFake, gateway_factory: StartServer,
) -> None:
    fake = fake_openai()
    server = gateway_factory(_config(fake, api_key="sk-azure", api_version="2024-10-21"))
    with _client(server) as client:
        whole = client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
        chunks = list(client.chat.completions.create(
            model="gpt-4o", messages=HI, stream=True))  # type: ignore[arg-type]
    assert whole.choices[0].message.content == "echo: hi"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi"
    for request in fake.requests:
        assert request.path == "/openai/deployments/my-gpt4o/chat/completions"
        assert request.query == {"api-version": "2024-10-21"}
        assert request.headers["api-key"] == "sk-azure"
        assert "authorization" not in request.headers


def test_the_v1_api_names_the_deployment_in_the_body(
    fake_openai: StartFake, gateway_factory: StartServer,
) -> None:
    fake = fake_openai()
    server = gateway_factory(_config(fake, api_key="sk-azure", api_version="v1"))
    with _client(server) as client:
        client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    (request,) = fake.requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.query == {}
    assert request.body["model"] == "my-gpt4o"


def test_a_static_entra_token_is_sent_as_a_bearer_token(
    fake_openai: StartFake, gateway_factory: StartServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_AZURE_TOKEN", "static-entra-token")
    fake = fake_openai()
    server = gateway_factory(_config(fake, entra_token="env:SLUICEWAY_TEST_AZURE_TOKEN"))
    with _client(server) as client:
        client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    (request,) = fake.requests
    assert request.headers["authorization"] == "Bearer static-entra-token"
    assert "api-key" not in request.headers


def test_entra_tokens_are_fetched_once_shared_and_renewed_before_expiry(
    fake_openai: StartFake, gateway_factory: StartServer, serve_asgi: StartServer,
) -> None:
    tokens = TokenEndpoint(lifetime=4)
    authority = serve_asgi(tokens)
    fake = fake_openai()
    server = gateway_factory(_config(fake, entra={
        "tenant_id": "tenant-1", "client_id": "app-1", "client_secret": "shh",
        "authority": authority.url, "refresh_before": "2s"}))

    async def burst() -> None:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k",
                                      max_retries=0) as client:
            await asyncio.gather(*(client.chat.completions.create(
                model="gpt-4o", messages=HI) for _ in range(8)))  # type: ignore[arg-type]

    asyncio.run(burst())
    assert len(tokens.forms) == 1  # eight requests at once, one grant
    assert tokens.paths == ["/tenant-1/oauth2/v2.0/token"]
    assert tokens.forms[0] == {"grant_type": "client_credentials", "client_id": "app-1",
                               "client_secret": "shh",
                               "scope": "https://cognitiveservices.azure.com/.default"}
    assert {r.headers["authorization"] for r in fake.requests} == {"Bearer entra-token-1"}
    time.sleep(2.1)  # within refresh_before of the 4 s lifetime: due for renewal
    with _client(server) as client:
        # The token is still valid: this request does not wait for the renewal it starts.
        client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
        assert fake.requests[-1].headers["authorization"] == "Bearer entra-token-1"
        assert wait_until(lambda: len(tokens.forms) == 2)  # the renewal, in the background

        def renewed() -> bool:
            client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
            return fake.requests[-1].headers["authorization"] == "Bearer entra-token-2"

        assert wait_until(renewed)
    assert len(tokens.forms) == 2


def test_a_refused_application_is_the_gateways_auth_error_not_the_clients(
    fake_openai: StartFake, gateway_factory: StartServer, serve_asgi: StartServer,
) -> None:
    tokens = TokenEndpoint(status=401)
    authority = serve_asgi(tokens)
    fake = fake_openai()
    server = gateway_factory(_config(fake, entra={
        "tenant_id": "t", "client_id": "c", "client_secret": "wrong",
        "authority": authority.url}))
    with _client(server) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError) as again:
            client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert refused.value.status_code == again.value.status_code == 502
    assert refused.value.code == "upstream_auth_error"
    # The endpoint's own text (it names the tenant and app) stays in the log.
    assert "wrong" not in str(refused.value) and "Bad secret" not in str(refused.value)
    assert len(tokens.forms) == 1  # the failure is not retried at once
    assert not fake.requests


def test_azure_errors_reach_the_client_with_their_status_and_code(
    fake_openai: StartFake, gateway_factory: StartServer,
) -> None:
    fake = fake_openai()
    fake.script(
        Status(404, body={"error": {"code": "DeploymentNotFound", "message":
                                    "The API deployment for this resource does not exist."}}),
        Status(400, body={"error": {"code": "content_filter", "param": "prompt", "message":
                                    "The response was filtered."}}),
        Status(429, headers={"retry-after": "7"}),
    )
    server = gateway_factory(_config(fake, api_key="sk-azure"))
    with _client(server) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as filtered:
            client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert missing.value.code == "DeploymentNotFound"
    assert filtered.value.code == "content_filter"
    assert limited.value.response.headers["retry-after"] == "7"


def test_an_azure_deployment_falls_back_to_openai(
    fake_openai: StartFake, gateway_factory: StartServer,
) -> None:
    azure, openai_upstream = fake_openai(), fake_openai(reply="from openai")
    azure.always(Status(503))
    config = _config(azure, api_key="sk-azure")
    config["gateway"]["plugins"] = ["azure", "openai"]
    config["providers"][0]["models"] = [{"name": "azure-4o", "upstream": "my-gpt4o"}]
    config["providers"].append({"name": "openai", "type": "openai", "api_key": "sk-openai",
                                "base_url": openai_upstream.url, "models": ["gpt-4o"]})
    config["aliases"] = [{"name": "smart", "targets": ["azure/azure-4o", "openai/gpt-4o"]}]
    server = gateway_factory(config)
    with _client(server) as client:
        answer = client.chat.completions.with_raw_response.create(
            model="smart", messages=HI)  # type: ignore[arg-type]
    assert answer.parse().choices[0].message.content == "from openai"
    assert answer.headers["x-sluiceway-provider"] == "openai"
    assert azure.requests and azure.requests[0].path.startswith("/openai/deployments/")
    assert openai_upstream.requests[0].headers["authorization"] == "Bearer sk-openai"


def test_responses_go_to_the_resources_responses_api(
    fake_openai: StartFake, gateway_factory: StartServer,
) -> None:
    fake = fake_openai()
    server = gateway_factory(_config(fake, api_key="sk-azure", responses_api=True,
                                     api_version="2025-03-01-preview"))
    with _client(server) as client:
        response = client.responses.create(model="gpt-4o", input="Hello")
    assert response.output_text == "echo: Hello"
    (request,) = fake.requests
    assert request.path == "/openai/responses"
    assert request.query == {"api-version": "2025-03-01-preview"}
    assert request.body["model"] == "my-gpt4o"


def test_exactly_one_kind_of_credential(fake_openai: StartFake) -> None:
    fake = fake_openai()
    with pytest.raises(ConfigError, match="give one of api_key"):
        create_app(_config(fake))
    with pytest.raises(ConfigError, match="not api_key/api_keys and entra_token"):
        create_app(_config(fake, api_key="a", entra_token="b"))


def test_anthropic_clients_reach_azure_and_get_its_errors_in_their_dialect(
    fake_openai: StartFake, gateway_factory: StartServer,
) -> None:
    import anthropic

    fake = fake_openai()
    server = gateway_factory(_config(fake, api_key="sk-azure"))
    with anthropic.Anthropic(base_url=server.url, api_key="client", max_retries=0) as client:
        message = client.messages.create(model="gpt-4o", max_tokens=32,
                                         messages=[{"role": "user", "content": "hi"}])
        fake.script(Status(429, headers={"retry-after": "3"}))
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="gpt-4o", max_tokens=32,
                                   messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert fake.requests[0].path == "/openai/deployments/my-gpt4o/chat/completions"
