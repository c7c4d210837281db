"""`nurture serve`: the one-click unsubscribe endpoint (RFC 8058) and the dashboard's door.

Routes:

- `POST /u/{token}` unsubscribes the candidate behind a genuine token: 200 and a short page,
  never a redirect or a cookie, whatever the body (RFC 8058's `List-Unsubscribe=One-Click`, the
  confirmation form, or nothing). Repeating it changes nothing and answers 200 again.
- `GET /u/{token}` shows a confirmation page with a button; a GET never unsubscribes (link
  scanners and prefetchers follow GETs).
- `/u/{token}/` (a trailing slash, as some mail clients and copy-pastes add) is the same page
  and the same POST, served in place. Nothing here ever redirects: Starlette's trailing-slash
  redirect builds its target from the Host header, which whoever sends the request controls.
- Anything else under `/u/` - a forged, malformed or unknown token - is the router's own 404,
  byte for byte, so a probe learns nothing. A forgotten candidate's row (and with it the token
  key) is gone, so their old link is a 404 too: it cannot be told from a token never issued,
  and the address stays suppressed by its hash anyway.
- `GET /healthz` answers "ok" with no credentials.
- `/` and `/report` are the dashboard: the HTML report (campaigns, charts, warm pool) built
  from the database at request time, plus the queue by state; read-only. Closed (403) until
  `[serve] token` or `[serve] username`/`password` is configured, then 401 without those
  credentials (a token as `Authorization: Bearer` or `?token=`).

Every page is built here with every value escaped, no external assets and a strict CSP.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import socket
from collections.abc import Callable
from datetime import datetime
from html import escape

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .database import Database
from .errors import NurtureError
from .report_html import gather_page, render
from .store import pool
from .store import reports as report_store
from .unsubscribe import make_token, read_token
from .workspace import unsubscribe_secret

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;"
    "color:#222;line-height:1.5}button{font-size:1rem;padding:.5rem 1.2rem;cursor:pointer}"
    "table{border-collapse:collapse}td,th{padding:.2rem .8rem;text-align:left}"
)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (404s and errors included) and drops any
    Set-Cookie: nothing here ever needs a cookie."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {n.lower() for n in SECURITY_HEADERS}
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in names and k.lower() != b"set-cookie"
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mask_address(email: str) -> str:
    """d***@example.com: enough for the person to recognise, little for a shoulder-surfer."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A whole HTML page; `title` is escaped here, `body` must already be escaped."""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status)


def create_app(settings: Settings, db: Database, *, clock: Callable[[], datetime]) -> Starlette:
    """The ASGI app. `clock` gives the moment an unsubscribe is recorded at."""
    secret = unsubscribe_secret(settings, db)
    company = escape(settings.company_name)

    def token_key(request: Request) -> str:
        token = request.path_params["token"]
        key = read_token(secret, token)
        # Only the canonical spelling: base64 leaves spare bits in the last character (and
        # tolerates padding), so several strings decode to one genuine token.
        if key is None or not hmac.compare_digest(make_token(secret, key), token):
            raise HTTPException(status_code=404)
        return key

    def confirm(request: Request) -> Response:
        holder = pool.token_holder(db, token_key(request))
        if holder is None:
            raise HTTPException(status_code=404)
        email, suppressed = holder
        who = escape(mask_address(email))
        if suppressed:
            return page(
                "Unsubscribed",
                f"<h1>You are unsubscribed</h1><p>{who} gets no more email from {company}.</p>",
            )
        # action is relative, so it resolves to this same URL also behind a proxy that mounts
        # this app under a prefix: the token itself from /u/TOKEN, "." from /u/TOKEN/.
        action = "." if request.url.path.endswith("/") else escape(request.path_params["token"])
        return page(
            "Unsubscribe",
            f"<h1>Unsubscribe?</h1><p>Stop email from {company} to {who}?</p>"
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    def one_click(request: Request) -> Response:
        # The body is not read: RFC 8058 clients send List-Unsubscribe=One-Click, the form
        # sends the same, and an empty POST is honoured too.
        if pool.unsubscribe_token_key(db, token_key(request), clock()) is None:
            raise HTTPException(status_code=404)
        return page(
            "Unsubscribed",
            f"<h1>You are unsubscribed</h1><p>You will get no more email from {company}.</p>",
        )

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    def dashboard(request: Request) -> Response:
        refused = check_credentials(settings, request)
        if refused is not None:
            return refused
        # Read-only: the same report as `nurture report --format html`, built at request time.
        now = clock()
        result, warm = gather_page(db, now=now)  # the pool: the rows the page shows
        with db.sessions() as session:
            states = report_store.sends_by_state(session)
        html = render(result, warm, title=f"{settings.company_name}: nurture", company=settings.company_name,
                      ledger_states=states, campaign_count=len(result.campaigns))
        return HTMLResponse(html)

    routes = [
        Route("/u/{token}", confirm, methods=["GET"]),
        Route("/u/{token}", one_click, methods=["POST"]),
        Route("/u/{token}/", confirm, methods=["GET"]),
        Route("/u/{token}/", one_click, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", dashboard, methods=["GET"]),
        Route("/report", dashboard, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False  # see the module docstring: never a redirect
    app.add_middleware(SecurityHeaders)
    return app


def check_credentials(settings: Settings, request: Request) -> Response | None:
    """None when the request may see the dashboard, else the refusal to send.

    With no credentials configured the dashboard is closed (403), never open by default.
    """
    token = settings.serve_token.reveal() if settings.serve_token else None
    user = settings.serve_username
    password = settings.serve_password.reveal() if settings.serve_password else None
    basic = bool(user and password)
    if not token and not basic:
        return PlainTextResponse(
            "The dashboard is disabled: configure [serve] token (or [serve] username and "
            "password) in nurture.toml to open it.\n",
            status_code=403,
        )
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if token:
        given = value if scheme == "bearer" else request.query_params.get("token", "")
        if given and _same(given, token):
            return None
    if basic and scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        name, sep, secret = decoded.partition(":")
        # Both compared every time, so timing does not tell which one was wrong.
        name_ok = _same(name, user or "")
        secret_ok = _same(secret, password or "")
        if sep and name_ok and secret_ok:
            return None
    challenge = 'Basic realm="nurture", charset="UTF-8"' if basic else 'Bearer realm="nurture"'
    return PlainTextResponse(
        "Authentication required.\n", status_code=401, headers={"WWW-Authenticate": challenge}
    )


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def listen(host: str, port: int) -> socket.socket:
    """A listening socket for `nurture serve`, bound before uvicorn starts: a busy port is one
    clean error, and port 0 gets a free one whose number can be printed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise NurtureError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise NurtureError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
