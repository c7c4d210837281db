"""Settings from nurture.toml, NURTURE_* environment variables and flags, in that order of
precedence, read once into a frozen object. The only module that reads the environment.

Secrets (passwords inside URLs, the unsubscribe secret, the dashboard token) are wrapped so that
printing or logging the settings never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .durations import parse_duration, parse_instant
from .errors import ConfigError

CONFIG_NAME = "nurture.toml"


class Secret(str):
    """A string that never shows itself in repr/str formatting of containers or logs."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


def mask_url(url: str | None) -> str | None:
    """The URL with its password replaced by ***, for display."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[": show nothing of it rather than fail
        return "<malformed URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


# section -> key -> (type, default). Types: str, int, bool-ish "str", secret, list, duration.
_SCHEMA: dict[str, dict[str, tuple[str, object]]] = {
    "database": {"url": ("str", None)},
    "smtp": {
        "url": ("secret", None),
        "starttls": ("str", "required"),
        "max_connections": ("int", 8),
        "rate_per_minute": ("int", 600),
        "timeout_seconds": ("int", 30),
        "max_attempts": ("int", 8),
        "helo": ("str", None),
    },
    "imap": {
        "url": ("secret", None),
        "folders": ("list", None),
        "poll_minutes": ("int", 5),
        "starttls": ("str", "required"),
        "away_default": ("duration", "7d"),
    },
    "sender": {"from": ("str", None), "reply_to": ("str", None)},
    "company": {"name": ("str", "Talent Co"), "postal_address": ("str", None)},
    "unsubscribe": {
        "base_url": ("str", "http://127.0.0.1:8025/u/"),
        "secret": ("secret", None),
        "mailto": ("str", None),
    },
    "daemon": {"tick_seconds": ("int", 60), "lease_seconds": ("int", 120), "batch_size": ("int", 500)},
    "defaults": {"timezone": ("str", "UTC")},
    "serve": {
        "host": ("str", "127.0.0.1"),
        "port": ("int", 8025),
        "token": ("secret", None),
        "username": ("str", None),
        "password": ("secret", None),
    },
    "paths": {
        "campaigns": ("str", "campaigns"),
        "templates": ("str", "templates"),
        "outbox": ("str", "outbox"),
    },
}


@dataclass(frozen=True)
class SmtpSettings:
    url: Secret | None
    starttls: str
    max_connections: int
    rate_per_minute: int
    timeout_seconds: int
    max_attempts: int
    helo: str | None


@dataclass(frozen=True)
class ImapSettings:
    url: Secret | None
    folders: tuple[str, ...]
    poll_minutes: int
    starttls: str
    away_default_days: int


@dataclass(frozen=True)
class Settings:
    base_dir: Path
    config_file: Path | None
    database_url: str
    smtp: SmtpSettings
    imap: ImapSettings
    sender_name: str
    sender_email: str
    reply_to: str | None
    company_name: str
    postal_address: str
    unsubscribe_base_url: str
    unsubscribe_secret: Secret | None
    unsubscribe_mailto: str | None
    tick_seconds: int
    lease_seconds: int
    batch_size: int
    default_timezone: str
    serve_host: str
    serve_port: int
    serve_token: Secret | None
    serve_username: str | None
    serve_password: Secret | None
    campaigns_dir: Path
    templates_dir: Path
    outbox_dir: Path
    now: datetime | None = None
    verbose: bool = False
    raw: Mapping[str, Mapping[str, object]] = field(default_factory=dict, repr=False)

    @property
    def sender_domain(self) -> str:
        return self.sender_email.rsplit("@", 1)[-1]

    def describe(self) -> dict[str, object]:
        """Settings fit for display: secrets masked."""
        return {
            "config_file": str(self.config_file) if self.config_file else None,
            "database_url": mask_url(self.database_url),
            "smtp_url": mask_url(self.smtp.url) if self.smtp.url else None,
            "imap_url": mask_url(self.imap.url) if self.imap.url else None,
            "sender": f"{self.sender_name} <{self.sender_email}>",
        }


def _env_name(section: str, key: str) -> str:
    return f"NURTURE_{section.upper()}_{key.upper()}"


def _coerce(section: str, key: str, kind: str, value: object, where: str) -> object:
    label = f"{where}: [{section}] {key}"
    if value is None:
        return None
    if kind in ("str", "secret"):
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r}")
        return Secret(value) if kind == "secret" else value
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{label} must be a whole number, got {value!r}")
        try:
            number = int(value)  # env values arrive as strings
        except (TypeError, ValueError):
            raise ConfigError(f"{label} must be a whole number, got {value!r}") from None
        if number < 0:
            raise ConfigError(f"{label} must not be negative, got {number}")
        return number
    if kind == "list":
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{label} must be a list of strings, got {value!r}")
    if kind == "duration":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    raise AssertionError(kind)


def _read_toml(path: Path) -> dict:
    # Imported here: without a nurture.toml (--database and the environment only), a command
    # starts without the TOML parser (and difflib, for the hints of its errors).
    import difflib
    import tomllib

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    for section, values in data.items():
        if section not in _SCHEMA:
            hint = difflib.get_close_matches(section, _SCHEMA, n=1)
            extra = f" (did you mean [{hint[0]}]?)" if hint else ""
            raise ConfigError(f"{path}: unknown section [{section}]{extra}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key in values:
            if key not in _SCHEMA[section]:
                hint = difflib.get_close_matches(key, _SCHEMA[section], n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(f"{path}: unknown key '{key}' in [{section}]{extra}")
    return data


def load_settings(
    config_path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
    now: str | None = None,
    verbose: bool = False,
    cwd: Path | None = None,
) -> Settings:
    """Merge the three sources: file < environment < flags."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    explicit = config_path or env.get("NURTURE_CONFIG")
    path = Path(explicit) if explicit else cwd / CONFIG_NAME
    if explicit and not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    file_data = _read_toml(path) if path.is_file() else {}
    base_dir = path.parent.resolve() if path.is_file() else cwd.resolve()
    where = str(path) if path.is_file() else "defaults"

    values: dict[str, dict[str, object]] = {}
    for section, keys in _SCHEMA.items():
        values[section] = {}
        for key, (kind, default) in keys.items():
            value = file_data.get(section, {}).get(key, default)
            source = where
            env_value = env.get(_env_name(section, key))
            if env_value is not None and env_value != "":
                value, source = env_value, f"${_env_name(section, key)}"
            values[section][key] = _coerce(section, key, kind, value, source)

    db_url = database_url or values["database"]["url"] or f"sqlite:///{base_dir / 'nurture.db'}"
    db_url = _anchor_sqlite(db_url, base_dir)

    now_text = now if now is not None else env.get("NURTURE_NOW")
    clock = None
    if now_text:
        try:
            clock = parse_instant(now_text)
        except ValueError as exc:
            raise ConfigError(f"--now: {exc}") from None
        # Plans, waits and windows add up to a century or so to now: keep clear of year 9999.
        if not datetime(1900, 1, 1, tzinfo=UTC) <= clock < datetime(2200, 1, 1, tzinfo=UTC):
            raise ConfigError(f"--now: {now_text!r} is out of range (years 1900 to 2199)")

    smtp = values["smtp"]
    if smtp["starttls"] not in ("required", "off"):
        raise ConfigError(f"[smtp] starttls must be 'required' or 'off', got {smtp['starttls']!r}")
    imap = values["imap"]
    if imap["starttls"] not in ("required", "off"):
        raise ConfigError(f"[imap] starttls must be 'required' or 'off', got {imap['starttls']!r}")

    sender_from = values["sender"]["from"] or "Nurture Mail <talent@localhost.localdomain>"
    sender_name, sender_email = parseaddr(sender_from)
    if "@" not in sender_email:
        raise ConfigError(f"[sender] from must be an address like 'Dana <dana@talent.example>', got {sender_from!r}")

    base_url = values["unsubscribe"]["base_url"]
    try:
        base_parts = urlsplit(base_url)
    except ValueError as exc:
        raise ConfigError(f"[unsubscribe] base_url {base_url!r}: {exc}") from None
    if base_parts.scheme != "https" and not (
        base_parts.scheme == "http" and base_parts.hostname in ("localhost", "127.0.0.1", "::1")
    ):
        raise ConfigError(
            f"[unsubscribe] base_url must be an https:// URL (http:// only for localhost), got {base_url!r}"
        )

    tz = values["defaults"]["timezone"]
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        raise ConfigError(f"[defaults] timezone: unknown time zone {tz!r}") from None

    company = values["company"]
    paths = values["paths"]
    unsub = values["unsubscribe"]
    serve = values["serve"]
    daemon = values["daemon"]
    away = imap["away_default"]
    return Settings(
        base_dir=base_dir,
        config_file=path if path.is_file() else None,
        database_url=db_url,
        smtp=SmtpSettings(
            url=smtp["url"],
            starttls=smtp["starttls"],
            max_connections=max(1, smtp["max_connections"]),
            rate_per_minute=smtp["rate_per_minute"],
            timeout_seconds=max(1, smtp["timeout_seconds"]),
            max_attempts=max(1, smtp["max_attempts"]),
            helo=smtp["helo"],
        ),
        imap=ImapSettings(
            url=imap["url"],
            folders=imap["folders"] or (),
            poll_minutes=max(1, imap["poll_minutes"]),
            starttls=imap["starttls"],
            away_default_days=max(1, away.days),
        ),
        sender_name=sender_name,
        sender_email=sender_email.lower(),
        reply_to=values["sender"]["reply_to"],
        company_name=company["name"],
        postal_address=company["postal_address"] or "(postal address not configured)",
        unsubscribe_base_url=unsub["base_url"].rstrip("/") + "/",
        unsubscribe_secret=unsub["secret"],
        unsubscribe_mailto=unsub["mailto"],
        tick_seconds=max(1, daemon["tick_seconds"]),
        lease_seconds=max(10, daemon["lease_seconds"]),
        batch_size=max(1, daemon["batch_size"]),
        default_timezone=tz,
        serve_host=serve["host"],
        serve_port=serve["port"],
        serve_token=serve["token"],
        serve_username=serve["username"],
        serve_password=serve["password"],
        campaigns_dir=base_dir / paths["campaigns"],
        templates_dir=base_dir / paths["templates"],
        outbox_dir=base_dir / paths["outbox"],
        now=clock,
        verbose=verbose,
        raw=values,
    )


def _anchor_sqlite(url: str, base_dir: Path) -> str:
    """A relative SQLite path is relative to the config file's directory, not the shell's."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return prefix + str(base_dir / rest)
    return url
