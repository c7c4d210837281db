"""A user's working directory, loaded: campaigns, templates and the unsubscribe secret.

Every command that sends, plans or previews loads it through `load_workspace`, which refuses
to go on while any campaign or template has an error (PRODUCT.md: invalid campaigns are
"refused by every command that loads campaigns").
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from .campaigns import Campaign, load_campaigns
from .config import Settings
from .database import Database
from .errors import NurtureError, SourceError
from .models import Meta
from .templates import TemplateSet


class WorkspaceError(NurtureError):
    """Campaigns or templates with errors; the message lists each as file:line: message."""

    def __init__(self, errors: list[SourceError]):
        self.errors = errors
        lines = [str(e) for e in errors]
        super().__init__(
            f"{len(errors)} problem(s) in campaigns or templates (run `nurture check`):\n"
            + "\n".join(lines)
        )


@dataclass(frozen=True)
class Workspace:
    templates: TemplateSet
    campaigns: list[Campaign]
    unsubscribe_secret: str

    def campaign(self, campaign_id: str) -> Campaign:
        for c in self.campaigns:
            if c.id == campaign_id:
                return c
        known = ", ".join(c.id for c in self.campaigns) or "none"
        raise NurtureError(f"no campaign {campaign_id!r} (campaigns: {known})")


def display_path(path: Path) -> Path:
    """Relative to the current directory when inside it, so errors read `campaigns/x.yaml:3:`."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return Path(rel) if not rel.startswith("..") else path


def load_sources(settings: Settings) -> tuple[TemplateSet | None, list[Campaign], list[SourceError]]:
    """Templates and campaigns with every error found (for `nurture check`)."""
    errors: list[SourceError] = []
    templates_dir = display_path(settings.templates_dir)
    templates: TemplateSet | None = None
    if not settings.templates_dir.is_dir():
        errors.append(SourceError(str(templates_dir), None, "no such templates directory"))
    else:
        try:
            templates = TemplateSet(templates_dir)
        except SourceError as exc:
            errors.append(exc)
        else:
            errors.extend(templates.validate())
    exists = templates.exists if templates is not None else None
    campaigns, campaign_errors = load_campaigns(
        display_path(settings.campaigns_dir), template_exists=exists
    )
    errors.extend(campaign_errors)
    return templates, campaigns, errors


def load_workspace(settings: Settings, db: Database) -> Workspace:
    templates, campaigns, errors = load_sources(settings)
    if errors or templates is None:
        raise WorkspaceError(errors)
    return Workspace(
        templates=templates,
        campaigns=campaigns,
        unsubscribe_secret=unsubscribe_secret(settings, db),
    )


def unsubscribe_secret(settings: Settings, db: Database) -> str:
    """The configured secret, else one generated once and kept in the database, so links
    signed by `nurture run` verify in `nurture serve` on the same database."""
    if settings.unsubscribe_secret:
        return settings.unsubscribe_secret.reveal()
    with db.sessions.begin() as session:
        value = session.execute(
            select(Meta.value).where(Meta.key == "unsubscribe_secret")
        ).scalar()
        if value:
            return value
        value = secrets.token_urlsafe(32)
        session.add(Meta(key="unsubscribe_secret", value=value))
        return value


def fingerprint(settings: Settings) -> tuple:
    """What changes when a recruiter edits a campaign or template (names, sizes, mtimes)."""
    items = []
    for directory in (settings.campaigns_dir, settings.templates_dir):
        if directory.is_dir():
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    st = path.stat()
                    items.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(items)


class WorkspaceWatcher:
    """Reloads campaigns and templates when their files change (the daemon's view)."""

    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.db = db
        self.seen: tuple | None = None
        self.workspace: Workspace | None = None

    def current(self) -> Workspace:
        now = fingerprint(self.settings)
        if now != self.seen or self.workspace is None:
            self.workspace = None
            self.seen = now
            # An invalid edit raises here: nothing is sent until it is fixed.
            self.workspace = load_workspace(self.settings, self.db)
        return self.workspace
