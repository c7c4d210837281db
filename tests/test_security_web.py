"""`nurture serve` attacks not covered by tests/test_web.py: spliced tokens, a token signed by
another install's generated secret, replay after forget and a re-import attempt, and dashboard
credentials that are empty, half configured or borrowed from the unsubscribe side."""

from __future__ import annotations

import base64
import warnings

import pytest
from sqlalchemy import select, update

from nurture_mail.config import load_settings
from nurture_mail.database import open_database
from nurture_mail.importer import ImportReport, read_rows, records
from nurture_mail.models import Candidate, Suppression
from nurture_mail.store import pool
from nurture_mail.testing import FixedClock
from nurture_mail.unsubscribe import TAG_BYTES, make_token
from nurture_mail.web import create_app
from nurture_mail.workspace import unsubscribe_secret

from .conftest import NOW

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

PEOPLE = "email,first_name,status\ndana@example.com,Dana,rejected\nlee@example.com,Lee,rejected\n"


def import_people(db, tmp_path, name="people.csv"):
    path = tmp_path / name
    path.write_text(PEOPLE)
    report = ImportReport()
    pool.import_records(db, str(path), records(path, read_rows(path, {}), extra_tags=(), status=None, report=report),
                        report, now=NOW)
    return report


def key_of(db, email):
    with db.sessions() as s:
        return s.execute(select(Candidate.token_key).where(Candidate.email == email)).scalar_one()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def suppressed(db, email):
    with db.sessions() as s:
        return pool.is_suppressed(s, db, email)


@pytest.fixture
def install(tmp_path, db_url):
    """An install with no configured secret: the app generates one and keeps it in the database."""
    db = open_database(db_url)
    import_people(db, tmp_path)
    settings = load_settings(env={}, cwd=tmp_path, database_url=db_url)
    assert settings.unsubscribe_secret is None
    client = TestClient(create_app(settings, db, clock=FixedClock(NOW)), follow_redirects=False)
    yield client, db, settings
    db.dispose()


def test_spliced_tokens_are_404(install):
    client, db, settings = install
    secret = unsubscribe_secret(settings, db)
    dana, lee = make_token(secret, key_of(db, "dana@example.com")), make_token(secret, key_of(db, "lee@example.com"))
    spliced = [
        b64(unb64(dana)[:-TAG_BYTES] + unb64(lee)[-TAG_BYTES:]),  # Dana's key, Lee's tag
        b64(unb64(lee)[:-TAG_BYTES] + unb64(dana)[-TAG_BYTES:]),
        b64(unb64(dana)[:-TAG_BYTES] + b"\x00" * TAG_BYTES),
        b64(unb64(dana)[:8] + unb64(dana)[-TAG_BYTES:]),  # key truncated, tag kept
        dana.upper(), dana.lower(), dana.replace("-", "+").replace("_", "/"),
    ]
    for token in spliced:
        if token == dana:
            continue
        for method in ("GET", "POST"):
            assert client.request(method, f"/u/{token}").status_code == 404, token
    assert suppressed(db, "dana@example.com") is None and suppressed(db, "lee@example.com") is None


def test_a_token_signed_by_another_install_is_404(install, tmp_path):
    client, db, settings = install
    other_db = open_database(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        other_secret = unsubscribe_secret(settings, other_db)  # that install's own generated secret
        ours = unsubscribe_secret(settings, db)
        assert other_secret != ours
        key = key_of(db, "dana@example.com")  # even with the very same key inside
        forged = make_token(other_secret, key)
        assert client.post(f"/u/{forged}").status_code == 404
        assert client.get(f"/u/{forged}").status_code == 404
        assert suppressed(db, "dana@example.com") is None
        assert client.post(f"/u/{make_token(ours, key)}").status_code == 200
        assert suppressed(db, "dana@example.com") == "unsubscribed"
    finally:
        other_db.dispose()


def test_replay_after_forget_and_a_reimport_attempt(install, tmp_path):
    client, db, settings = install
    token = make_token(unsubscribe_secret(settings, db), key_of(db, "dana@example.com"))
    assert client.post(f"/u/{token}").status_code == 200  # used once
    pool.forget(db, "dana@example.com", NOW)
    report = import_people(db, tmp_path, "again.csv")  # someone imports the old export again
    assert any("asked to be forgotten" in e for e in report.errors)
    for method in ("GET", "POST", "POST"):
        assert client.request(method, f"/u/{token}").status_code == 404
    with db.sessions() as s:
        assert s.execute(select(Candidate).where(Candidate.email == "dana@example.com")).first() is None
        assert s.execute(select(Suppression.email).where(Suppression.reason == "forgotten")).scalars().all() == [None]


def test_a_reused_token_key_after_forget_does_not_reach_someone_else(install):
    """Even if a later candidate were given the forgotten person's key, the old link only ever
    unsubscribes (never reveals the new address in full)."""
    client, db, settings = install
    secret = unsubscribe_secret(settings, db)
    key = key_of(db, "dana@example.com")
    pool.forget(db, "dana@example.com", NOW)
    with db.sessions.begin() as s:
        s.execute(update(Candidate).where(Candidate.email == "lee@example.com").values(token_key=key))
    page = client.get(f"/u/{make_token(secret, key)}")
    assert page.status_code == 200 and "lee@example.com" not in page.text and "l***@example.com" in page.text


@pytest.mark.parametrize("toml, status", [
    ('[serve]\ntoken = ""\n', 403),
    ('[serve]\nusername = "dana"\n', 403),
    ('[serve]\npassword = "pw"\n', 403),
    ('[serve]\nusername = ""\npassword = ""\n', 403),
])
def test_dashboard_stays_closed_with_empty_or_half_credentials(tmp_path, db_url, toml, status):
    (tmp_path / "nurture.toml").write_text(toml)
    db = open_database(db_url)
    try:
        settings = load_settings(env={}, cwd=tmp_path, database_url=db_url)
        client = TestClient(create_app(settings, db, clock=FixedClock(NOW)))
        for headers in ({}, {"authorization": "Bearer "}, {"authorization": "Basic ZGFuYTo="},
                        {"authorization": "Basic ZGFuYTpwdw=="}):
            assert client.get("/", headers=headers).status_code == status
        assert client.get("/?token=").status_code == status
    finally:
        db.dispose()


def test_unsubscribe_secrets_and_tokens_do_not_open_the_dashboard(tmp_path, db_url):
    db = open_database(db_url)
    try:
        import_people(db, tmp_path)
        settings = load_settings(env={"NURTURE_SERVE_TOKEN": "dash-token", "NURTURE_UNSUBSCRIBE_SECRET": "u-secret"},
                                 cwd=tmp_path, database_url=db_url)
        client = TestClient(create_app(settings, db, clock=FixedClock(NOW)))
        token = make_token("u-secret", key_of(db, "dana@example.com"))
        for attempt in ({"authorization": "Bearer u-secret"}, {"authorization": f"Bearer {token}"},
                        {"authorization": "Bearer DASH-TOKEN"},
                        {"authorization": "bearer  dash-toke"}, {"authorization": "Basic " + b64(b"x:dash-token")}):
            assert client.get("/", headers=attempt).status_code == 401, attempt
        assert client.get(f"/?token={token}").status_code == 401
        assert client.get("/report?token=dash-token%00").status_code == 401
        assert client.get("/", headers={"authorization": "Bearer dash-token"}).status_code == 200
    finally:
        db.dispose()
