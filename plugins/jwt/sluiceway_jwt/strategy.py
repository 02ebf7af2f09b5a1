"""The ``jwt`` auth strategy: JSON Web Tokens in ``Authorization: Bearer``.

Tokens are verified with a shared secret (HS256/384/512) or with the public
keys of a JWKS file (RS*, PS*, ES*, EdDSA), never both: a strategy that holds
only public keys cannot be tricked into treating one as an HMAC secret
(algorithm confusion), and ``none`` is never accepted.

Everything that can be done once is done when the gateway is built: options are
checked, the JWKS file is read and each key parsed into a ``cryptography``
public key, indexed by ``kid``. A request then costs one header parse, one
signature check (about 35 µs in all for HS256, 70-85 µs for RS256/ES256)
and a few dict lookups, so it runs inline on the event loop.

A bearer value that is not shaped like a JWT (three base64url segments) is not
this strategy's: ``authenticate`` returns ``None`` and the next strategy of the
chain (``api-keys``, say) is asked. A JWT that fails verification is refused
with 401 ``token_expired`` or ``invalid_token``; the message says why, and
never repeats the token.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.types import Options

from sluiceway.api import AuthenticationFailed, ConfigError, Duration, Principal, Secret

if TYPE_CHECKING:
    from sluiceway.api import Gateway, RequestContext

__all__ = [
    "HMAC_ALGORITHMS",
    "PUBLIC_KEY_ALGORITHMS",
    "JwksKey",
    "JwtOptions",
    "JwtStrategy",
    "create_strategy",
    "load_jwks",
]

log = logging.getLogger("sluiceway.jwt")

STRATEGY = "jwt"
# Shortest HMAC secret per algorithm: the hash's output size (RFC 7518 section 3.2).
HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
PUBLIC_KEY_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
MIN_RSA_BITS = 2048
_EC_CURVE_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# header.payload.signature, each base64url without padding (the signature may be
# empty, as in an unsecured "alg": "none" token, which is then refused).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_DEFAULT_LIMITS = {"rpm": "rpm", "tpm": "tpm", "max_concurrent": "max_concurrent"}


class JwtOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth.jwt]``: see the README for each option."""

    secret: Secret | None = None
    jwks_file: str | None = None
    algorithms: list[str] | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: Duration = Duration(30)
    require_exp: bool = True
    key_id_claim: str = "sub"
    name_claim: str = "name"
    models_claim: str = "models"
    # A list of role names, kept as the principal's "roles" (the admin plugin's admin_role).
    roles_claim: str = "roles"
    limits_claims: dict[str, str] = msgspec.field(default_factory=lambda: dict(_DEFAULT_LIMITS))


@dataclass(frozen=True, slots=True)
class JwksKey:
    """One public key of the JWKS file, parsed once, with the algorithms it may verify."""

    kid: str | None
    key: Any  # a cryptography public key
    algorithms: frozenset[str]


def _fail(message: str, code: str = "invalid_token") -> AuthenticationFailed:
    return AuthenticationFailed(message, code=code)


def resolve_path(path: str, base_dir: str | os.PathLike[str]) -> Path:
    """``path`` as an absolute path, relative ones against ``base_dir``."""
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else (Path(base_dir) / resolved).resolve()


def _key_algorithms(key: Any, declared: object, where: str) -> frozenset[str]:
    """The algorithms a public key may verify: its ``alg`` if it declares one."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{where}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
        possible = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_CURVE_ALGORITHM.get(key.curve.name)
        possible = frozenset({alg} if alg else ())
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        possible = frozenset({"EdDSA"})
    else:
        raise ValueError(f"{where}: not a public key (only public keys belong in a JWKS file)")
    if declared is None:
        return possible
    if declared not in possible:
        raise ValueError(f"{where}: alg {declared!r} does not fit this key type")
    return frozenset({str(declared)})


def load_jwks(path: Path) -> list[JwksKey]:
    """Read and parse a JWKS file (``{"keys": [...]}``). Raises ``ValueError`` naming the
    file and the problem. Keys whose ``use`` is not ``sig`` are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: JWKS file not found") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the JWKS file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{path}: expected a JWKS object, {{\"keys\": [...]}}")
    keys: list[JwksKey] = []
    seen: dict[str, int] = {}
    for index, jwk in enumerate(data["keys"]):
        where = f"{path}: keys[{index}]"
        if not isinstance(jwk, dict):
            raise ValueError(f"{where}: expected a JSON object")
        if jwk.get("use", "sig") != "sig":
            continue
        if "d" in jwk or jwk.get("kty") == "oct":
            raise ValueError(f"{where}: a private or symmetric key; a JWKS file holds public keys")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f"{where}: kid must be a string")
        if kid is not None and kid in seen:
            raise ValueError(f"{where}: duplicate kid {kid!r} (also keys[{seen[kid]}])")
        try:
            parsed = jwt.PyJWK(jwk).key
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: not a usable key: {exc}") from None
        keys.append(JwksKey(kid, parsed, _key_algorithms(parsed, jwk.get("alg"), where)))
        if kid is not None:
            seen[kid] = index
    if not keys:
        raise ValueError(f"{path}: no signing keys")
    return keys


def _reason(exc: jwt.PyJWTError) -> tuple[str, str]:
    """(message, code) for a verification failure, from its class only: PyJWT's own
    messages may quote parts of the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The JWT has expired.", "token_expired"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The JWT signature is not valid.", "invalid_token"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "The JWT audience (aud) is not accepted.", "invalid_token"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "The JWT issuer (iss) is not accepted.", "invalid_token"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The JWT is not valid yet (nbf or iat is in the future).", "invalid_token"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The JWT lacks the required claim {exc.claim!r}.", "invalid_token"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "The JWT algorithm is not accepted.", "invalid_token"
    if isinstance(exc, jwt.DecodeError):
        return "The JWT is malformed.", "invalid_token"
    return f"The JWT is not valid ({type(exc).__name__}).", "invalid_token"


class JwtStrategy:
    """Accepts a JWT from ``Authorization: Bearer``; see the module docstring."""

    def __init__(
        self,
        options: JwtOptions,
        *,
        algorithms: frozenset[str],
        secret: bytes | None = None,
        jwks: list[JwksKey] | None = None,
    ) -> None:
        self.algorithms = algorithms
        self.secret = secret
        self.keys = list(jwks or ())
        self.by_kid = {key.kid: key for key in self.keys if key.kid is not None}
        self.issuer = options.issuer
        self.audience = options.audience
        self.leeway = float(options.leeway)
        self.key_id_claim = options.key_id_claim
        self.name_claim = options.name_claim
        self.models_claim = options.models_claim
        self.limits_claims = dict(options.limits_claims)
        self.roles_claim = options.roles_claim
        self.decode_options: Options = {
            "require": ["exp"] if options.require_exp else [],
            "enforce_minimum_key_length": True,  # refuse rather than warn per request
        }

    @staticmethod
    def credential(ctx: RequestContext) -> str | None:
        """The bearer value if it is shaped like a JWT, else ``None``."""
        header = ctx.header(b"authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _JWT_SHAPE.fullmatch(token):
            return None
        return token

    async def authenticate(self, ctx: RequestContext) -> Principal | None:
        """The token's principal, ``None`` without a JWT, or a 401 for a bad one."""
        token = self.credential(ctx)
        if token is None:
            return None
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and map its claims; raises :class:`AuthenticationFailed`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _fail("The JWT is malformed.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _fail(
                "The JWT algorithm is not accepted "
                f"(accepted: {', '.join(sorted(self.algorithms))})."
            )
        claims = self._decode(token, alg, header.get("kid"))
        return self._principal(claims)

    def _decode(self, token: str, alg: str, kid: object) -> dict[str, Any]:
        if self.secret is not None:
            candidates: list[Any] = [self.secret]
        elif kid is not None:
            found = self.by_kid.get(kid) if isinstance(kid, str) else None
            if found is None:
                raise _fail("The JWT key id (kid) is not one of the configured keys.")
            if alg not in found.algorithms:
                raise _fail("The JWT algorithm does not match its key.")
            candidates = [found.key]
        else:
            candidates = [key.key for key in self.keys if alg in key.algorithms]
            if not candidates:
                raise _fail("No configured key verifies this JWT algorithm.")
        last: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key, algorithms=[alg], audience=self.audience,
                    issuer=self.issuer, leeway=self.leeway, options=self.decode_options,
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                last = exc  # without a kid, the next key may be the one
            except jwt.PyJWTError as exc:
                last = exc
                break
        assert last is not None
        message, code = _reason(last)
        log.debug("jwt: refused a token: %s", message)
        raise _fail(message, code) from None

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        key_id = claims.get(self.key_id_claim)
        if not isinstance(key_id, str) or not key_id:
            raise _fail(f"The JWT lacks the claim {self.key_id_claim!r} (a non-empty string).")
        name = claims.get(self.name_claim)
        models = claims.get(self.models_claim)
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise _fail(f"The JWT claim {self.models_claim!r} must be a list of model globs.")
        attributes: dict[str, Any] = {}
        roles = claims.get(self.roles_claim)
        if roles is not None:
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise _fail(f"The JWT claim {self.roles_claim!r} must be a list of role names.")
            attributes["roles"] = tuple(roles)
        for attribute, claim in self.limits_claims.items():
            value = claims.get(claim)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise _fail(f"The JWT claim {claim!r} must be a positive integer.")
            attributes[attribute] = value
        return Principal(
            key_id=key_id,
            name=name if isinstance(name, str) else "",
            allowed_models=tuple(models) if models is not None else None,
            attributes=MappingProxyType(attributes),
        )


def _algorithms(options: JwtOptions, source: str) -> frozenset[str]:
    key = f"auth.{STRATEGY}.algorithms"
    hmac = options.secret is not None
    chosen = options.algorithms
    if chosen is None:
        chosen = ["HS256"] if hmac else ["RS256", "ES256"]
    if not chosen:
        raise ConfigError("expected at least one algorithm", source=source, key=key)
    allowed = set(HMAC_ALGORITHMS) if hmac else set(PUBLIC_KEY_ALGORITHMS)
    for index, alg in enumerate(chosen):
        if alg not in allowed:
            what = "with secret" if hmac else "with jwks_file"
            raise ConfigError(
                f"{alg!r} cannot be used {what} (expected one of: {', '.join(sorted(allowed))})",
                source=source, key=f"{key}[{index}]",
            )
    return frozenset(chosen)


def create_strategy(options: JwtOptions, gateway: Gateway) -> JwtStrategy:
    """The factory of the ``jwt`` strategy type: checks the options and reads the JWKS
    file at build time. Every problem is a :class:`ConfigError` naming the option."""
    source = gateway.config.source
    if (options.secret is None) == (options.jwks_file is None):
        raise ConfigError(
            "set exactly one of secret (HS256) and jwks_file (RS256/ES256 public keys)",
            source=source, key=f"auth.{STRATEGY}",
        )
    algorithms = _algorithms(options, source)
    for claim_option in ("key_id_claim", "name_claim", "models_claim"):
        if not getattr(options, claim_option):
            raise ConfigError(
                "expected a claim name", source=source, key=f"auth.{STRATEGY}.{claim_option}"
            )
    if options.secret is not None:
        secret = options.secret.reveal().encode()
        needed = max(HMAC_ALGORITHMS[alg] for alg in algorithms)
        if len(secret) < needed:
            raise ConfigError(
                f"the secret is {len(secret)} bytes; {', '.join(sorted(algorithms))} "
                f"needs at least {needed} (RFC 7518, section 3.2)",
                source=source, key=f"auth.{STRATEGY}.secret",
            )
        log.info("jwt: verifying %s tokens with a shared secret", "/".join(sorted(algorithms)))
        return JwtStrategy(options, algorithms=algorithms, secret=secret)
    assert options.jwks_file is not None
    path = resolve_path(options.jwks_file, gateway.config.base_dir)
    try:
        keys = load_jwks(path)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key=f"auth.{STRATEGY}.jwks_file") from None
    usable = [key for key in keys if key.algorithms & algorithms]
    if not usable:
        raise ConfigError(
            f"{path}: no key fits the accepted algorithms ({', '.join(sorted(algorithms))})",
            source=source, key=f"auth.{STRATEGY}.jwks_file",
        )
    log.info("jwt: %d public keys loaded from %s", len(usable), path)
    return JwtStrategy(options, algorithms=algorithms, jwks=usable)
