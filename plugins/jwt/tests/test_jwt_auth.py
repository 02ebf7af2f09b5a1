"""The jwt strategy over a real gateway, with the openai SDK: HS256, JWKS keys, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore

import sluiceway
from sluiceway.testing import RunningServer

StartGateway = Callable[..., RunningServer]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
SECRET = "a-test-secret-that-is-long-enough-for-hs256"
MODELS = ["mock-gpt", "other"]


async def whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the principal the auth chain established, as JSON."""
    principal = scope[sluiceway.CONTEXT_KEY].principal
    body = json.dumps({
        "key_id": principal.key_id,
        "name": principal.name,
        "allowed_models": principal.allowed_models,
        "attributes": dict(principal.attributes),
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class WhoAmIPlugin:
    @sluiceway.hookimpl
    def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
        register(sluiceway.Route("/whoami", whoami))


def config(
    options: dict[str, Any], chain: tuple[str, ...] = ("jwt",), **auth: Any
) -> dict[str, Any]:
    plugins = ["mock", *chain]
    return {
        "gateway": {"plugins": plugins},
        "auth": {"chain": list(chain), "jwt": options, **auth},
        "providers": [{"name": "mock", "type": "mock", "models": MODELS}],
    }


def start(gateway_factory: StartGateway, cfg: dict[str, Any] | str) -> RunningServer:
    return gateway_factory(cfg, plugins=[("whoami", WhoAmIPlugin())])


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "user-1", "name": "Ada", "iat": now, "exp": now + 300, **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET, **kwargs: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", **kwargs)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses to sign with a public key)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def sdk(server: RunningServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=token, base_url=server.base_url, max_retries=0)


def who(server: RunningServer, token: str) -> dict[str, Any]:
    with httpx.Client(base_url=server.url) as http:
        response = http.get("/whoami", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refusal(server: RunningServer, token: str) -> openai.APIStatusError:
    with sdk(server, token) as client, pytest.raises(openai.APIStatusError) as refused:
        client.models.list()
    assert token not in refused.value.message
    assert token not in refused.value.response.text
    return refused.value


class Keys:
    """Two RSA keys and one P-256 key, with a JWKS file holding their public halves."""

    def __init__(self, path: Path) -> None:
        self.rsa_a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        jwks = [
            {**RSAAlgorithm.to_jwk(self.rsa_a.public_key(), as_dict=True), "kid": "rsa-a"},
            {**RSAAlgorithm.to_jwk(self.rsa_b.public_key(), as_dict=True), "kid": "rsa-b",
             "use": "sig", "alg": "RS256"},
            {**ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "kid": "ec-1"},
        ]
        self.path = path
        path.write_text(json.dumps({"keys": jwks}))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("jwks") / "jwks.json")


def test_jwt_hs256_token_is_accepted_and_mapped_to_a_principal(
    gateway_factory: StartGateway,
) -> None:
    server = start(gateway_factory, config({"secret": SECRET}))
    token = hs256(claims(rpm=60, tpm=1000))
    with sdk(server, token) as client:
        answer = client.chat.completions.create(model="mock-gpt", messages=USER)
        assert answer.choices[0].message.content
        assert {m.id for m in client.models.list()} == set(MODELS)
    assert who(server, token) == {
        "key_id": "user-1", "name": "Ada", "allowed_models": None,
        "attributes": {"rpm": 60, "tpm": 1000, "max_concurrent": None},
    }


def test_jwt_claim_mapping_is_configurable(gateway_factory: StartGateway) -> None:
    server = start(gateway_factory, config({
        "secret": SECRET, "key_id_claim": "client_id", "name_claim": "app",
        "models_claim": "scopes", "limits_claims": {"rpm": "rate"},
    }))
    token = hs256(claims(client_id="crm", app="CRM", scopes=["mock-*"], rate=5))
    assert who(server, token) == {
        "key_id": "crm", "name": "CRM", "allowed_models": ["mock-*"], "attributes": {"rpm": 5},
    }


def test_jwt_rs256_and_es256_from_a_jwks_file_select_keys_by_kid(
    gateway_factory: StartGateway, keys: Keys, tmp_path: Path
) -> None:
    # jwks_file is relative to the directory of the configuration file.
    (tmp_path / "jwks.json").write_text(keys.path.read_text())
    config_file = tmp_path / "plugins.toml"
    config_file.write_text(
        '[gateway]\nplugins = ["mock", "jwt"]\n[auth]\nchain = ["jwt"]\n'
        '[auth.jwt]\njwks_file = "jwks.json"\naudience = "sluiceway"\n'
        '[[providers]]\nname = "mock"\ntype = "mock"\nmodels = ["mock-gpt", "other"]\n'
    )
    server = start(gateway_factory, str(config_file))
    payload = claims(aud="sluiceway")
    for key, alg, kid in (
        (keys.rsa_a, "RS256", "rsa-a"), (keys.rsa_b, "RS256", "rsa-b"), (keys.ec, "ES256", "ec-1"),
    ):
        token = jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})
        with sdk(server, token) as client:
            assert client.chat.completions.create(model="mock-gpt", messages=USER).choices
        assert who(server, token)["key_id"] == "user-1"
    # Without a kid, every key that fits the algorithm is tried.
    assert who(server, jwt.encode(payload, keys.rsa_b, algorithm="RS256"))["name"] == "Ada"
    # Signed by rsa-b but naming rsa-a: the named key is the one used.
    wrong_kid = jwt.encode(payload, keys.rsa_b, algorithm="RS256", headers={"kid": "rsa-a"})
    assert (refusal(server, wrong_kid).status_code, refusal(server, wrong_kid).code) == (
        401, "invalid_token"
    )
    unknown = jwt.encode(payload, keys.rsa_a, algorithm="RS256", headers={"kid": "nope"})
    refused = refusal(server, unknown)
    assert refused.code == "invalid_token" and "kid" in refused.message
    # rsa-b declares alg RS256: a PS256 token naming it is refused.
    ps256 = jwt.encode(payload, keys.rsa_b, algorithm="PS256", headers={"kid": "rsa-b"})
    assert refusal(server, ps256).code == "invalid_token"
    # An EC key cannot verify RS256, nor an RSA key ES256.
    mixed = jwt.encode(payload, keys.ec, algorithm="ES256", headers={"kid": "rsa-a"})
    assert refusal(server, mixed).code == "invalid_token"


def test_jwt_expired_token_is_token_expired_within_leeway_is_accepted(
    gateway_factory: StartGateway,
) -> None:
    server = start(gateway_factory, config({"secret": SECRET, "leeway": "30s"}))
    now = int(time.time())
    expired = hs256(claims(iat=now - 600, exp=now - 120))
    refused = refusal(server, expired)
    assert isinstance(refused, openai.AuthenticationError)
    assert (refused.status_code, refused.code) == (401, "token_expired")
    assert who(server, hs256(claims(iat=now - 600, exp=now - 10)))["key_id"] == "user-1"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: hs256(claims(), secret="another-secret-that-is-long-enough-too"), "signature"),
        (lambda: hs256(claims(aud="someone-else", iss="https://idp.test")), "audience"),
        (lambda: hs256(claims(aud="sluiceway", iss="https://evil.test")), "issuer"),
        (lambda: hs256(claims(iss="https://idp.test")), "'aud'"),
        (lambda: jwt.encode(claims(aud="sluiceway", iss="https://idp.test"), "",
                            algorithm="none"), "algorithm"),
        (lambda: hs256({**claims(aud="sluiceway", iss="https://idp.test"), "exp": None}), ""),
        (lambda: hs256({"aud": "sluiceway", "iss": "https://idp.test",
                        "exp": int(time.time()) + 60}), "'sub'"),
        (lambda: hs256(claims(aud="sluiceway", iss="https://idp.test", models="mock-gpt")),
         "'models'"),
        (lambda: hs256(claims(aud="sluiceway", iss="https://idp.test", rpm="many")), "'rpm'"),
        (lambda: "bm90IGpzb24.bm90IGpzb24.c2ln", "malformed"),  # header is not JSON
    ],
)
def test_jwt_bad_tokens_are_invalid_token(
    gateway_factory: StartGateway, make: Callable[[], str], reason: str
) -> None:
    server = start(gateway_factory, config({
        "secret": SECRET, "issuer": "https://idp.test", "audience": "sluiceway",
    }))
    good = hs256(claims(aud="sluiceway", iss="https://idp.test"))
    assert who(server, good)["key_id"] == "user-1"
    refused = refusal(server, make())
    assert isinstance(refused, openai.AuthenticationError)
    assert (refused.status_code, refused.code) == (401, "invalid_token")
    assert reason in refused.message


def test_jwt_hs256_token_is_refused_by_a_jwks_strategy(
    gateway_factory: StartGateway, keys: Keys
) -> None:
    """Algorithm confusion: an HMAC signed with the public key's text must not pass."""
    server = start(gateway_factory, config({"jwks_file": str(keys.path)}))
    pem = keys.rsa_a.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = forge_hs256({"alg": "HS256", "typ": "JWT", "kid": "rsa-a"}, claims(), pem)
    refused = refusal(server, forged)
    assert refused.code == "invalid_token" and "RS256" in refused.message


def test_jwt_models_claim_limits_models(gateway_factory: StartGateway) -> None:
    server = start(gateway_factory, config({"secret": SECRET}))
    with sdk(server, hs256(claims(models=["mock-*"]))) as client:
        assert [m.id for m in client.models.list()] == ["mock-gpt"]
        client.chat.completions.create(model="mock-gpt", messages=USER)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="other", messages=USER)
    assert (denied.value.status_code, denied.value.code) == (403, "model_not_allowed")


def test_jwt_leaves_other_bearer_values_to_the_next_strategy(
    gateway_factory: StartGateway, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.toml"
    created = KeyStore(keys_file).create("crm", models=["other"])
    server = start(gateway_factory, config(
        {"secret": SECRET}, chain=("jwt", "api-keys"),
        **{"api-keys": {"keys_file": str(keys_file)}},
    ))
    with sdk(server, created.secret) as client:
        assert [m.id for m in client.models.list()] == ["other"]
        assert client.chat.completions.create(model="other", messages=USER).choices
    assert who(server, created.secret)["key_id"] == created.record.id
    assert who(server, hs256(claims()))["key_id"] == "user-1"
    # A JWT that fails is refused by jwt, not handed to api-keys.
    assert refusal(server, hs256(claims(), secret="x" * 40)).code == "invalid_token"
    # Neither a JWT nor a known key: api-keys refuses it.
    assert refusal(server, "sk-sw-" + "A" * 43).code == "invalid_api_key"
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v1/models").json()["error"]["code"] == "missing_api_key"


def test_jwt_alone_answers_non_jwt_bearer_values_with_missing_api_key(
    gateway_factory: StartGateway,
) -> None:
    server = start(gateway_factory, config({"secret": SECRET}))
    with httpx.Client(base_url=server.url) as http:
        for value in ("Bearer sk-not-a-jwt", "Bearer a.b", "Basic abc.def.ghi", "Bearer a.b.c.d"):
            response = http.get("/v1/models", headers={"authorization": value})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "missing_api_key"
