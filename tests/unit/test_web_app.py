"""The dashboard's server side without a browser: the password (scrypt hash, login, Basic),
fail-closed access, the JSON views over a database written by the real store, and the vendored
chart library served from the package.  (The pages in a real browser: tests/integration/test_web.py.)"""

from __future__ import annotations

import time

import pytest

from starlette.testclient import TestClient  # noqa: E402  (python3-starlette, python3-httpx)

from nettrust_core.agent.store import StatsStore  # noqa: E402
from nettrust_core.agent.web.app import HEADERS, STATIC, create_app  # noqa: E402
from nettrust_core.agent.web.auth import Sessions, hash_password, verify_password  # noqa: E402
from nettrust_core.config import parse_config  # noqa: E402

HASH = hash_password("correct horse")


@pytest.fixture
def db(tmp_path):
    store = StatsStore(str(tmp_path / "s.db"))
    store.open()
    now = time.time()
    store.put("query", {"ts": now - 5, "client": "10.0.0.2", "qname": "www.example.com",
                        "qtype": 1, "rcode": 0, "outcome": "granted", "reason": "allowed",
                        "source": "resolved", "chain": ["www.example.com"],
                        "addresses": ["198.51.100.1"], "ttl": 300})
    store.put("grant", {"ts": now - 5, "client": "10.0.0.2", "qname": "www.example.com",
                        "address": "198.51.100.1", "timeout": 310})
    store.put("event", {"ts": now - 4, "kind": "unauthorized", "destination": "203.0.113.7",
                        "port": 22, "protocol": "tcp", "hook": "output", "verdict": "would refuse"})
    store.flush()
    return store.path


def test_password_hash_round_trip_and_config_acceptance():
    assert verify_password("correct horse", HASH) and not verify_password("wrong", HASH)
    assert not verify_password("x", "garbage")
    parse_config(f'[web]\nenabled = true\npassword_hash = "{HASH}"\n', "t.toml")


def test_sessions_expire_and_cannot_be_forged():
    now = [1000.0]
    s = Sessions(lifetime=60, clock=lambda: now[0])
    token = s.issue()
    forged = token[:-1] + ("1" if token[-1] == "0" else "0")      # one signature digit changed
    assert s.valid(token) and not s.valid(forged) and not s.valid("9999999999.x")
    assert not s.valid(str(int(token.split(".")[0]) + 3600) + "." + token.split(".")[1])
    assert not Sessions().valid(token)                  # another server's key
    now[0] += 61
    assert not s.valid(token)


def test_everything_but_login_needs_the_password(db):
    client = TestClient(create_app(db, password_hash=HASH))
    assert client.get("/api/log").status_code == 401
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
    assert client.get("/api/log", auth=("any", "wrong")).status_code == 401
    assert client.get("/api/log", auth=("any", "correct horse")).status_code == 200
    # no hash configured: nobody gets in (fail closed)
    closed = TestClient(create_app(db, password_hash=None))
    assert closed.get("/api/log", auth=("a", "")).status_code == 401
    assert closed.post("/login", data={"password": ""}, follow_redirects=False) \
        .headers["location"].startswith("/login?failed=1")


def test_login_sets_a_session_cookie_and_logout_clears_it(db):
    client = TestClient(create_app(db, password_hash=HASH))
    bad = client.post("/login", data={"password": "nope", "next": "/log"}, follow_redirects=False)
    assert bad.headers["location"] == "/login?failed=1&next=/log"
    good = client.post("/login", data={"password": "correct horse", "next": "/log"},
                       follow_redirects=False)
    assert good.headers["location"] == "/log"
    assert "httponly" in good.headers["set-cookie"].lower()
    assert "samesite=strict" in good.headers["set-cookie"].lower()
    assert client.get("/api/summary").json()["queries"] == 1
    # an open redirect is not possible through next=
    other = client.post("/login", data={"password": "correct horse", "next": "http://evil/"},
                        follow_redirects=False)
    assert other.headers["location"] == "/"


def test_json_views_over_the_recorded_rows(db):
    client = TestClient(create_app(db, password_hash=None, proxy=True))
    log = client.get("/api/log").json()
    assert [(r["name"], r["verdict"], r["grants"]) for r in log] == \
        [("www.example.com", "granted", ["198.51.100.1"])]
    assert client.get(f"/api/log?after={log[0]['id']}").json() == []      # following: nothing new
    assert client.get("/api/granted").json()[0]["address"] == "198.51.100.1"
    refused = client.get("/api/refused").json()
    assert refused[0]["destination"] == "203.0.113.7" and refused[0]["verdict"] == "would refuse"
    tl = client.get("/api/timeline?since=1h").json()
    assert sum(tl["queries"]) == 1 and sum(tl["grants"]) == 1 and sum(tl["refused"]) == 1
    assert client.get("/api/why?address=198.51.100.1").json()["open"] is True
    story = client.get("/api/why?address=203.0.113.7").json()
    assert story["grants"] == [] and [r["verdict"] for r in story["refused"]] == ["would refuse"]
    assert client.get("/api/why?address=nope").status_code == 400
    assert client.get("/api/log?limit=x").status_code == 400
    learn = client.get("/api/learn").json()
    assert learn["allow"][0]["pattern"] == "www.example.com" and "[policy]" in learn["toml"]
    assert learn["bare_addresses"][0]["address"] == "203.0.113.7"


def test_missing_database_is_a_clear_error(tmp_path):
    client = TestClient(create_app(str(tmp_path / "none.db"), password_hash=None, proxy=True))
    r = client.get("/api/summary")
    assert r.status_code == 503 and "no statistics database" in r.json()["error"]


def test_pages_and_the_vendored_chart_library_come_from_the_package(db):
    client = TestClient(create_app(db, password_hash=None, proxy=True))
    for path, page in (("/", "overview"), ("/log", "log"), ("/learn", "learn")):
        r = client.get(path)
        assert f'data-page="{page}"' in r.text and "http" not in r.text.split("<body")[0]
        for k, v in HEADERS.items():
            assert r.headers[k] == v
    js = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert js.status_code == 200 and "uPlot" in js.text
    assert (STATIC / "vendor/uplot/LICENSE").read_text().startswith("The MIT License")


def test_proxy_mode_must_listen_on_loopback_and_password_mode_needs_a_hash():
    from nettrust_core.errors import ConfigError
    with pytest.raises(ConfigError, match="loopback|127.0.0.1"):
        parse_config('[web]\nauth = "proxy"\nlisten = "0.0.0.0:9532"\n', "t.toml")
    with pytest.raises(ConfigError, match="hash-password"):
        parse_config("[web]\nenabled = true\n", "t.toml")
    parse_config('[web]\nenabled = true\nauth = "proxy"\n', "t.toml")


def test_hash_password_command_prints_a_hash_the_config_accepts_and_web_refuses_when_off(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "nettrust_core.cli", "web", "--hash-password"],
                         input="s3cret\n", capture_output=True, text=True, check=True).stdout.strip()
    assert verify_password("s3cret", out) and not verify_password("s3cre", out)
    parse_config(f'[web]\nenabled = true\npassword_hash = "{out}"\n', "t.toml")
    off = tmp_path / "off.toml"
    off.write_text("[web]\nenabled = false\n")
    r = subprocess.run([sys.executable, "-m", "nettrust_core.cli", "-c", str(off), "web"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "web.enabled" in r.stderr and "dashboard is off" in r.stderr
