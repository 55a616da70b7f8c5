"""``allotment api-keys create|list|revoke`` on both engines (in process, real databases)."""

from __future__ import annotations

import pytest

from allotment.cli import is_loopback, main
from allotment.config import Settings
from allotment.container import build_container
from allotment.domain.api_keys import looks_like_secret


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "api-keys", "create", "--name", "ci", "--scope", "ingest",
                       "--db", db_url)  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    secret = lines[-1]
    assert looks_like_secret(secret)  # alone on the last line
    assert secret not in "\n".join(lines[:-1])
    assert "ci" in lines[0]
    assert "ingest" in lines[0]
    assert secret[:12] in lines[0]
    code, out, _ = run(capsys, "api-keys", "list", "--db", db_url)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "SCOPE", "PREFIX", "CREATED", "LAST", "USED", "REVOKED"]
    name, scope, prefix, created, last_used, revoked = row.split()
    assert (name, scope, prefix, last_used, revoked) == ("ci", "ingest", secret[:12], "-", "-")
    assert created.endswith("Z")
    assert secret not in out
    code, out, _ = run(capsys, "api-keys", "revoke", "ci", "--db", db_url)
    assert code == 0
    assert "revoked API key 'ci'" in out
    code, out, _ = run(capsys, "api-keys", "list", "--db", db_url)
    assert out.splitlines()[1].split()[-1].endswith("Z")  # revoked at
    # the CLI's changes are in the audit trail, secret-free
    c = build_container(Settings(db_url=db_url))
    try:
        events = c.audit.list(10, None)
    finally:
        c.close()
    assert [(e.actor, e.route) for e in events] == [("cli", "api-keys revoke"),
                                                     ("cli", "api-keys create")]  # fmt: skip
    assert all(secret not in (e.after_json or "") for e in events)
    assert events[0].before_json is not None
    assert '"revoked_at":null' in events[0].before_json


def test_errors_exit_2_and_say_why(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(capsys, "api-keys", "create", "--name", "a", "--scope", "admin", "--db", db_url)[0] == 0
    )
    code, _, err = run(
        capsys, "api-keys", "create", "--name", "a", "--scope", "read", "--db", db_url
    )
    assert code == 2
    assert "a live API key named 'a' exists" in err
    code, _, err = run(capsys, "api-keys", "create", "--name", "Bad Name", "--scope", "read",
                       "--db", db_url)  # fmt: skip
    assert code == 2
    assert "name: must match" in err
    code, _, err = run(capsys, "api-keys", "revoke", "nobody", "--db", db_url)
    assert code == 2
    assert "no live API key named 'nobody'" in err
    with pytest.raises(SystemExit) as exit_:
        main(["api-keys", "create", "--name", "b", "--scope", "root", "--db", db_url])
    assert exit_.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "localhost.example.com"])
def test_serve_without_keys_refuses_every_address_but_loopback(
    db_url: str, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    code, _, err = run(capsys, "serve", "--db", db_url, "--host", host, "--port", "1")
    assert code == 2  # before it binds anything
    assert f"refusing to listen on {host} without API keys" in err
    assert "allotment api-keys create --name admin --scope admin" in err
    assert "--insecure-no-auth" in err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("LocalHost", True), ("0.0.0.0", False), ("::", False),
     ("10.0.0.1", False), ("localhost.example.com", False), ("", False)],
)  # fmt: skip
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
