"""rst.auth without HTTP: the ``[auth]`` section, grants, static tokens, Basic users, the key
set's cache and rate limit, bearer token checks, and the refuse-to-start rule.

Signed tokens come from :mod:`tests.support.idp` (cryptography, not the verifier's library);
the key set is fed by an in-memory source and a clock the test moves, so nothing sleeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import RSAKey
from pydantic import ValidationError

from rst import cli, workers
from rst.auth import AuthConfig, Grants, exposure_problem, exposure_warnings, passwords
from rst.auth.authenticate import Authenticator
from rst.auth.jwks import Keys, KeySet, file_source
from rst.auth.oidc import BearerTokens, TokenRefused, roles_at
from rst.auth.passwords import BasicUsers, check_password
from rst.auth.tokens import StaticTokens
from rst.config import AeConfig, Config, DimseConfig, HttpConfig, load_config
from rst.errors import AuthUnavailable, Unauthenticated
from tests.support.idp import (
    ISSUER,
    SigningKey,
    b64url,
    claims,
    ec_key,
    hs256_with_public_key,
    mint,
    rsa_key,
    unsigned,
)

FAST_ARGON2 = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""Hashes that verify in well under a millisecond (rst reads the cost from the hash)."""
TOKEN = "s3cr3t-token-for-the-ai-pipeline"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()


def auth(**overrides: Any) -> AuthConfig:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": "rst",
        "jwks_file": "/nonexistent/jwks.json",
        "grants": [{"role": "reader", "aets": ["*"], "allow": ["search", "retrieve"]}],
    }
    settings.update(overrides)
    return AuthConfig.model_validate(settings)


# -- the section ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rst.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_section_of_the_issue_loads(tmp_path: Path) -> None:
    password_hash = FAST_ARGON2.hash("pw")
    path = write(
        tmp_path,
        f"""
[auth]
issuer = "{ISSUER}"
audience = "rst"
jwks_url = "https://idp.example.org/realms/radiology/protocol/openid-connect/certs"
roles_claim = "realm_access.roles"

[[auth.tokens]]
name = "ai-pipeline"
sha256 = "{TOKEN_SHA256.upper()}"
roles = ["reader"]

[[auth.users]]
name = "orthanc-peer"
password_hash = "{password_hash}"
roles = ["reader", "writer"]

[[auth.grants]]
role = "reader"
aets = ["*"]
allow = ["search", "retrieve"]
""",
    )
    config = load_config(path, environ={})
    assert config.auth is not None
    assert config.auth.tokens[0].sha256 == TOKEN_SHA256  # kept lower-case
    assert config.auth.users[0].roles == ("reader", "writer")
    assert config.auth.grants[0].allow == ("search", "retrieve")
    assert config.auth.open_endpoints == ("livez",)
    assert password_hash not in config.model_dump_json()  # check-config prints this


def test_absent_section_means_no_authentication() -> None:
    assert load_config(environ={}).auth is None


def test_environment_sets_auth_keys() -> None:
    config = load_config(environ={"RST_AUTH_ANONYMOUS": "true"})
    assert config.auth is not None
    assert config.auth.anonymous


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({}, "configure a way to authenticate"),
        ({"anonymous": True, "tokens": [{"name": "t", "sha256": "0" * 64}]}, "anonymous = true"),
        ({"jwks_file": "k.json"}, "need issuer and audience"),
        ({"issuer": ISSUER, "jwks_file": "k.json"}, "need issuer and audience"),
        ({"issuer": ISSUER, "audience": "rst", "tokens": [{"name": "t", "sha256": "0" * 64}]},
         "need jwks_url or jwks_file"),
        ({"issuer": ISSUER, "audience": "rst", "jwks_file": "k", "jwks_url": "https://i/k"},
         "not both"),
        ({"issuer": ISSUER, "audience": "rst", "jwks_url": "http://idp.example.org/certs"},
         "https://"),
        ({"tokens": [{"name": "t", "sha256": "abc"}]}, "64 hex digits"),
        ({"tokens": [{"name": "t", "sha256": "0" * 64}, {"name": "t", "sha256": "1" * 64}]},
         "appears twice"),
        ({"users": [{"name": "u", "password_hash": "plain-text"}]}, "argon2"),
        ({"users": [{"name": "a:b", "password_hash": "$2b$04$x"}]}, "users.0.name"),
        ({"tokens": [{"name": "t", "sha256": "0" * 64}],
          "grants": [{"role": "r", "aets": ["*"], "allow": ["delete"]}]}, "grants.0.allow"),
        ({"tokens": [{"name": "t", "sha256": "0" * 64}], "open_endpoints": ["everything"]},
         "open_endpoints"),
    ],
)  # fmt: skip
def test_invalid_sections_name_the_problem(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match="auth") as caught:
        Config.model_validate({"auth": settings})
    assert complaint in str(caught.value)


def test_http_jwks_url_is_allowed_on_loopback_only() -> None:
    assert auth(jwks_file=None, jwks_url="http://127.0.0.1:8081/certs").jwks_url
    assert auth(jwks_file=None, jwks_url="http://localhost/certs").jwks_url
    with pytest.raises(ValueError, match="https"):
        auth(jwks_file=None, jwks_url="http://10.0.0.5/certs")


# -- grants ---------------------------------------------------------------------------------------


def test_grants_combine_roles_and_aets() -> None:
    grants = Grants.of(
        auth(
            grants=[
                {"role": "reader", "aets": ["*"], "allow": ["search"]},
                {"role": "reader", "aets": ["A"], "allow": ["retrieve"]},
                {"role": "writer", "aets": ["B"], "allow": ["store"]},
            ]
        ).grants
    )
    assert grants.actions({"reader"}, "A") == {"search", "retrieve"}
    assert grants.actions({"reader"}, "B") == {"search"}
    assert grants.actions({"reader", "writer"}, "B") == {"search", "store"}
    assert grants.actions({"writer"}, "A") == frozenset()
    assert grants.actions({"nobody"}, "A") == frozenset()
    assert grants.actions(set(), "A") == frozenset()
    assert not grants.allows({"writer"}, "*", "store")  # "*" in a URL is not every AE


# -- static tokens --------------------------------------------------------------------------------


def test_static_tokens_match_by_sha256_only() -> None:
    tokens = StaticTokens(
        auth(tokens=[{"name": "ai", "sha256": TOKEN_SHA256, "roles": ["reader"]}]).tokens
    )
    found = tokens.identify(TOKEN)
    assert found is not None
    assert (found.subject, found.method, found.roles) == ("ai", "token", frozenset({"reader"}))
    assert tokens.identify(TOKEN + "x") is None
    assert tokens.identify(TOKEN_SHA256) is None  # the hash is not the token
    assert tokens.identify("\udcff") is None  # not encodable as UTF-8: no crash


# -- Basic users -----------------------------------------------------------------------------------


now = [0.0]


def users(**hashes: str) -> BasicUsers:
    config = auth(
        users=[{"name": n, "password_hash": h, "roles": ["reader"]} for n, h in hashes.items()]
    )
    return BasicUsers(config.users, clock=lambda: now[0])


@pytest.mark.parametrize(
    "make",
    [
        FAST_ARGON2.hash,
        lambda pw: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode(),
    ],
    ids=["argon2", "bcrypt"],
)
def test_check_password_argon2_and_bcrypt(make: Any) -> None:
    stored = make("correct horse")
    assert check_password(stored, "correct horse")
    assert not check_password(stored, "correct horsE")
    assert not check_password(stored, "")
    assert not check_password(stored, "x" * 100)  # bcrypt refuses > 72 bytes: a plain no
    assert not check_password(stored[:-4], "correct horse")  # a damaged hash


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hash rst checks a password against (the slow part), in order."""
    checked: list[str] = []
    real = passwords.check_password

    def counting(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "check_password", counting)
    return checked


async def test_basic_user_good_bad_unknown(hashes: list[str]) -> None:
    known = users(alice=FAST_ARGON2.hash("wonderland"))
    found = await known.identify("alice", "wonderland")
    assert found is not None
    assert (found.subject, found.method, found.roles) == ("alice", "basic", frozenset({"reader"}))
    assert await known.identify("alice", "Wonderland") is None
    checks = len(hashes)
    assert await known.identify("mallory", "wonderland") is None
    assert len(hashes) == checks + 1  # an unknown user costs a hash too


async def test_right_passwords_are_remembered_for_a_while(hashes: list[str]) -> None:
    now[0] = 0.0
    known = users(alice=FAST_ARGON2.hash("wonderland"))
    assert await known.identify("alice", "wonderland") is not None
    assert await known.identify("alice", "wonderland") is not None
    assert len(hashes) == 1
    assert await known.identify("alice", "other") is None  # not remembered: checked
    assert len(hashes) == 2
    now[0] = 301.0
    assert await known.identify("alice", "wonderland") is not None
    assert len(hashes) == 3


# -- the key set -----------------------------------------------------------------------------------


class Provider:
    """An in-memory JWKS source that counts fetches and can be down."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = [key.jwk() for key in keys]
        self.down = False
        self.fetches = 0

    async def __call__(self) -> Mapping[str, Any]:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return {"keys": self.keys}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_set(provider: Provider, clock: Clock, refresh: float = 30.0) -> KeySet:
    return KeySet(provider, max_age=3600.0, refresh_interval=refresh, clock=clock)


async def test_unknown_kid_refetches_at_most_once_per_interval() -> None:
    old, new = rsa_key("old"), rsa_key("new")
    provider, clock = Provider(old), Clock()
    keys = key_set(provider, clock)
    assert await keys.find("old") is not None
    assert provider.fetches == 1
    assert await keys.find("old") is not None
    assert provider.fetches == 1  # cached

    provider.keys = [old.jwk(), new.jwk()]  # the provider rotates
    assert await keys.find("new") is None  # fetched 0 s ago: not again yet
    assert await keys.find("made-up") is None
    assert provider.fetches == 1

    clock.now += 30
    assert await keys.find("new") is not None
    assert provider.fetches == 2
    assert await keys.find("made-up") is None
    assert await keys.find("made-up-too") is None
    assert provider.fetches == 2  # rate-limited


async def test_keys_expire_and_survive_a_provider_outage() -> None:
    provider, clock = Provider(ec_key("k")), Clock()
    keys = key_set(provider, clock)
    assert await keys.find("k") is not None
    provider.down = True
    clock.now += 3600
    assert await keys.find("k") is not None  # stale keys are better than none
    assert provider.fetches == 2


async def test_no_keys_at_all_is_503_until_the_provider_answers() -> None:
    provider, clock = Provider(ec_key("k")), Clock()
    provider.down = True
    keys = key_set(provider, clock)
    with pytest.raises(AuthUnavailable) as caught:
        await keys.find("k")
    assert caught.value.status == 503
    assert caught.value.retry_after == 30
    with pytest.raises(AuthUnavailable):
        await keys.find("k")
    assert provider.fetches == 1
    provider.down = False
    clock.now += 30
    assert await keys.find("k") is not None


def rsa_pem(key: SigningKey) -> bytes:
    return key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def test_keys_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [EC.jwk()]}))
    clock = Clock()
    keys = KeySet(file_source(str(path)), max_age=3600, refresh_interval=30, clock=clock)
    assert await keys.find(EC.kid) is not None
    path.write_text(json.dumps({"keys": [EC.jwk(), RSA.jwk()]}))  # rotated by hand
    clock.now += 30
    assert await keys.find(RSA.kid) is not None

    broken = tmp_path / "broken.json"
    broken.write_text("not json")
    with pytest.raises(AuthUnavailable):
        await KeySet(file_source(str(broken)), max_age=1, refresh_interval=1).find(EC.kid)


def test_keys_carry_their_algorithm_and_skip_what_cannot_verify() -> None:
    rsa_, ec_ = rsa_key("r"), ec_key("e")
    private = {**RSAKey.import_key(rsa_pem(rsa_)).as_dict(private=True), "kid": "private"}
    parsed = Keys.parse(
        {
            "keys": [
                rsa_.jwk(),
                ec_.jwk(),
                {**rsa_.jwk(), "kid": "pss", "alg": "PS256"},
                {**rsa_.jwk(), "kid": "enc", "use": "enc"},
                {"kty": "oct", "kid": "hmac", "k": b64url(b"secret")},
                {**rsa_.jwk(), "kid": "hs", "alg": "HS256"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                private,
                "not a key",
            ]
        }
    )
    assert {kid: alg for kid, (_, alg) in parsed.by_kid.items()} == {
        "r": "RS256",
        "e": "ES256",
        "pss": "PS256",
    }
    assert parsed.find(None) is None  # several keys: a token must name one
    single = Keys.parse({"keys": [ec_.jwk()]})
    assert single.find(None) is not None
    with pytest.raises(ValueError, match="keys"):
        Keys.parse({"nokeys": []})


# -- bearer tokens ---------------------------------------------------------------------------------


RSA, EC = rsa_key("rsa-1"), ec_key("ec-1")


def bearer(**overrides: Any) -> BearerTokens:
    provider = Provider(RSA, EC)
    return BearerTokens(auth(**overrides), key_set(provider, Clock()))


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
async def test_a_good_token_names_its_subject_and_roles(key: SigningKey) -> None:
    found = await bearer().identify(mint(key, claims(roles=["reader", "x"])))
    assert found.subject == "f3c1e0d2-user"
    assert found.username == "dr.house"
    assert found.method == "jwt"
    assert found.issuer == ISSUER
    assert found.roles == {"reader", "x"}


async def test_audience_may_be_a_list() -> None:
    found = await bearer().identify(mint(RSA, claims(audience=["account", "rst"], roles=["r"])))
    assert found.roles == {"r"}


async def refused(token: str, **overrides: Any) -> str:
    with pytest.raises(TokenRefused) as caught:
        await bearer(**overrides).identify(token)
    return str(caught.value)


async def test_expiry_with_leeway() -> None:
    assert "expired" in await refused(mint(RSA, claims(lifetime=-31)))
    await bearer().identify(mint(RSA, claims(lifetime=-20)))  # within the 30 s leeway
    assert "expired" in await refused(mint(RSA, claims(lifetime=-5)), leeway=0)


async def test_not_before() -> None:
    later = int(time.time()) + 120
    assert "not valid yet" in await refused(mint(RSA, claims(nbf=later)))
    await bearer().identify(mint(RSA, claims(nbf=int(time.time()) + 10)))  # within leeway


async def test_exp_is_required() -> None:
    payload = claims()
    del payload["exp"]
    assert "exp" in await refused(mint(RSA, payload))


async def test_another_audience_or_issuer() -> None:
    assert "audience" in await refused(mint(RSA, claims(audience="account")))
    assert "issuer" in await refused(mint(RSA, claims(issuer="https://evil.test/realms/r")))
    payload = claims()
    del payload["aud"]
    assert "aud" in await refused(mint(RSA, payload))


async def test_unsigned_and_confused_algorithms_are_refused() -> None:
    assert "algorithm" in await refused(unsigned(RSA, claims()))
    assert "algorithm" in await refused(hs256_with_public_key(RSA, claims()))
    # the header's alg must be the key's, even one the verifier knows
    assert "algorithm" in await refused(mint(EC, claims(), kid=RSA.kid))
    assert "algorithm" in await refused(mint(RSA, claims(), alg="RS512"))


async def test_bad_signatures_and_garbage() -> None:
    good = mint(RSA, claims())
    head, _payload, signature = good.split(".")
    forged = mint(rsa_key(RSA.kid), claims())  # same kid, another key
    assert "signature" in await refused(forged)
    tampered = f"{head}.{b64url(b'{}')}.{signature}"
    assert "signature" in await refused(tampered)
    assert "not a JWT" in await refused("not-a-jwt")
    assert "not a JWT" in await refused("a.b.c")
    assert "not a JWT" in await refused("ünïcode.b.c")
    assert "key" in await refused(mint(rsa_key("unknown"), claims()))
    assert "kid" in await refused(mint(RSA, claims(), kid=7))


def test_roles_at_a_dotted_path() -> None:
    token = {
        "realm_access": {"roles": ["a", "b", 3]},
        "resource_access": {"rst": {"roles": ["c"]}},
        "scope": "openid dicom.read",
        "flat": 5,
    }
    assert roles_at(token, "realm_access.roles") == ["a", "b"]
    assert roles_at(token, "resource_access.rst.roles") == ["c"]
    assert roles_at(token, "scope") == ["openid", "dicom.read"]
    assert roles_at(token, "flat") == []
    assert roles_at(token, "flat.deeper") == []
    assert roles_at(token, "missing.roles") == []


# -- the Authorization header ----------------------------------------------------------------------


async def test_challenges_name_what_is_accepted() -> None:
    only_tokens = Authenticator(
        AuthConfig.model_validate({"tokens": [{"name": "t", "sha256": TOKEN_SHA256}]})
    )
    assert only_tokens.challenges == ('Bearer realm="rst"',)
    only_users = Authenticator(
        AuthConfig.model_validate(
            {"users": [{"name": "u", "password_hash": FAST_ARGON2.hash("p")}], "realm": "PACS"}
        )
    )
    assert only_users.challenges == ('Basic realm="PACS", charset="UTF-8"',)
    with pytest.raises(Unauthenticated) as caught:
        await only_users.authenticate(f"Bearer {TOKEN}")
    assert "use Basic" in caught.value.message
    found = await only_tokens.authenticate(f"bEaReR   {TOKEN}  ")
    assert found.subject == "t"


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic", "Basic !!!", "Basic " + b64url(b"no-colon"),
               "Digest x", "Bearer " + "x" * 20000]
)  # fmt: skip
async def test_malformed_credentials_are_401(header: str) -> None:
    authenticator = Authenticator(
        AuthConfig.model_validate(
            {
                "tokens": [{"name": "t", "sha256": TOKEN_SHA256}],
                "users": [{"name": "u", "password_hash": FAST_ARGON2.hash("p")}],
            }
        )
    )
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(header)
    assert caught.value.status == 401
    assert caught.value.challenges[0].startswith("Bearer realm=")
    assert caught.value.challenges[-1].startswith("Basic realm=")


# -- the refuse-to-start rule ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "pacs.example.org"])
def test_no_auth_beyond_loopback_is_refused(host: str) -> None:
    config = Config(http=HttpConfig(host=host))
    problem = exposure_problem(config)
    assert problem is not None
    assert "anonymous = true" in problem
    anonymous = Config(http=HttpConfig(host=host), auth=AuthConfig(anonymous=True))
    assert exposure_problem(anonymous) is None
    assert exposure_problem(Config(http=HttpConfig(host=host), auth=auth())) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_without_auth_is_fine(host: str) -> None:
    assert exposure_problem(Config(http=HttpConfig(host=host))) is None


def test_warnings_about_grants_nobody_can_use() -> None:
    config = Config(
        aets=(AeConfig(aet="A"),),
        auth=auth(
            tokens=[{"name": "lonely", "sha256": TOKEN_SHA256, "roles": ["nobody"]}],
            grants=[{"role": "reader", "aets": ["A", "TYPO"], "allow": ["search"]}],
        ),
    )
    warnings = exposure_warnings(config)
    assert any("'TYPO' is not configured" in w for w in warnings)
    assert any("'lonely' has no role with a grant" in w for w in warnings)
    assert exposure_warnings(Config()) == []
    anonymous = exposure_warnings(Config(auth=AuthConfig(anonymous=True)))
    assert "without credentials" in anonymous[0]


def test_a_receiver_open_to_any_caller_is_warned_about() -> None:
    exposed = Config(dimse=DimseConfig(host="0.0.0.0", accept_unknown_callers=True))
    [warning] = exposure_warnings(exposed)
    assert "accept_unknown_callers = true" in warning
    assert "reachable from the network" in warning
    [local] = exposure_warnings(Config(dimse=DimseConfig(host="::1", accept_unknown_callers=True)))
    assert "accept_unknown_callers = true" in local
    assert "on loopback" in local
    # the default is closed: nothing to warn about, wherever the receiver listens
    assert Config().dimse.accept_unknown_callers is False
    assert exposure_warnings(Config(dimse=DimseConfig(host="0.0.0.0"))) == []


def test_serve_refuses_and_check_config_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def started(*args: Any) -> int:
        raise AssertionError("rst started")

    monkeypatch.setattr(cli, "_run", started)
    for name in [name for name in os.environ if name.startswith("RST_")]:
        monkeypatch.delenv(name)
    exposed = write(tmp_path, '[http]\nhost = "0.0.0.0"\nport = 0\n')
    for command in ("serve", "dev"):
        assert cli.main([command, "-c", str(exposed)]) == 2
        refused = capsys.readouterr().err
        assert "rst: cannot start: [http] host = '0.0.0.0'" in refused
        assert "anonymous = true" in refused

    assert cli.main(["check-config", "-c", str(exposed)]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["auth"] is None
    assert "would refuse to start" in err

    on_purpose = write(tmp_path, '[http]\nhost = "0.0.0.0"\n[auth]\nanonymous = true\n')
    assert cli.main(["check-config", "-c", str(on_purpose)]) == 0
    assert "warning: auth.anonymous = true" in capsys.readouterr().err


def test_check_config_warns_about_a_receiver_open_to_any_caller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("RST_")]:
        monkeypatch.delenv(name)
    closed = write(tmp_path, "[dimse]\nport = 11112\n")
    assert cli.main(["check-config", "-c", str(closed)]) == 0
    assert "accept_unknown_callers" not in capsys.readouterr().err
    opened = write(tmp_path, "[dimse]\naccept_unknown_callers = true\n")
    assert cli.main(["check-config", "-c", str(opened)]) == 0
    assert "warning: [dimse] accept_unknown_callers = true" in capsys.readouterr().err


def test_worker_processes_get_the_password_hashes_check_config_does_not() -> None:
    password_hash = FAST_ARGON2.hash("pw")
    config = Config(
        http=HttpConfig(workers=2),
        auth=auth(users=[{"name": "u", "password_hash": password_hash, "roles": ["reader"]}]),
    )
    spec = json.loads(workers._spec(config, 0, {}, "/tmp/metrics"))
    assert Config.model_validate(spec["config"]) == config
    assert password_hash not in config.model_dump_json()
