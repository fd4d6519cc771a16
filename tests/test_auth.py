"""Identity tokens: HS256 with a shared secret, RS256/ES256 with the approval system's key.

Forged and foreign tokens are made with PyJWT (or by hand) directly, never through the
service under test, so a refusal here is the verifier's own doing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from signaling.auth import AuthError, Identity, TokenService
from signaling.config import Config, ConfigError

SECRET = "auth-test-secret-" + "k" * 60
ISS = "jointreview"
AUD = "jointreview"


@pytest.fixture
def hs(tmp_path: Path) -> TokenService:
    return TokenService(Config(data_dir=tmp_path / "data", jwt_secret=SECRET))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "rev-city-amr-1",
        "name": "王建国",
        "role": "reviewer",
        "dept": "city-amr",
        "level": "city",
        "iat": now,
        "exp": now + 600,
        "iss": ISS,
        "aud": AUD,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def refused(svc: TokenService, token: str | None) -> AuthError:
    with pytest.raises(AuthError) as info:
        svc.verify(token)
    return info.value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_made_hs256(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token built without PyJWT (which refuses a PEM key as an HMAC secret)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    sig = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(sig)}"


# -- HS256 ----------------------------------------------------------------------------


def test_hs256_round_trip_with_every_claim(hs: TokenService) -> None:
    now = int(time.time())
    token = hs.issue(
        sub="rev-city-amr-1",
        role="reviewer",
        name="王建国",
        dept="city-amr",
        level="city",
        case="C-2024-001",
        session="s_abc",
        ttl=900,
        now=now,
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUD, issuer=ISS)
    assert raw == {
        "sub": "rev-city-amr-1",
        "name": "王建国",
        "role": "reviewer",
        "dept": "city-amr",
        "level": "city",
        "case": "C-2024-001",
        "session": "s_abc",
        "iat": now,
        "exp": now + 900,
        "iss": ISS,
        "aud": AUD,
    }
    assert hs.verify(token) == Identity(
        sub="rev-city-amr-1",
        name="王建国",
        role="reviewer",
        dept="city-amr",
        level="city",
        case="C-2024-001",
        session="s_abc",
        exp=now + 900,
    )


def test_hs256_minimal_token_defaults(hs: TokenService) -> None:
    now = int(time.time())
    who = hs.verify(hs.issue(sub="clerk-01", role="clerk", now=now))
    assert who == Identity(sub="clerk-01", name="clerk-01", role="clerk", exp=now + 8 * 3600)
    assert who.public() == {
        "sub": "clerk-01",
        "name": "clerk-01",
        "role": "clerk",
        "dept": None,
        "level": None,
    }


def test_token_from_other_issuer_with_same_secret_verifies(hs: TokenService) -> None:
    # The approval system signs with the shared secret: PyJWT directly, not our issue().
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    who = hs.verify(token)
    assert (who.sub, who.role, who.dept, who.level) == (
        "rev-city-amr-1",
        "reviewer",
        "city-amr",
        "city",
    )


def test_expired_token(hs: TokenService) -> None:
    token = hs.issue(sub="clerk-01", role="clerk", ttl=60, now=time.time() - 3600)
    err = refused(hs, token)
    assert err.code == "token_expired"


def test_wrong_secret(hs: TokenService) -> None:
    token = jwt.encode(claims(), "another-secret-" + "z" * 40, algorithm="HS256")
    assert refused(hs, token).code == "invalid_token"


def test_wrong_secret_via_other_service(hs: TokenService, tmp_path: Path) -> None:
    other = TokenService(Config(data_dir=tmp_path / "other"))  # generated secret
    assert refused(hs, other.issue(sub="a", role="admin")).code == "invalid_token"
    assert refused(other, hs.issue(sub="a", role="admin")).code == "invalid_token"


@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"aud": "other-service"}, id="wrong-audience"),
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"iss": None}, id="no-issuer"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"role": None}, id="no-role"),
        pytest.param({"role": "superuser"}, id="unknown-role"),
        pytest.param({"role": "Reviewer"}, id="role-wrong-case"),
        pytest.param({"dept": None}, id="reviewer-without-dept"),
        pytest.param({"dept": ""}, id="reviewer-empty-dept"),
        pytest.param({"level": "province"}, id="unknown-level"),
        pytest.param({"dept": ["city-amr", "city-tax"]}, id="dept-not-string"),
        pytest.param({"role": "clerk", "case": 42}, id="case-not-string"),
        pytest.param({"role": "applicant", "session": {"id": "s"}}, id="session-not-string"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="not-yet-valid"),
    ],
)
def test_forged_claims_are_invalid(hs: TokenService, override: dict[str, Any]) -> None:
    token = jwt.encode(claims(**override), SECRET, algorithm="HS256")
    err = refused(hs, token)
    assert err.code == "invalid_token", err.message


def test_wrong_audience_configured(tmp_path: Path, hs: TokenService) -> None:
    other = TokenService(
        Config(data_dir=tmp_path / "d", jwt_secret=SECRET, jwt_audience="other-service")
    )
    assert refused(hs, other.issue(sub="a", role="admin")).code == "invalid_token"


def test_wrong_issuer_configured(tmp_path: Path, hs: TokenService) -> None:
    other = TokenService(Config(data_dir=tmp_path / "d", jwt_secret=SECRET, jwt_issuer="other"))
    assert refused(hs, other.issue(sub="a", role="admin")).code == "invalid_token"


@pytest.mark.parametrize("token", [None, ""], ids=["none", "empty"])
def test_missing_token(hs: TokenService, token: str | None) -> None:
    assert refused(hs, token).code == "missing_token"


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "a.b", "Bearer x.y.z"],
)
def test_malformed_token(hs: TokenService, token: str) -> None:
    assert refused(hs, token).code == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(hs: TokenService, alg: str) -> None:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims(role="admin")).encode())
    assert refused(hs, f"{header}.{body}.").code == "invalid_token"


def test_alg_none_via_pyjwt_is_refused(hs: TokenService) -> None:
    token = jwt.encode(claims(role="admin"), None, algorithm="none")
    assert refused(hs, token).code == "invalid_token"


def test_hs512_with_right_secret_is_refused(hs: TokenService) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert refused(hs, token).code == "invalid_token"


def test_tampered_payload_is_refused(hs: TokenService) -> None:
    header, _, sig = hs.issue(sub="clerk-01", role="clerk").split(".")
    body = b64url(json.dumps(claims(role="admin")).encode())
    assert refused(hs, f"{header}.{body}.{sig}").code == "invalid_token"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"role": "superuser"}, "role", id="unknown-role"),
        pytest.param({"role": "reviewer"}, "dept", id="reviewer-without-dept"),
        pytest.param({"role": "clerk", "level": "province"}, "level", id="unknown-level"),
    ],
)
def test_issue_refuses_bad_identities(
    hs: TokenService, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hs.issue(sub="x", **kwargs)


@pytest.mark.parametrize(
    "secret",
    [pytest.param("short", id="5-chars"), pytest.param("x" * 31, id="31-chars")],
)
def test_short_hs256_secret_is_a_config_error(tmp_path: Path, secret: str) -> None:
    with pytest.raises(ConfigError, match="jwt_secret"):
        TokenService(Config(data_dir=tmp_path, jwt_secret=secret))


def test_secret_of_32_chars_is_enough(tmp_path: Path) -> None:
    svc = TokenService(Config(data_dir=tmp_path, jwt_secret="x" * 32))
    assert svc.verify(svc.issue(sub="a", role="admin")).role == "admin"


def test_generated_secret_is_shared_by_services_on_one_data_dir(tmp_path: Path) -> None:
    a = TokenService(Config(data_dir=tmp_path / "data"))
    b = TokenService(Config(data_dir=tmp_path / "data"))
    assert b.verify(a.issue(sub="clerk-01", role="clerk")).sub == "clerk-01"


# -- RS256 / ES256 ----------------------------------------------------------------------


def new_private_key(alg: str) -> PrivateKeyTypes:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class KeyPair:
    def __init__(self, alg: str, directory: Path) -> None:
        self.alg = alg
        self.key = new_private_key(alg)
        self.private_pem = private_pem(self.key)
        self.public_pem = public_pem(self.key)
        self.priv = directory / f"{alg}-private.pem"
        self.pub = directory / f"{alg}-public.pem"
        self.priv.write_bytes(self.private_pem)
        self.pub.write_bytes(self.public_pem)

    def config(self, tmp_path: Path, with_private: bool = True) -> Config:
        return Config(
            data_dir=tmp_path / "data",
            jwt_algorithm=self.alg,  # type: ignore[arg-type]
            jwt_public_key_file=self.pub,
            jwt_private_key_file=self.priv if with_private else None,
        )


@pytest.fixture(params=["RS256", "ES256"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> KeyPair:
    return KeyPair(request.param, tmp_path)


def test_asymmetric_token_from_approval_system_verifies(keys: KeyPair, tmp_path: Path) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    assert not svc.can_sign
    token = jwt.encode(claims(case="C-1", session="s_1"), keys.private_pem, algorithm=keys.alg)
    who = svc.verify(token)
    assert (who.sub, who.role, who.dept, who.level, who.case, who.session) == (
        "rev-city-amr-1",
        "reviewer",
        "city-amr",
        "city",
        "C-1",
        "s_1",
    )
    # Verifying never needed a shared secret: nothing was generated.
    assert not (tmp_path / "data" / "jwt_secret").exists()


def test_asymmetric_round_trip_with_private_key(keys: KeyPair, tmp_path: Path) -> None:
    svc = TokenService(keys.config(tmp_path))
    assert svc.can_sign
    token = svc.issue(sub="clerk-01", role="clerk", name="陈晓")
    assert jwt.get_unverified_header(token)["alg"] == keys.alg
    # Anyone holding the public key can check it.
    raw = jwt.decode(token, keys.public_pem, algorithms=[keys.alg], audience=AUD, issuer=ISS)
    assert raw["sub"] == "clerk-01"
    assert svc.verify(token).name == "陈晓"


def test_asymmetric_without_private_key_cannot_sign(keys: KeyPair, tmp_path: Path) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    with pytest.raises(ConfigError, match="jwt_private_key_file"):
        svc.issue(sub="clerk-01", role="clerk")


def test_asymmetric_token_signed_by_other_key_is_refused(keys: KeyPair, tmp_path: Path) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    stranger = private_pem(new_private_key(keys.alg))
    token = jwt.encode(claims(), stranger, algorithm=keys.alg)
    assert refused(svc, token).code == "invalid_token"


def test_asymmetric_expired(keys: KeyPair, tmp_path: Path) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    past = int(time.time()) - 3600
    token = jwt.encode(claims(iat=past, exp=past + 60), keys.private_pem, algorithm=keys.alg)
    assert refused(svc, token).code == "token_expired"


def test_alg_confusion_hs256_with_public_key_as_secret_is_refused(
    keys: KeyPair, tmp_path: Path
) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    for key in (keys.public_pem, keys.public_pem.strip(), keys.pub.read_bytes()):
        token = hand_made_hs256(claims(role="admin"), key)
        assert refused(svc, token).code == "invalid_token"


def test_hs256_with_a_shared_secret_is_refused_when_asymmetric(
    keys: KeyPair, tmp_path: Path
) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert refused(svc, token).code == "invalid_token"


def test_alg_none_is_refused_when_asymmetric(keys: KeyPair, tmp_path: Path) -> None:
    svc = TokenService(keys.config(tmp_path, with_private=False))
    token = jwt.encode(claims(role="admin"), None, algorithm="none")
    assert refused(svc, token).code == "invalid_token"


def test_other_asymmetric_algorithm_is_refused(tmp_path: Path) -> None:
    rs = KeyPair("RS256", tmp_path)
    es = KeyPair("ES256", tmp_path)
    svc = TokenService(rs.config(tmp_path, with_private=False))
    token = jwt.encode(claims(), es.private_pem, algorithm="ES256")
    assert refused(svc, token).code == "invalid_token"


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_without_public_key_is_a_config_error(tmp_path: Path, alg: str) -> None:
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        TokenService(Config(data_dir=tmp_path, jwt_algorithm=alg))  # type: ignore[arg-type]


def test_asymmetric_with_missing_public_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError) as info:
        TokenService(Config(jwt_algorithm="RS256", jwt_public_key_file=missing))
    assert "jwt_public_key_file" in str(info.value)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a key\n", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="bad-pem-body"
        ),
        pytest.param(bytes(range(256)), id="binary"),
    ],
)
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_garbage_public_key_file_is_a_config_error(
    tmp_path: Path, alg: str, content: bytes
) -> None:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(content)
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        TokenService(Config(jwt_algorithm=alg, jwt_public_key_file=pub))  # type: ignore[arg-type]


def test_der_public_key_file_is_a_config_error(keys: KeyPair, tmp_path: Path) -> None:
    der = tmp_path / "pub.der"
    der.write_bytes(
        keys.key.public_key().public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        TokenService(Config(jwt_algorithm=keys.alg, jwt_public_key_file=der))  # type: ignore[arg-type]


def test_public_key_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    es = KeyPair("ES256", tmp_path)
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        TokenService(Config(jwt_algorithm="RS256", jwt_public_key_file=es.pub))
    rs = KeyPair("RS256", tmp_path)
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        TokenService(Config(jwt_algorithm="ES256", jwt_public_key_file=rs.pub))


def test_private_key_given_as_public_key_is_a_config_error(keys: KeyPair, tmp_path: Path) -> None:
    # Accepting it would fail every verification later, at request time.
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        TokenService(
            Config(jwt_algorithm=keys.alg, jwt_public_key_file=keys.priv)  # type: ignore[arg-type]
        )


def test_garbage_private_key_file_is_a_config_error(keys: KeyPair, tmp_path: Path) -> None:
    bad = tmp_path / "bad-private.pem"
    bad.write_text("not a private key\n", encoding="ascii")
    with pytest.raises(ConfigError, match="jwt_private_key_file"):
        TokenService(
            Config(
                jwt_algorithm=keys.alg,  # type: ignore[arg-type]
                jwt_public_key_file=keys.pub,
                jwt_private_key_file=bad,
            )
        )


def test_private_key_not_matching_public_key_is_a_config_error(
    keys: KeyPair, tmp_path: Path
) -> None:
    # Otherwise the server would hand out tokens (demo sign-in, applicant links) that it
    # then refuses itself.
    other = tmp_path / "other-private.pem"
    other.write_bytes(private_pem(new_private_key(keys.alg)))
    with pytest.raises(ConfigError, match="jwt_private_key_file"):
        TokenService(
            Config(
                jwt_algorithm=keys.alg,  # type: ignore[arg-type]
                jwt_public_key_file=keys.pub,
                jwt_private_key_file=other,
            )
        )


# -- lifetimes and sizes (issue #10, finding 4) -------------------------------------------

DAY = 24 * 3600


def hs_token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("override", "why"),
    [
        pytest.param({"exp": int(time.time()) + 100 * 365 * DAY}, "lifetime", id="exp-100-years"),
        pytest.param(
            # exp an hour on from collection: a slow run must not meet the expiry first.
            {"iat": int(time.time()) - 2 * DAY, "exp": int(time.time()) + 3600},
            "lifetime",
            id="issued-days-ago",
        ),
        pytest.param({"sub": ""}, "sub", id="empty-sub"),
        pytest.param({"sub": "   "}, "sub", id="blank-sub"),
        pytest.param({"sub": "s" * 129}, "sub", id="long-sub"),
        pytest.param({"name": "名" * 101}, "name", id="long-name"),
        pytest.param({"name": ["x"]}, "name", id="name-not-string"),
        pytest.param({"name": "陈\x00晓"}, "NUL", id="nul-in-name"),  # PostgreSQL refuses it
        pytest.param({"dept": "d" * 129}, "dept", id="long-dept"),
        pytest.param({"case": "c" * 129}, "case", id="long-case"),
        pytest.param({"session": "s" * 129}, "session", id="long-session"),
    ],
)
def test_overlong_lifetimes_and_claims_are_refused(
    hs: TokenService, override: dict[str, Any], why: str
) -> None:
    err = refused(hs, hs_token(**override))
    assert err.code == "invalid_token"
    assert why in err.message


def test_the_longest_allowed_token_verifies(hs: TokenService) -> None:
    now = int(time.time())
    who = hs.verify(hs_token(iat=now, exp=now + DAY, name="名" * 100, sub="s" * 128))
    assert who.sub == "s" * 128 and who.name == "名" * 100


def test_token_max_ttl_is_a_setting(tmp_path: Path) -> None:
    svc = TokenService(
        Config(
            data_dir=tmp_path,
            jwt_secret=SECRET,
            token_max_ttl_s=3600,
            token_ttl_s=3600,
            applicant_link_ttl_s=3600,
        )
    )
    now = int(time.time())
    assert svc.verify(hs_token(iat=now, exp=now + 3600)).sub == "rev-city-amr-1"
    assert refused(svc, hs_token(iat=now, exp=now + 3601)).code == "invalid_token"


def test_issue_refuses_a_lifetime_beyond_the_maximum(hs: TokenService) -> None:
    with pytest.raises(ValueError, match="token_max_ttl_s"):
        hs.issue(sub="clerk-01", role="clerk", ttl=DAY + 1)
    with pytest.raises(ValueError, match="sub"):
        hs.issue(sub="", role="clerk")
    with pytest.raises(ValueError, match="name"):
        hs.issue(sub="clerk-01", role="clerk", name="n" * 101)
    assert hs.verify(hs.issue(sub="clerk-01", role="clerk", ttl=DAY)).sub == "clerk-01"


def test_the_token_command_refuses_a_long_ttl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jointreview.cli import main

    base = ["token", "--role", "clerk", "--user", "clerk-01", "--data-dir", str(tmp_path)]
    assert main([*base, "--ttl", str(100 * 365 * DAY)]) == 2
    assert "token_max_ttl_s" in capsys.readouterr().err
    assert main([*base, "--ttl", "600"]) == 0


@pytest.mark.parametrize("name", ["token_ttl_s", "applicant_link_ttl_s"])
def test_default_lifetimes_must_fit_the_maximum(tmp_path: Path, name: str) -> None:
    from signaling.config import load_config

    with pytest.raises(ConfigError, match="token_max_ttl_s"):
        load_config(
            environ={f"JR_{name.upper()}": str(2 * DAY), "JR_DATA_DIR": str(tmp_path)},
        )
