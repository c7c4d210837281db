"""`nurture serve`: one-click unsubscribe (RFC 8058), the confirmation page, forged tokens, the
security headers, the closed-by-default dashboard, and the real server in a subprocess; on
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from itertools import product

import httpx
import pytest
from sqlalchemy import func, select

from nurture_mail.config import load_settings
from nurture_mail.database import open_database
from nurture_mail.importer import ImportReport, read_rows, records
from nurture_mail.models import Candidate, Enrollment, Event, Send, Suppression
from nurture_mail.store import pool
from nurture_mail.testing import FixedClock, SmtpSink
from nurture_mail.unsubscribe import make_token
from nurture_mail.web import create_app, mask_address

from .conftest import NOW
from .delivery_env import DeliveryEnv

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

SECRET = "web-test-secret"
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
PEOPLE = "email,first_name,status\ndana@example.com,Dana,rejected\nlee@example.com,Lee,rejected\n"
MON = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)  # a Monday


def make_settings(tmp_path, db_url, **env):
    base = {"NURTURE_UNSUBSCRIBE_SECRET": SECRET, "NURTURE_COMPANY_NAME": "Acme <b>&</b> Co"}
    return load_settings(env={**base, **env}, cwd=tmp_path, database_url=db_url)


def import_people(db, tmp_path, text=PEOPLE):
    path = tmp_path / "people.csv"
    path.write_text(text)
    report = ImportReport()
    recs = records(path, read_rows(path, {}), extra_tags=(), status=None, report=report)
    pool.import_records(db, str(path), recs, report, now=NOW)
    assert report.errors == []


def token_for(db, email, secret=SECRET):
    with db.sessions() as s:
        key = s.execute(select(Candidate.token_key).where(Candidate.email == email)).scalar_one()
    return make_token(secret, key)


def suppression(db, email):
    with db.sessions() as s:
        return pool.is_suppressed(s, db, email)


def count(db, model):
    with db.sessions() as s:
        return s.execute(select(func.count()).select_from(model)).scalar()


@pytest.fixture
def site(tmp_path, db_url):
    """(client, db, settings) with two imported candidates and no dashboard credentials."""
    db = open_database(db_url)
    import_people(db, tmp_path)
    settings = make_settings(tmp_path, db_url)
    with TestClient(create_app(settings, db, clock=FixedClock(NOW)), follow_redirects=False) as c:
        yield c, db, settings
    db.dispose()


def assert_security_headers(response):
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers


# --- the confirmation page ----------------------------------------------------------------------


def test_get_shows_a_confirmation_page_and_never_unsubscribes(site):
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    for _ in range(3):
        r = client.get(f"/u/{token}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert_security_headers(r)
    body = r.text
    assert "d***@example.com" in body
    assert "dana@example.com" not in body
    assert "Acme &lt;b&gt;&amp;&lt;/b&gt; Co" in body and "<b>" not in body
    form = re.search(r'<form method="post" action="([^"]+)">', body)
    assert form and form.group(1) == token  # relative: resolves to this same URL
    assert "<button" in body
    assert not re.search(r"(src|href)=", body)  # no external assets
    assert suppression(db, "dana@example.com") is None
    assert client.head(f"/u/{token}").status_code == 200
    assert suppression(db, "dana@example.com") is None


def test_mask_address():
    assert mask_address("dana@example.com") == "d***@example.com"
    assert mask_address("d@example.com") == "d***@example.com"


# --- one-click POST -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,content_type",
    [
        ("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
        ("", None),
        ("List-Unsubscribe=One-Click", "multipart/form-data; boundary=x"),  # odd clients too
    ],
    ids=["rfc8058", "empty", "odd-content-type"],
)
def test_post_unsubscribes(site, body, content_type):
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(f"/u/{token}", content=body, headers=headers)
    assert r.status_code == 200
    assert "location" not in r.headers
    assert_security_headers(r)
    assert "unsubscribed" in r.text
    assert suppression(db, "dana@example.com") == "unsubscribed"
    assert suppression(db, "lee@example.com") is None
    # Afterwards the page says so instead of offering the button again.
    page = client.get(f"/u/{token}")
    assert page.status_code == 200 and "<form" not in page.text and "unsubscribed" in page.text


def test_the_confirmation_form_submission_unsubscribes(site):
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    page = client.get(f"/u/{token}").text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page))
    action = re.search(r'action="([^"]+)"', page).group(1)
    target = httpx.URL(f"http://testserver/u/{token}").join(action)
    assert target.path == f"/u/{token}"
    r = client.post(str(target), data=fields)
    assert r.status_code == 200
    assert suppression(db, "dana@example.com") == "unsubscribed"



def test_a_trailing_slash_shows_the_same_page_and_unsubscribes_without_a_redirect(site):
    """A link pasted with a trailing slash (some mail clients add one) still works, in place."""
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    page = client.get(f"/u/{token}/", headers={"host": "evil.example"})
    assert page.status_code == 200 and "location" not in page.headers
    assert_security_headers(page)
    assert "d***@example.com" in page.text and "<button" in page.text
    assert suppression(db, "dana@example.com") is None  # a GET never unsubscribes
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page.text))
    action = re.search(r'action="([^"]+)"', page.text).group(1)
    target = httpx.URL(f"http://testserver/u/{token}/").join(action)
    assert target.path == f"/u/{token}/"  # the form posts back to the page it is on
    r = client.post(str(target), data=fields)
    assert (r.status_code, "location" in r.headers) == (200, False)
    assert "unsubscribed" in r.text
    assert suppression(db, "dana@example.com") == "unsubscribed"
    assert suppression(db, "lee@example.com") is None
    # One-click straight to the slashed URL (RFC 8058 clients POST the header's URL as is).
    lee = token_for(db, "lee@example.com")
    r = client.post(f"/u/{lee}/", content="List-Unsubscribe=One-Click")
    assert (r.status_code, "location" in r.headers) == (200, False)
    assert suppression(db, "lee@example.com") == "unsubscribed"


@pytest.mark.parametrize("path", ["/u/{token}/", "/u/{forged}/", "/u/{token}//", "/report/",
                                  "/healthz/", "/u/", "/u"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_path_redirects_anywhere_whatever_the_host_header(site, path, method):
    """Starlette's trailing-slash redirect built its Location from the Host header."""
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    url = path.format(token=token, forged=flip(token, 3))
    r = client.request(method, url, headers={"host": "evil.example"}, content="")
    assert r.status_code in (200, 403, 404, 405), r.status_code
    assert "location" not in r.headers
    assert "evil.example" not in r.text
    unsubscribed = (method, path) == ("POST", "/u/{token}/")
    assert suppression(db, "dana@example.com") == ("unsubscribed" if unsubscribed else None)

def test_repeat_post_is_a_no_op(site):
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    assert client.post(f"/u/{token}", content="List-Unsubscribe=One-Click").status_code == 200
    before = (count(db, Event), count(db, Suppression))
    for _ in range(3):
        r = client.post(f"/u/{token}", content="List-Unsubscribe=One-Click")
        assert r.status_code == 200 and "unsubscribed" in r.text
        assert "location" not in r.headers and "set-cookie" not in r.headers
    assert (count(db, Event), count(db, Suppression)) == before
    assert suppression(db, "dana@example.com") == "unsubscribed"


def test_concurrent_unsubscribes_suppress_once(tmp_path, db_url):
    db = open_database(db_url)
    try:
        import_people(db, tmp_path)
        with db.sessions() as s:
            key = s.execute(
                select(Candidate.token_key).where(Candidate.email == "dana@example.com")
            ).scalar_one()
        barrier = threading.Barrier(6)
        results, errors = [], []

        def hit():
            barrier.wait()
            try:
                results.append(pool.unsubscribe_token_key(db, key, NOW))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=hit) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert sorted(results) == [False] * 5 + [True]
        assert count(db, Suppression) == 1
    finally:
        db.dispose()


# --- forged tokens ------------------------------------------------------------------------------


def flip(token: str, at: int) -> str:
    ch = token[at]
    return token[:at] + ("B" if ch == "A" else "A") + token[at + 1 :]


def forged_tokens(db) -> dict[str, str]:
    genuine = token_for(db, "dana@example.com")
    raw = base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4))
    return {
        "flip-first": flip(genuine, 0),
        "flip-middle": flip(genuine, len(genuine) // 2),
        "flip-last": flip(genuine, len(genuine) - 1),
        "random": secrets.token_urlsafe(28),
        "other-secret": token_for(db, "dana@example.com", secret="another-secret"),
        "unknown-key": make_token(SECRET, secrets.token_hex(16)),
        "truncated": genuine[:-3],
        "tag-only": base64.urlsafe_b64encode(raw[-12:]).decode().rstrip("="),
        "too-long": genuine * 3,
        "not-base64": "!!!not*a*token!!!",
        "padded": genuine + "==",
        "database-id": "1",
    }


def test_forged_tokens_are_404_and_change_nothing(site):
    client, db, _ = site
    plain_404 = client.get("/no/such/page")
    assert plain_404.status_code == 404
    events = count(db, Event)
    for name, token in forged_tokens(db).items():
        for method, path in product(("GET", "POST"), (f"/u/{token}", f"/u/{token}/")):
            r = client.request(method, path, content="List-Unsubscribe=One-Click")
            assert r.status_code == 404, (name, method, path)
            # Exactly the router's own 404: nothing tells a forged token from a wrong path.
            assert r.text == plain_404.text, name
            assert_security_headers(r)
    assert count(db, Suppression) == 0
    assert count(db, Event) == events


def test_a_forgotten_candidates_token_is_404(site):
    client, db, _ = site
    token = token_for(db, "dana@example.com")
    pool.forget(db, "dana@example.com", NOW)
    assert client.get(f"/u/{token}").status_code == 404
    assert client.post(f"/u/{token}").status_code == 404
    assert suppression(db, "dana@example.com") == "forgotten"


# --- with a ledger: pending steps cancelled at once ---------------------------------------------


@pytest.fixture
def sink():
    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
def delivery(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink)
    env.import_csv(PEOPLE.replace("dana@", "ana@"), MON)
    yield env
    env.close()


def test_post_cancels_every_pending_step(delivery):
    report = delivery.tick(MON)
    assert report.enrolled == 2
    pending = [s for s in delivery.sends() if s.state == "scheduled"]
    assert len(pending) == 2
    db = delivery.db()
    try:
        settings = delivery.settings()
        client = TestClient(create_app(settings, db, clock=FixedClock(MON)), follow_redirects=False)
        token = token_for(db, "ana@example.com", secret="test-secret")
        assert client.get(f"/u/{token}").status_code == 200
        assert {s.state for s in delivery.sends()} == {"scheduled"}  # GET changed nothing
        r = client.post(f"/u/{token}", content="List-Unsubscribe=One-Click")
        assert r.status_code == 200
        with db.sessions() as s:
            ana = s.execute(select(Candidate.id).where(Candidate.email == "ana@example.com")).scalar()
            states = {(x.candidate_id == ana, x.state) for x in s.execute(select(Send)).scalars()}
            enrol = {
                (e.candidate_id == ana, e.state, e.exit_reason)
                for e in s.execute(select(Enrollment)).scalars()
            }
        assert states == {(True, "cancelled"), (False, "scheduled")}
        assert enrol == {(True, "exited", "unsubscribed"), (False, "active", None)}
        # The days go by: only the other candidate is ever mailed.
        t = MON
        while t < MON + timedelta(days=3):
            delivery.tick(t)
            t += timedelta(hours=2)
        assert {rcpt for rcpt, _ in delivery.received()} == {"lee@example.com"}
    finally:
        db.dispose()


def test_the_link_in_a_sent_email_unsubscribes(delivery):
    t = MON
    while not delivery.received() and t < MON + timedelta(days=4):
        delivery.tick(t)
        t += timedelta(hours=1)
    rcpt, message = delivery.received()[0]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = re.search(r"<(https://[^>]+)>", message["List-Unsubscribe"]).group(1)
    path = httpx.URL(https).path
    assert path.startswith("/u/")
    db = delivery.db()
    try:
        app = create_app(delivery.settings(), db, clock=FixedClock(t))
        with TestClient(app, follow_redirects=False) as client:
            r = client.post(path, content="List-Unsubscribe=One-Click")
        assert r.status_code == 200
        assert suppression(db, rcpt) == "unsubscribed"
    finally:
        db.dispose()


# --- health and dashboard -----------------------------------------------------------------------


def test_healthz(site):
    client, _, _ = site
    r = client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok")
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/report"])
def test_dashboard_is_closed_without_configured_credentials(site, path):
    client, _, _ = site
    r = client.get(path)
    assert r.status_code == 403
    assert "[serve] token" in r.text
    assert client.get(path, headers={"authorization": "Bearer anything"}).status_code == 403
    assert client.get(path + "?token=").status_code == 403


def dashboard_client(tmp_path, db_url, **env):
    db = open_database(db_url)
    import_people(db, tmp_path)
    settings = make_settings(tmp_path, db_url, **env)
    return TestClient(create_app(settings, db, clock=FixedClock(NOW))), db


@pytest.mark.parametrize("path", ["/", "/report"])
def test_dashboard_with_a_token(tmp_path, db_url, path):
    client, db = dashboard_client(tmp_path, db_url, NURTURE_SERVE_TOKEN="t0ken-value")
    try:
        r = client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert client.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path + "?token=t0ken-valu").status_code == 401
        assert client.get(path, headers={"authorization": "Basic dDA6a2Vu"}).status_code == 401
        ok = client.get(path, headers={"authorization": "Bearer t0ken-value"})
        assert ok.status_code == 200
        assert_security_headers(ok)
        assert "Campaigns: 0" in ok.text
        assert "Acme &lt;b&gt;" in ok.text
        assert client.get(path + "?token=t0ken-value").status_code == 200
    finally:
        db.dispose()


def test_dashboard_with_basic_auth(tmp_path, db_url):
    client, db = dashboard_client(
        tmp_path, db_url, NURTURE_SERVE_USERNAME="dana", NURTURE_SERVE_PASSWORD="pässword"
    )
    try:
        r = client.get("/")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert client.get("/", auth=("dana", "wrong")).status_code == 401
        assert client.get("/", auth=("lee", "pässword")).status_code == 401
        assert client.get("/", headers={"authorization": "Basic !!!"}).status_code == 401
        assert client.get("/", auth=("dana", "pässword")).status_code == 200
        assert client.get("/report", auth=("dana", "pässword")).status_code == 200
    finally:
        db.dispose()


def test_dashboard_counts_sends_by_state(delivery):
    delivery.tick(MON)
    db = delivery.db()
    try:
        settings = load_settings(
            delivery.root / "nurture.toml", env={"NURTURE_SERVE_TOKEN": "tk"}, database_url=delivery.db_url
        )
        client = TestClient(create_app(settings, db, clock=FixedClock(MON)))
        r = client.get("/", headers={"authorization": "Bearer tk"})
        assert r.status_code == 200
        assert "Campaigns: 1" in r.text
        assert "<tr><td>scheduled</td><td>2</td></tr>" in r.text
    finally:
        db.dispose()


# --- the real server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"nurture serve exited {proc.returncode}: {out}{err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nurture serve did not listen on port {port} in time")


def test_nurture_serve_in_a_subprocess(tmp_path, db_url):
    db = open_database(db_url)
    try:
        import_people(db, tmp_path)
        token = token_for(db, "dana@example.com")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
        env["NURTURE_UNSUBSCRIBE_SECRET"] = SECRET
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nurture_mail", "--database", db_url, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_port(proc, port, time.monotonic() + 30)
            base = f"http://127.0.0.1:{port}"
            r = httpx.post(
                f"{base}/u/{token}",
                content="List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
                timeout=10,
            )
            assert r.status_code == 200 and "unsubscribed" in r.text
            assert "set-cookie" not in r.headers
            assert httpx.get(f"{base}/healthz", timeout=10).text == "ok"
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=15)
        assert f"http://127.0.0.1:{port}/" in out
        assert suppression(db, "dana@example.com") == "unsubscribed"
    finally:
        db.dispose()


def test_nurture_serve_reports_a_busy_port(run_cli, workspace):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
