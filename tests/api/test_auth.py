"""API keys over HTTP against real server processes, on every backend: the key lifecycle under
/v1/api-keys, the audit trail, the fast paths behind the guard, auth turning on with the first
key, and the start-up rules (loopback only without keys — the default bind address, and a
public one refused from the command line, the environment or the config — --insecure-no-auth)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain import limits
from allotment.domain.api_keys import DISPLAY_CHARS, looks_like_secret
from allotment.http.app import create_app
from allotment.http.routes.entitlements import value_body
from allotment.storage.database import open_database
from tests.api.auth_support import bearer, check_refused, cli, create_key, start_with_keys
from tests.support import ServerProcess, free_port, unique


@pytest.fixture(scope="module")
def keyed(new_db_url: Callable[[], str]) -> Iterator[tuple[ServerProcess, str]]:
    """A server with authentication on and its admin key."""
    server, keys = start_with_keys(new_db_url(), {"root": "admin"})
    try:
        yield server, keys["root"]
    finally:
        server.stop()


def _ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def _audit(c: httpx.Client, admin: str, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = _ok(c.get("/v1/audit-events", params=params, headers=bearer(admin)))
    return out


# ---------------------------------------------------------------- keys over HTTP


def test_key_lifecycle(keyed: tuple[ServerProcess, str]) -> None:
    server, admin = keyed
    name = unique("k").replace("_", "-")
    with server.client() as c:
        made = _ok(c.post("/v1/api-keys", json={"name": name, "scope": "read"},
                          headers=bearer(admin)), 201)  # fmt: skip
        secret = made.pop("secret")
        assert looks_like_secret(secret)
        assert secret.startswith(made["prefix"])
        assert made["scope"] == "read"
        assert made["last_used_at"] is None
        assert made["revoked_at"] is None
        assert made["object_type"] == "api_key"
        listed = _ok(c.get("/v1/api-keys", headers=bearer(admin)))
        assert secret not in json.dumps(listed)
        [row] = [k for k in listed["data"] if k["id"] == made["id"]]
        assert row == made
        # works at once, with either header; last use recorded
        _ok(c.get("/api/v1/meters", headers=bearer(secret)))
        _ok(c.get("/api/v1/meters", headers={"X-API-KEY": secret}))
        shown = _ok(c.get(f"/v1/api-keys/{name}", headers=bearer(admin)))
        assert shown["last_used_at"] is not None
        # a read key may not manage keys, nor change anything
        check_refused(c.get("/v1/api-keys", headers=bearer(secret)), 403, ["admin"])
        check_refused(c.post("/api/v1/features", json={}, headers=bearer(secret)), 403, ["admin"])
        # one live key per name; bad input names the field
        r = c.post("/v1/api-keys", json={"name": name, "scope": "read"}, headers=bearer(admin))
        assert r.status_code == 409
        assert "name" in r.json()["detail"]
        r = c.post("/v1/api-keys", json={"name": "x", "scope": "root"}, headers=bearer(admin))
        assert r.status_code == 400
        assert "scope" in r.json()["detail"]
        r = c.post("/v1/api-keys", json={"name": "No Caps", "scope": "read"}, headers=bearer(admin))
        assert r.status_code == 400
        assert "name" in r.json()["detail"]
        # revoked: refused at once, the name is free again
        revoked = _ok(c.delete(f"/v1/api-keys/{name}", headers=bearer(admin)))
        assert revoked["revoked_at"] is not None
        check_refused(c.get("/api/v1/meters", headers=bearer(secret)), 401, ["admin", "read"])
        assert c.delete(f"/v1/api-keys/{name}", headers=bearer(admin)).status_code == 404
        again = _ok(c.post("/v1/api-keys", json={"name": name, "scope": "ingest"},
                           headers=bearer(admin)), 201)  # fmt: skip
        assert again["id"] != made["id"]
        check_refused(c.get("/api/v1/meters", headers=bearer(secret)), 401, ["admin", "read"])


def test_list_of_keys_pages(keyed: tuple[ServerProcess, str]) -> None:
    server, admin = keyed
    with server.client() as c:
        for _ in range(3):
            body = {"name": unique("p").replace("_", "-"), "scope": "ingest"}
            _ok(c.post("/v1/api-keys", json=body, headers=bearer(admin)), 201)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = _ok(c.get("/v1/api-keys", params=params, headers=bearer(admin)))
            assert len(page["data"]) <= 2
            seen += [k["id"] for k in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(seen)
        assert len(seen) == len(set(seen)) >= 4
        limit = limits.API_KEYS_LIST_LIMIT_MAX
        _ok(c.get("/v1/api-keys", params={"limit": limit}, headers=bearer(admin)))
        r = c.get("/v1/api-keys", params={"limit": limit + 1}, headers=bearer(admin))
        assert r.status_code == 400
        assert "limit" in r.json()["detail"]


# ---------------------------------------------------------------- audit trail


def test_admin_changes_are_audited_with_before_and_after(keyed: tuple[ServerProcess, str]) -> None:
    server, admin = keyed
    key = unique("f")
    with server.client() as c:
        created = _ok(c.post("/api/v1/features", json={"key": key, "name": "F"},
                             headers=bearer(admin)), 201)  # fmt: skip
        r = c.post("/api/v1/features", json={"key": key, "name": "F"}, headers=bearer(admin))
        assert r.status_code == 409  # failed: changed nothing, not audited
        _ok(c.get(f"/api/v1/features/{key}", headers=bearer(admin)))  # a read: not audited
        r = c.delete(f"/api/v1/features/{key}", headers=bearer(admin))
        assert r.status_code == 204
        newest = _audit(c, admin, limit=2)["data"]
        delete, create = newest
        assert delete["method"] == "DELETE"
        assert delete["actor"] == "root"
        assert delete["route"] == "/api/v1/features/{featureId}"
        assert delete["resource"] == f"/api/v1/features/{key}"
        assert delete["status"] == 204
        assert delete["before"] == created
        assert delete["after"] is None
        assert delete["api_key_id"]
        assert create["method"] == "POST"
        assert create["route"] == "/api/v1/features"
        assert create["before"] is None
        assert create["after"] == created
        assert datetime.fromisoformat(create["at"]) <= datetime.fromisoformat(delete["at"])
        # a key's secret never enters the trail
        body = {"name": unique("a").replace("_", "-"), "scope": "read"}
        made = _ok(c.post("/v1/api-keys", json=body, headers=bearer(admin)), 201)
        [event] = _audit(c, admin, limit=1)["data"]
        assert event["route"] == "/v1/api-keys"
        assert event["after"]["secret"] == "[redacted]"
        assert made["secret"] not in json.dumps(_audit(c, admin, limit=1000))
        # paged, newest first
        first = _audit(c, admin, limit=1)
        second = _audit(c, admin, limit=1, cursor=first["next_cursor"])
        assert second["data"][0]["id"] < first["data"][0]["id"]
        _audit(c, admin, limit=limits.AUDIT_LIST_LIMIT_MAX)
        r = c.get("/v1/audit-events", params={"limit": limits.AUDIT_LIST_LIMIT_MAX + 1},
                  headers=bearer(admin))  # fmt: skip
        assert r.status_code == 400
        assert "limit" in r.json()["detail"]
        reader = made["secret"]
        check_refused(c.get("/v1/audit-events", headers=bearer(reader)), 403, ["admin"])


def test_webhook_signing_secrets_stay_with_admin_keys(keyed: tuple[ServerProcess, str]) -> None:
    """A channel's answer carries its signing secret: reading channels needs an admin key
    (a read key still reads rules and events), and the audit trail redacts the secret."""
    server, admin = keyed
    with server.client() as c:
        body = {"name": unique("r").replace("_", "-"), "scope": "read"}
        reader = _ok(c.post("/v1/api-keys", json=body, headers=bearer(admin)), 201)["secret"]
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        made = _ok(c.post("/api/v1/notification/channels", headers=bearer(admin), json={
            "type": "WEBHOOK", "name": "hook", "url": "https://93.184.216.34/hook",
            "signingSecret": secret, "disabled": True}), 201)  # fmt: skip
        [event] = _audit(c, admin, limit=1)["data"]
        assert event["route"] == "/api/v1/notification/channels"
        assert secret not in json.dumps(event)
        for path in (
            "/api/v1/notification/channels",
            f"/api/v1/notification/channels/{made['id']}",
        ):
            check_refused(c.get(path, headers=bearer(reader)), 403, ["admin"])
        assert c.get(f"/api/v1/notification/channels/{made['id']}",
                     headers=bearer(admin)).json()["signingSecret"] == secret  # fmt: skip
        for path in ("/api/v1/notification/rules", "/api/v1/notification/events"):
            assert c.get(path, headers=bearer(reader)).status_code == 200


# ---------------------------------------------------------------- the fast paths


def test_the_fast_paths_are_behind_the_guard(db_url: str) -> None:
    """In process, so the value cache is known to answer: a warm cache hit and a valid small
    event batch (what the fast paths serve without routing) are still refused without a key."""
    c = Container(Settings(db_url=db_url), open_database(db_url),
                  FrozenClock(datetime(2024, 1, 1, 1, tzinfo=UTC)))  # fmt: skip
    c.start()
    try:
        _, admin = c.api_keys.create("root", "admin")
        _, runtime = c.api_keys.create("app", "runtime")
        _, ingest = c.api_keys.create("pipe", "ingest")
        c.meters.sync_config([{"slug": "m", "eventType": "e", "aggregation": "COUNT"}])
        app = create_app(c)

        async def run() -> dict[str, int]:
            transport = httpx.ASGITransport(app=app)
            out: dict[str, int] = {}
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as h:
                r = await h.post("/api/v1/features", json={"key": "f", "name": "f",
                                 "meterSlug": "m"}, headers=bearer(admin))  # fmt: skip
                assert r.status_code == 201, r.text
                path = "/api/v1/subjects/s/entitlements"
                body = {"type": "metered", "featureKey": "f", "usagePeriod": {"interval": "DAY"}}
                r = await h.post(path, json=body, headers=bearer(admin))
                assert r.status_code == 201, r.text
                value = f"{path}/f/value"
                for _ in range(2):  # the second is a cache hit where the cache serves reads
                    out["runtime"] = (await h.get(value, headers=bearer(runtime))).status_code
                hit = c.entitlements.cached_value_body("s", "f", None, value_body)
                assert hit is not None or not c.entitlements.inline_reads
                out["hit, no key"] = (await h.get(value)).status_code
                out["hit, ingest key"] = (await h.get(value, headers=bearer(ingest))).status_code
                event = {"specversion": "1.0", "id": "e1", "source": "t", "type": "e",
                         "subject": "s"}  # fmt: skip
                ce = {"content-type": "application/cloudevents+json"}
                for name, headers in [("ingest, no key", ce), ("ingest, runtime", {**ce,
                                      **bearer(runtime)})]:  # fmt: skip
                    r = await h.post("/api/v1/events", content=json.dumps(event), headers=headers)
                    out[name] = r.status_code
            return out

        got = asyncio.run(run())
        assert got == {"runtime": 200, "hit, no key": 401, "hit, ingest key": 403,
                       "ingest, no key": 401, "ingest, runtime": 204}  # fmt: skip
        with c.db.read() as tx:
            assert tx.execute("SELECT id FROM events") == [("e1",)]
    finally:
        c.close()


# ---------------------------------------------------------------- turning on, starting up


def test_auth_turns_on_with_the_first_key(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(env={"ALLOTMENT_AUTH_CACHE_SECONDS": "0"})
    with server.client() as c:
        _ok(c.get("/api/v1/meters"))  # no key exists: loopback, unauthenticated
        secret = create_key(server.db_url, "first", "read")  # the CLI, on the same database
        check_refused(c.get("/api/v1/meters"), 401, ["admin", "read"])
        _ok(c.get("/api/v1/meters", headers=bearer(secret)))
        assert cli("api-keys", "revoke", "first", "--db", server.db_url).returncode == 0
        # every key revoked: still on (nobody gets in until a new key is made)
        check_refused(c.get("/api/v1/meters"), 401, ["admin", "read"])
        check_refused(c.get("/api/v1/meters", headers=bearer(secret)), 401, ["admin", "read"])
        _ok(c.get("/healthz"))


def test_the_first_key_made_over_http_turns_auth_on_at_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    """The server caches "no key exists" for 60 s here (the most allowed); the key it creates
    itself turns authentication on with its very next request, not when that answer expires."""
    env = {"ALLOTMENT_AUTH_CACHE_SECONDS": str(limits.AUTH_CACHE_SECONDS_MAX)}
    server = make_server(env=env)
    with server.client() as c:
        for _ in range(3):  # no key: open on loopback, and now known so for 60 s
            _ok(c.get("/api/v1/meters"))
        made = _ok(c.post("/v1/api-keys", json={"name": "first", "scope": "read"}), 201)
        check_refused(c.get("/api/v1/meters"), 401, ["admin", "read"])
        check_refused(c.get("/v1/api-keys"), 401, ["admin"])
        _ok(c.get("/api/v1/meters", headers=bearer(str(made["secret"]))))


def test_required_without_keys_refuses_all_but_the_public_routes(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(env={"ALLOTMENT_AUTH": "required"})
    with server.client() as c:
        _ok(c.get("/healthz"))
        _ok(c.get("/api/v1/openapi.json"))
        check_refused(c.get("/api/v1/meters"), 401, ["admin", "read"])
    assert "no API key exists" in server.logs()


def _serve(db_url: str, *args: str) -> tuple[int, str]:
    done = cli("serve", "--db", db_url, "--port", str(free_port()), *args)
    return done.returncode, done.stderr


def test_refuses_a_public_address_without_keys(db_url: str) -> None:
    code, err = _serve(db_url, "--host", "0.0.0.0")
    assert code == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in err
    assert "allotment api-keys create --name admin --scope admin" in err
    assert "--insecure-no-auth" in err


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses of the sockets listening on ``port`` (Linux's /proc/net/tcp*)."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.IPv6Address(words) if v6 else ipaddress.IPv4Address(words))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_without_keys_the_default_address_is_loopback_only(
    make_server: Callable[..., ServerProcess],
) -> None:
    """No ``--host``, no key: the server binds loopback, not every interface."""
    server = make_server()
    with server.client() as c:
        _ok(c.get("/api/v1/meters"))
    bound = _listening(server.port)
    assert bound, f"nothing listens on {server.port}"
    assert all(a.is_loopback for a in bound), bound


@pytest.mark.parametrize("where", ["env", "config"])
def test_a_public_address_from_the_environment_or_config_is_refused_too(
    db_url: str, tmp_path: Path, where: str
) -> None:
    if where == "env":
        done = cli("serve", "--db", db_url, "--port", str(free_port()),
                   env={"ALLOTMENT_HOST": "0.0.0.0"})  # fmt: skip
    else:
        config = tmp_path / "config.yaml"
        config.write_text("server:\n  host: 0.0.0.0\n")
        done = cli("serve", "--db", db_url, "--port", str(free_port()), "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on 0.0.0.0 without API keys" in done.stderr


def test_insecure_no_auth_serves_a_public_address_with_a_warning(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(extra_args=["--host", "0.0.0.0", "--insecure-no-auth"])
    with server.client() as c:
        _ok(c.get("/api/v1/meters"))
    assert "authentication is OFF" in server.logs()


def test_a_public_address_with_a_key_serves_with_auth_on(
    new_db_url: Callable[[], str], make_server: Callable[..., ServerProcess]
) -> None:
    db_url = new_db_url()
    secret = create_key(db_url, "root", "admin")
    server = make_server(db_url=db_url, extra_args=["--host", "0.0.0.0"])
    with server.client() as c:
        check_refused(c.get("/api/v1/meters"), 401, ["admin", "read"])
        _ok(c.get("/api/v1/meters", headers=bearer(secret)))


def test_the_served_openapi_document_declares_both_key_schemes(client: httpx.Client) -> None:
    doc = _ok(client.get("/api/v1/openapi.json"))
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"] == {"type": "http", "scheme": "bearer"} | {
        k: v for k, v in schemes["ApiKeyBearer"].items() if k == "description"
    }
    assert schemes["ApiKeyHeader"]["type"] == "apiKey"
    assert schemes["ApiKeyHeader"]["in"] == "header"
    assert schemes["ApiKeyHeader"]["name"] == "X-API-KEY"
    assert {"ApiKeyBearer": []} in doc["security"]
    assert {"ApiKeyHeader": []} in doc["security"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    for path in ("/v1/api-keys", "/v1/api-keys/{name}", "/v1/audit-events"):
        assert path in doc["paths"]
    # what each operation needs is the route policy's
    paths = doc["paths"]
    value = "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/value"
    assert paths[value]["get"]["x-required-scopes"] == ["admin", "read", "runtime"]
    assert paths["/api/v1/events"]["post"]["x-required-scopes"] == ["admin", "ingest", "runtime"]
    assert paths["/api/v1/features"]["post"]["x-required-scopes"] == ["admin"]
    assert "415" in paths["/api/v1/features"]["post"]["responses"]
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters" or op.get("security") is not None:
                continue  # public, or the portal query's own token
            assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_revocation_on_one_process_is_immediate_there(keyed: tuple[ServerProcess, str]) -> None:
    server, admin = keyed
    name = unique("r").replace("_", "-")
    with server.client() as c:
        made = _ok(c.post("/v1/api-keys", json={"name": name, "scope": "runtime"},
                          headers=bearer(admin)), 201)  # fmt: skip
        headers = bearer(made["secret"])
        for _ in range(3):  # in the lookup cache now
            assert c.get("/api/v1/meters/x/query", headers=headers).status_code == 403
        _ok(c.delete(f"/v1/api-keys/{name}", headers=bearer(admin)))
        r = c.post("/api/v1/events", json={}, headers=headers)  # the very next request
        check_refused(r, 401, ["admin", "ingest", "runtime"])


def test_without_keys_nothing_is_audited(client: httpx.Client) -> None:
    key = unique("f")
    assert client.post("/api/v1/features", json={"key": key, "name": "x"}).status_code == 201
    assert client.delete(f"/api/v1/features/{key}").status_code == 204
    events = _ok(client.get("/v1/audit-events", params={"limit": 1000}))["data"]
    assert not [e for e in events if key in e["resource"] or key in json.dumps(e["after"])]


def test_with_auth_off_changes_are_audited_as_such(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(env={"ALLOTMENT_AUTH": "off"})
    key = unique("f")
    with server.client() as c:
        assert c.post("/api/v1/features", json={"key": key, "name": "x"}).status_code == 201
        [event] = _ok(c.get("/v1/audit-events", params={"limit": 1}))["data"]
    assert event["actor"] == "(auth off)"
    assert event["api_key_id"] is None
    assert event["after"]["key"] == key


def test_secrets_are_never_logged_nor_stored(db_url: str) -> None:
    """A key's secret appears once, where it is handed out (the CLI's last line, the create
    answer), and nowhere else: not in the server's log at debug level with the access log on
    (good, unknown, revoked and wrong-scope keys on both headers, bodies the guard or the route
    refuses), not in the CLI's stderr, not in the audit trail, not in any database column."""
    done = cli("api-keys", "create", "--name", "root", "--scope", "admin", "--db", db_url)
    assert done.returncode == 0, done.stderr
    admin = done.stdout.strip().splitlines()[-1]
    assert done.stdout.count(admin) == 1
    assert admin not in done.stderr
    server = ServerProcess(db_url, extra_args=["--log-level", "debug", "--access-log"]).start()
    handed_out = [admin]
    try:
        with server.client() as c:
            made = _ok(c.post("/v1/api-keys", json={"name": "app", "scope": "read"},
                              headers=bearer(admin)), 201)  # fmt: skip
            reader = made["secret"]
            handed_out.append(reader)
            for headers in (bearer(reader), {"X-API-KEY": reader}):
                _ok(c.get("/api/v1/meters", headers=headers))
                check_refused(c.post("/api/v1/features", json={}, headers=headers), 403, ["admin"])
                r = c.post("/api/v1/meters/x/query", content=b"{", headers=headers)
                assert r.status_code in (400, 404, 415), r.text
            unknown = "alm_" + secrets.token_urlsafe(32)
            handed_out.append(unknown)
            check_refused(c.get("/api/v1/meters", headers=bearer(unknown)), 401, ["admin", "read"])
            _ok(c.delete("/v1/api-keys/app", headers=bearer(admin)))
            check_refused(c.get("/api/v1/meters", headers=bearer(reader)), 401, ["admin", "read"])
            check_refused(c.get("/api/v1/meters", headers={"X-API-KEY": reader}), 401,
                          ["admin", "read"])  # fmt: skip
            trail = json.dumps(_audit(c, admin, limit=1000))
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "GET /api/v1/meters" in log  # the access log was on
    db = open_database(db_url)
    try:
        with db.read() as tx:
            stored = [str(v) for t in ("api_keys", "audit_events")
                      for row in tx.execute(f"SELECT * FROM {t}") for v in row]  # fmt: skip
    finally:
        db.close()
    assert len(stored) > 10
    for secret in handed_out:
        tail = secret[DISPLAY_CHARS:]  # beyond the prefix a key's listing shows
        for where, text in (("log", log), ("audit trail", trail), ("database", "\n".join(stored))):
            assert tail not in text, f"a secret's tail is in the {where}"
