"""Identities carried in JWTs (PyJWT): who someone is, their role, and their scope."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .config import Config, ConfigError, ensure_jwt_secret

Role = Literal["clerk", "reviewer", "applicant", "supervisor", "admin"]
Level = Literal["city", "district"]
ROLES: tuple[str, ...] = get_args(Role)
LEVELS: tuple[str, ...] = get_args(Level)
# Roles whose identity names a department (a token's ``dept`` claim, a directory user's).
DEPARTMENTAL: frozenset[str] = frozenset({"reviewer"})
# Longest claims accepted: a name is shown to everyone in the session and written into
# the case file; ids are keys and scopes. A token is checked, never trusted for sizes.
MAX_NAME = 100
MAX_ID = 128


class AuthError(Exception):
    """A token was refused. ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    name: str
    role: str
    dept: str | None = None
    level: str | None = None
    case: str | None = None
    session: str | None = None
    exp: int | None = None

    def public(self) -> dict[str, Any]:
        """What other participants may see of this person."""
        return {
            "sub": self.sub,
            "name": self.name,
            "role": self.role,
            "dept": self.dept,
            "level": self.level,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_key(path: Path | None, setting: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{setting}: {path} is not a PEM file") from exc


class TokenService:
    """Signs and verifies identity tokens with the configured key."""

    def __init__(self, config: Config) -> None:
        self.algorithm = config.jwt_algorithm
        self.issuer = config.jwt_issuer
        self.audience = config.jwt_audience
        self.default_ttl = config.token_ttl_s
        self.max_ttl = config.token_max_ttl_s
        self._signing_key: str | None
        self._verify_key: str
        if self.algorithm == "HS256":
            secret = ensure_jwt_secret(config)
            if len(secret) < 32:
                raise ConfigError("jwt_secret: must be at least 32 characters for HS256")
            self._signing_key = self._verify_key = secret
        else:
            public = _read_key(config.jwt_public_key_file, "jwt_public_key_file")
            if public is None:
                raise ConfigError(
                    f"jwt_public_key_file: required when jwt_algorithm is {self.algorithm}"
                )
            self._verify_key = public
            self._signing_key = _read_key(config.jwt_private_key_file, "jwt_private_key_file")
            self._check_key_matches()

    def _check_key_matches(self) -> None:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        try:
            public = algorithm.prepare_key(self._verify_key)
        except Exception as exc:
            raise ConfigError(
                f"jwt_public_key_file: not a valid {self.algorithm} public key: {exc}"
            ) from exc
        if not isinstance(public, RSAPublicKey | EllipticCurvePublicKey):
            raise ConfigError("jwt_public_key_file: holds a private key; give the public key")
        if self._signing_key is None:
            return
        probe = b"jointreview key check"
        try:
            signature = algorithm.sign(probe, algorithm.prepare_key(self._signing_key))
        except Exception as exc:
            raise ConfigError(
                f"jwt_private_key_file: not a valid {self.algorithm} private key: {exc}"
            ) from exc
        if not algorithm.verify(probe, public, signature):
            raise ConfigError("jwt_private_key_file: does not match the key in jwt_public_key_file")

    @property
    def can_sign(self) -> bool:
        return self._signing_key is not None

    def issue(
        self,
        *,
        sub: str,
        role: str,
        name: str | None = None,
        dept: str | None = None,
        level: str | None = None,
        case: str | None = None,
        session: str | None = None,
        ttl: int | None = None,
        now: float | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if level is not None and level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}")
        if role in DEPARTMENTAL and not dept:
            raise ValueError("a reviewer needs a dept")
        lifetime = ttl if ttl is not None else self.default_ttl
        if not 0 < lifetime <= self.max_ttl:
            raise ValueError(f"ttl must be between 1 and {self.max_ttl} s (token_max_ttl_s)")
        problem = _claims_problem(sub, name, {"dept": dept, "case": case, "session": session})
        if problem:
            raise ValueError(problem)
        if self._signing_key is None:
            raise ConfigError("jwt_private_key_file: needed to sign tokens with " + self.algorithm)
        iat = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "name": name or sub,
            "role": role,
            "iat": iat,
            "exp": iat + lifetime,
            "iss": self.issuer,
            "aud": self.audience,
        }
        for key, value in (("dept", dept), ("level", level), ("case", case), ("session", session)):
            if value is not None:
                claims[key] = value
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)

    def verify(self, token: str | None, now: float | None = None) -> Identity:
        if not token:
            raise AuthError("missing_token", "no token: send Authorization: Bearer <token>")
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["sub", "role", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token_expired", "the token has expired; sign in again") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("invalid_token", "the token's signature is not valid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("invalid_token", f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid_token", f"the token is not valid: {exc}") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise AuthError("invalid_token", f"unknown role {role!r} in token")
        level = claims.get("level")
        if level is not None and level not in LEVELS:
            raise AuthError("invalid_token", f"unknown level {level!r} in token")
        if role in DEPARTMENTAL and not claims.get("dept"):
            raise AuthError("invalid_token", "a reviewer token needs a dept claim")
        strs = {k: claims.get(k) for k in ("dept", "case", "session")}
        if not all(v is None or isinstance(v, str) for v in strs.values()):
            raise AuthError("invalid_token", "dept, case and session claims must be strings")
        sub, name = claims["sub"], claims.get("name")
        if not isinstance(sub, str) or not (name is None or isinstance(name, str)):
            raise AuthError("invalid_token", "sub and name claims must be strings")
        problem = _claims_problem(sub, name, strs)
        if problem:
            raise AuthError("invalid_token", f"the token is not valid: {problem}")
        iat, exp = claims["iat"], claims["exp"]
        current = time.time() if now is None else now
        # A stolen token must not open doors for years: whoever signed it, it lives at
        # most token_max_ttl_s (a minute of clock skew allowed on the "from now" side).
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise AuthError("invalid_token", "iat and exp claims must be numbers")
        if exp - iat > self.max_ttl or exp - current > self.max_ttl + 60:
            raise AuthError(
                "invalid_token",
                f"the token's lifetime is too long (at most {self.max_ttl} s: token_max_ttl_s)",
            )
        return Identity(
            sub=sub,
            name=name or sub,
            role=role,
            dept=strs["dept"],
            level=level,
            case=strs["case"],
            session=strs["session"],
            exp=int(claims["exp"]),
        )


def _claims_problem(sub: str, name: str | None, ids: dict[str, str | None]) -> str | None:
    """Why these claims can't be an identity (empty subject, overlong fields), or None."""
    if not sub.strip():
        return "the sub claim is empty"
    if len(sub) > MAX_ID:
        return f"sub is longer than {MAX_ID} characters"
    if name is not None and len(name) > MAX_NAME:
        return f"name is longer than {MAX_NAME} characters"
    for key, value in ids.items():
        if value is not None and len(value) > MAX_ID:
            return f"{key} is longer than {MAX_ID} characters"
    # The record's text columns (PostgreSQL) refuse U+0000, and a name goes there.
    if any("\x00" in v for v in (sub, name, *ids.values()) if v is not None):
        return "a claim holds a NUL character (U+0000)"
    return None
