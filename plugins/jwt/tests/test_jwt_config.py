"""Startup errors of the jwt strategy: each names the option and says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sluiceway_jwt import JwtStrategy, load_jwks

import sluiceway

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def build(options: dict[str, Any]) -> sluiceway.Gateway:
    return sluiceway.create_app({
        "gateway": {"plugins": ["jwt"]},
        "auth": {"chain": ["jwt"], "jwt": options},
    })


def startup_error(options: dict[str, Any]) -> str:
    with pytest.raises(sluiceway.ConfigError) as error:
        build(options)
    return str(error.value)


def rsa_jwk(bits: int = 2048, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), **extra}


@pytest.mark.parametrize(
    "options", [{}, {"secret": SECRET, "jwks_file": "jwks.json"}], ids=["neither", "both"]
)
def test_jwt_needs_exactly_one_of_secret_and_jwks_file(options: dict[str, Any]) -> None:
    assert startup_error(options) == (
        "<config>: auth.jwt: set exactly one of secret (HS256) and jwks_file "
        "(RS256/ES256 public keys)"
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"secret": "short"}, "auth.jwt.secret: the secret is 5 bytes; HS256 needs at least 32"),
        ({"secret": SECRET, "algorithms": ["HS256", "HS512"]}, "needs at least 64"),
        ({"secret": SECRET, "algorithms": ["none"]}, "auth.jwt.algorithms[0]: 'none' cannot"),
        ({"secret": SECRET, "algorithms": ["HS256", "RS256"]},
         "auth.jwt.algorithms[1]: 'RS256' cannot be used with secret"),
        ({"secret": SECRET, "algorithms": []}, "auth.jwt.algorithms: expected at least one"),
        ({"secret": SECRET, "leeway": "soon"}, "auth.jwt.leeway: expected a duration"),
        ({"secret": SECRET, "key_id_claim": ""}, "auth.jwt.key_id_claim: expected a claim name"),
        ({"secret": SECRET, "audiance": "x"}, "auth.jwt.audiance: unknown key"),
        ({"secret": "env:SLUICEWAY_JWT_TEST_UNSET"}, "SLUICEWAY_JWT_TEST_UNSET is not set"),
    ],
)
def test_jwt_bad_options_are_config_errors(options: dict[str, Any], problem: str) -> None:
    assert problem in startup_error(options)


def test_jwt_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_JWT_TEST_SECRET", SECRET)
    build({"secret": "env:SLUICEWAY_JWT_TEST_SECRET"})


def test_jwt_hmac_algorithm_with_a_jwks_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk(kid="a")]}))
    message = startup_error({"jwks_file": str(path), "algorithms": ["HS256"]})
    assert "auth.jwt.algorithms[0]: 'HS256' cannot be used with jwks_file" in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "JWKS file not found"),
        ("{not json", "not valid JSON"),
        ('{"kyes": []}', 'expected a JWKS object, {"keys": [...]}'),
        ('{"keys": []}', "no signing keys"),
        ('{"keys": [{"kty": "RSA", "kid": "a"}]}', "keys[0]: not a usable key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "keys[0]: a private or symmetric key"),
        ("RSA-PRIVATE", "keys[0]: a private or symmetric key"),
        ("DUPLICATE", "keys[1]: duplicate kid 'a' (also keys[0])"),
        ("SMALL-RSA", "keys[0]: RSA key of 1024 bits; at least 2048"),
        ("EC-AS-RS256", "keys[0]: not a usable key"),
        ("P256-AS-ES384", "keys[0]: alg 'ES384' does not fit this key type"),
        ("EC-ONLY", "no key fits the accepted algorithms (RS256)"),
    ],
)
def test_jwt_broken_jwks_file_is_a_config_error(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "jwks.json"
    ec_jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    algorithms = ["RS256", "ES256"]
    if content == "RSA-PRIVATE":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        content = json.dumps({"keys": [RSAAlgorithm.to_jwk(private, as_dict=True)]})
    elif content == "DUPLICATE":
        content = json.dumps({"keys": [rsa_jwk(kid="a"), rsa_jwk(kid="a")]})
    elif content == "SMALL-RSA":
        content = json.dumps({"keys": [rsa_jwk(bits=1024)]})
    elif content == "EC-AS-RS256":
        content = json.dumps({"keys": [{**ec_jwk, "alg": "RS256"}]})
    elif content == "P256-AS-ES384":
        content = json.dumps({"keys": [{**ec_jwk, "alg": "ES384"}]})
    elif content == "EC-ONLY":
        content = json.dumps({"keys": [ec_jwk]})
        algorithms = ["RS256"]
    if content is not None:
        path.write_text(content)
    message = startup_error({"jwks_file": str(path), "algorithms": algorithms})
    assert message.startswith(f"<config>: auth.jwt.jwks_file: {path}: ")
    assert problem in message


def test_jwt_unreadable_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    message = startup_error({"jwks_file": str(tmp_path)})  # a directory
    assert message.startswith(f"<config>: auth.jwt.jwks_file: {tmp_path}: cannot read")


def test_jwt_jwks_keys_are_parsed_once_and_indexed_by_kid(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    ec_jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    path.write_text(json.dumps({"keys": [
        rsa_jwk(kid="r", alg="RS256"), {**ec_jwk, "kid": "e"}, rsa_jwk(kid="enc", use="enc"),
    ]}))
    keys = load_jwks(path)
    assert [(key.kid, sorted(key.algorithms)) for key in keys] == [
        ("r", ["RS256"]), ("e", ["ES384"]),
    ]
    build({"jwks_file": str(path), "algorithms": ["RS256", "ES384"]})  # starts


def test_jwt_strategy_verifies_without_a_gateway() -> None:
    from sluiceway_jwt import JwtOptions

    strategy = JwtStrategy(JwtOptions(), algorithms=frozenset({"HS256"}), secret=SECRET.encode())
    token = jwt.encode({"sub": "s", "exp": 2**40}, SECRET, algorithm="HS256")
    assert strategy.verify(token).key_id == "s"
