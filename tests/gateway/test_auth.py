"""``[auth]`` through the real app and listener: every 401 and 403, per-AE grants on every route
family, ``GET /aets`` filtered, CORS preflight, and the identity provider's keys fetched over
HTTP from a JWKS the test serves (key rotation, the rate limit, a provider that is down).

Two in-memory archives, ``A`` and ``B``, stand behind the gateway; what they answer does not
matter here, only whether a request got past the guard (anything but 401/403) or not.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from argon2 import PasswordHasher

from rst.auth import AuthConfig
from rst.auth.guard import requirement_of
from rst.auth.settings import ACTIONS
from rst.config import AeConfig, Config, HttpConfig
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend
from tests.support.idp import (
    ISSUER,
    JwksServer,
    SigningKey,
    claims,
    ec_key,
    hs256_with_public_key,
    mint,
    rsa_key,
    serve_jwks,
    unsigned,
)
from tests.support.scripted_backend import ScriptedBackend, part10

STUDY, SERIES = "1.2.3", "1.2.3.4"
SOP = f"{SERIES}.1"
ORIGIN = "https://viewer.test"
TOKEN = "machine-token-0123456789abcdef"
PASSWORD = "peer-password"

# (method, path under /aets/{aet}, the action it needs)
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "", "search"),  # the C-ECHO health check
    ("GET", "/studies", "search"),
    ("GET", "/series", "search"),
    ("GET", "/instances", "search"),
    ("GET", f"/studies/{STUDY}/series", "search"),
    ("GET", f"/studies/{STUDY}/instances", "search"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances", "search"),
    ("GET", f"/studies/{STUDY}", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1", "retrieve"),
    ("GET", f"/studies/{STUDY}/metadata", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/metadata", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/metadata", "retrieve"),
    ("GET", f"/studies/{STUDY}/bulkdata", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/pixeldata", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulkdata/00420011", "retrieve"),
    ("GET", f"/studies/{STUDY}/rendered", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/thumbnail", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1/rendered", "retrieve"),
    (
        "GET",
        f"/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}",
        "retrieve",
    ),
    ("POST", "/studies", "store"),
    ("POST", f"/studies/{STUDY}", "store"),
    ("GET", "/modality-scheduled-procedure-steps", "worklist"),
]

FAST_ARGON2 = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def auth_config(jwks: JwksServer, **overrides: Any) -> AuthConfig:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": "rst",
        "jwks_url": jwks.url,
        "jwks_refresh_interval": 300,
        "tokens": [
            {"name": "ai", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "roles": ["r"]}
        ],
        "users": [
            {"name": "peer", "password_hash": FAST_ARGON2.hash(PASSWORD), "roles": ["r", "w"]}
        ],
        "grants": [
            {"role": "r", "aets": ["A"], "allow": ["search", "retrieve"]},
            {"role": "w", "aets": ["A"], "allow": ["store"]},
            {"role": "search", "aets": ["A"], "allow": ["search"]},
            {"role": "retrieve", "aets": ["A"], "allow": ["retrieve"]},
            {"role": "store", "aets": ["A"], "allow": ["store"]},
            {"role": "worklist", "aets": ["A"], "allow": ["worklist"]},
            {"role": "b-searcher", "aets": ["B"], "allow": ["search"]},
            {"role": "admin", "aets": ["*"], "allow": ["search", "retrieve", "store", "worklist"]},
        ],
    }
    settings.update(overrides)
    return AuthConfig.model_validate(settings)


def archives() -> dict[str, Backend]:
    return {
        "A": ScriptedBackend(instances=[part10(SOP)]),
        "B": ScriptedBackend(instances=[part10(SOP)]),
    }


@asynccontextmanager
async def gateway(auth: AuthConfig | None) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(
        http=HttpConfig(host="127.0.0.1", port=0, cors_origins=(ORIGIN,)),
        aets=(AeConfig(aet="A"), AeConfig(aet="B")),
        auth=auth,
    )
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, create_app(config, archives()), config.http)
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def protected(
    *keys: SigningKey, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, JwksServer]]:
    async with serve_jwks(*keys) as jwks, gateway(auth_config(jwks, **overrides)) as client:
        yield client, jwks


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def call(
    client: httpx.AsyncClient, method: str, url: str, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return await client.request(method, url, headers=headers)


def assert_401(response: httpx.Response, *, basic_too: bool = True) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status"] == 401
    challenges = response.headers.get_list("WWW-Authenticate")
    assert challenges[0].startswith('Bearer realm="rst"')
    if basic_too:
        assert challenges[1] == 'Basic realm="rst", charset="UTF-8"'


RSA, EC = rsa_key("rsa-1"), ec_key("ec-1")


# -- 401 ------------------------------------------------------------------------------------------


async def test_every_route_needs_credentials() -> None:
    async with protected(RSA) as (client, _):
        for method, path, _action in ROUTES:
            assert_401(await call(client, method, f"/aets/A{path}"))
        assert_401(await client.get("/aets"))
        # an unknown AE, or no route at all, tells a stranger nothing either
        assert_401(await client.get("/aets/NOPE/studies"))
        assert_401(await client.get("/aets/NOPE"))
        assert_401(await client.get("/no/such/route"))
        assert_401(await client.delete("/aets/A/studies"))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-token",
        "Bearer " + "e30.e30.",
        f"Basic {base64.b64encode(f'peer:{PASSWORD}x'.encode()).decode()}",
        f"Basic {base64.b64encode(f'nobody:{PASSWORD}'.encode()).decode()}",
        "Basic %%%",
        "Negotiate abc",
    ],
    ids=["bad-token", "empty-jwt", "bad-password", "unknown-user", "bad-base64", "scheme"],
)
async def test_bad_credentials_are_401(authorization: str) -> None:
    async with protected(RSA) as (client, _):
        response = await client.get("/aets/A/studies", headers={"Authorization": authorization})
    assert_401(response)


async def test_refused_bearer_tokens_say_why() -> None:
    async with protected(RSA, EC) as (client, _):
        cases = {
            "expired": mint(RSA, claims(roles=["r"], lifetime=-60)),
            "not valid yet": mint(RSA, claims(roles=["r"], nbf=int(time.time()) + 3600)),
            "audience": mint(RSA, claims(roles=["r"], audience="account")),
            "issuer": mint(RSA, claims(roles=["r"], issuer="https://evil.test/realms/r")),
            "algorithm": unsigned(RSA, claims(roles=["r"])),
            "algorithm ": hs256_with_public_key(RSA, claims(roles=["r"])),
            "signature": mint(rsa_key(RSA.kid), claims(roles=["r"])),
        }
        for reason, token in cases.items():
            response = await client.get("/aets/A/studies", headers=bearer(token))
            assert_401(response)
            assert reason.strip() in response.json()["error"], response.json()
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# -- who gets in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
async def test_bearer_tokens_from_the_provider(key: SigningKey) -> None:
    async with protected(RSA, EC) as (client, jwks):
        token = mint(key, claims(roles=["r"]))
        search = await client.get("/aets/A/studies", headers=bearer(token))
        retrieve = await client.get(f"/aets/A/studies/{STUDY}", headers=bearer(token))
        store = await client.post("/aets/A/studies", headers=bearer(token))
        other = await client.get("/aets/B/studies", headers=bearer(token))
    assert search.status_code == 200
    assert retrieve.status_code == 200
    assert store.status_code == 403
    assert other.status_code == 403
    assert other.json() == {
        "error": "the caller's roles do not allow search on the AE 'B'",
        "status": 403,
    }
    assert jwks.requests == 1  # fetched once, then cached


async def test_static_token_and_basic_user() -> None:
    async with protected(RSA) as (client, _):
        token = await client.get("/aets/A/studies", headers=bearer(TOKEN))
        token_store = await client.post("/aets/A/studies", headers=bearer(TOKEN))
        user = await client.get("/aets/A/studies", headers=basic("peer", PASSWORD))
        user_store = await client.post("/aets/A/studies", headers=basic("peer", PASSWORD))
    assert token.status_code == 200
    assert token_store.status_code == 403  # "ai" is a reader only
    assert user.status_code == 200
    assert user_store.status_code not in (401, 403)  # "peer" is a writer: the body is wrong


async def test_roles_from_another_claim() -> None:
    async with protected(RSA, roles_claim="resource_access.rst.roles") as (client, _):
        realm_role = mint(RSA, claims(roles=["r"]))
        client_role = mint(RSA, claims(resource_access={"rst": {"roles": ["r"]}}))
        refused = await client.get("/aets/A/studies", headers=bearer(realm_role))
        allowed = await client.get("/aets/A/studies", headers=bearer(client_role))
    assert refused.status_code == 403
    assert allowed.status_code == 200


# -- grants on every route family ------------------------------------------------------------------


async def test_each_route_needs_its_action_on_its_ae() -> None:
    async with protected(RSA) as (client, _):
        tokens: dict[str, str] = {role: mint(RSA, claims(roles=[role])) for role in ACTIONS}
        for method, path, action in ROUTES:
            for role, token in tokens.items():
                response = await call(client, method, f"/aets/A{path}", bearer(token))
                if role == action:
                    assert response.status_code not in (401, 403), (method, path, response.text)
                else:
                    assert response.status_code == 403, (method, path, role, response.text)
                    assert action in response.json()["error"]
            # the same route on an archive the role has no grant for
            response = await call(client, method, f"/aets/B{path}", bearer(tokens[action]))
            assert response.status_code == 403, (method, path)


async def test_unknown_ae_is_404_only_to_whom_a_grant_lets_in() -> None:
    async with protected(RSA) as (client, _):
        admin = bearer(mint(RSA, claims(roles=["admin"])))
        reader = bearer(mint(RSA, claims(roles=["r"])))
        assert (await client.get("/aets/NOPE/studies", headers=admin)).status_code == 404
        assert (await client.get("/aets/NOPE/studies", headers=reader)).status_code == 403
        assert (await client.get("/no/such/route", headers=reader)).status_code == 404


async def test_aets_lists_only_what_the_caller_may_use() -> None:
    async with protected(RSA) as (client, _):

        async def listed(roles: list[str]) -> list[str]:
            response = await client.get("/aets", headers=bearer(mint(RSA, claims(roles=roles))))
            assert response.status_code == 200
            return [ae["aet"] for ae in response.json()]

        assert await listed(["r"]) == ["A"]
        assert await listed(["store"]) == ["A"]
        assert await listed(["b-searcher"]) == ["B"]
        assert await listed(["admin"]) == ["A", "B"]
        assert await listed(["r", "b-searcher"]) == ["A", "B"]
        assert await listed([]) == []


async def test_without_auth_everything_is_open_and_anonymous_too() -> None:
    for auth in (None, AuthConfig(anonymous=True)):
        async with gateway(auth) as client:
            assert (await client.get("/aets/A/studies")).status_code == 200
            assert [ae["aet"] for ae in (await client.get("/aets")).json()] == ["A", "B"]


async def test_open_endpoints() -> None:
    async with protected(RSA) as (client, _):  # by default only /livez, which tells nothing
        assert (await client.get("/livez")).status_code == 200
        assert_401(await client.get("/readyz"))  # it names the archives
        assert_401(await client.get("/metrics"))
        assert_401(await client.get("/aets/A"))
        admin = bearer(mint(RSA, claims(roles=["admin"])))
        assert (await client.get("/metrics", headers=admin)).status_code == 200
    async with protected(RSA, open_endpoints=["echo", "readyz", "metrics"]) as (client, _):
        assert (await client.get("/aets/A")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # nobody runs its checks here
        assert (await client.get("/metrics")).status_code == 200
        assert_401(await client.get("/aets/A/studies"))


def test_every_route_has_an_entry_in_the_table() -> None:
    config = Config(auth=AuthConfig(anonymous=True))
    app = create_app(config, {})
    missing = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and requirement_of(rule.endpoint, rule.rule) is None
    ]
    assert missing == []
    assert requirement_of("anything", "/livez") == "livez"
    assert requirement_of("anything", "/readyz") == "readyz"
    assert requirement_of("anything", "/metrics") == "metrics"


# -- CORS ------------------------------------------------------------------------------------------


async def test_cors_preflight_needs_no_credentials() -> None:
    async with protected(RSA) as (client, _):
        preflight = await client.options(
            "/aets/A/studies",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        refused = await client.get("/aets/A/studies", headers={"Origin": ORIGIN})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    # a browser client may read why it was refused
    assert_401(refused)
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]


# -- the provider's keys over HTTP -----------------------------------------------------------------


async def test_key_rotation_fetches_the_new_key() -> None:
    new = ec_key("rotated")
    async with protected(RSA, jwks_refresh_interval=0) as (client, jwks):
        assert (
            await client.get("/aets/A/studies", headers=bearer(mint(RSA, claims(roles=["r"]))))
        ).status_code == 200
        jwks.publish(RSA, new)
        response = await client.get(
            "/aets/A/studies", headers=bearer(mint(new, claims(roles=["r"])))
        )
        assert response.status_code == 200
        assert jwks.requests == 2


async def test_unknown_kids_do_not_hammer_the_provider() -> None:
    async with protected(RSA) as (client, jwks):  # jwks_refresh_interval = 300
        assert (
            await client.get("/aets/A/studies", headers=bearer(mint(RSA, claims(roles=["r"]))))
        ).status_code == 200
        jwks.publish(RSA, EC)  # rotated at the provider, but rst fetched just now
        for n in range(5):
            made_up = mint(rsa_key(f"made-up-{n}"), claims(roles=["r"]))
            assert_401(await client.get("/aets/A/studies", headers=bearer(made_up)))
        assert_401(
            await client.get("/aets/A/studies", headers=bearer(mint(EC, claims(roles=["r"]))))
        )
        assert jwks.requests == 1


async def test_a_provider_that_is_down_is_503() -> None:
    async with protected(RSA) as (client, jwks):
        jwks.status = 500
        response = await client.get("/aets/A/studies", headers=bearer(mint(RSA, claims())))
        # static tokens and Basic users do not need the provider
        token = await client.get("/aets/A/studies", headers=bearer(TOKEN))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "300"
    assert jwks.url not in response.text
    assert token.status_code == 200


# -- secrets stay out of the log -------------------------------------------------------------------


async def test_secrets_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with protected(RSA) as (client, _):
        jwt = mint(RSA, claims(roles=["r"]))
        for headers in (bearer(TOKEN), basic("peer", PASSWORD), bearer(jwt)):
            assert (await client.get("/aets/A/studies", headers=headers)).status_code == 200
        await client.get("/aets/A/studies", headers=bearer(TOKEN + "wrong"))
        await client.get("/aets/A/studies", headers=basic("peer", PASSWORD + "wrong"))
    logged = caplog.text
    assert caplog.records  # the log was captured at all
    for secret in (TOKEN, PASSWORD, jwt, jwt.split(".")[2]):
        assert secret not in logged


async def test_a_stranger_s_upload_is_refused_before_its_body_matters() -> None:
    async with protected(RSA) as (client, _):
        with trio.fail_after(10):
            refused = await client.post(
                "/aets/A/studies",
                content=b"x" * (8 << 20),
                headers={"Content-Type": 'multipart/related; type="application/dicom"'},
            )
            assert_401(refused)
            # and the gateway goes on serving
            assert (await client.get("/aets/A/studies", headers=bearer(TOKEN))).status_code == 200
