"""The one error hierarchy. The CLI turns these into one clean line on stderr."""

from __future__ import annotations


class NurtureError(Exception):
    """Base of every error a user can act on."""


class ConfigError(NurtureError):
    """A setting is missing, malformed or contradictory."""


class SourceError(NurtureError):
    """Bad input in a user's file, pinned to ``file:line``."""

    def __init__(self, file: str, line: int | None, message: str):
        self.file = str(file)
        self.line = line
        self.message = message
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {message}")


class CampaignError(SourceError):
    """A campaign YAML file is invalid."""


class TemplateError(SourceError):
    """A template cannot be loaded or rendered."""


class ImportFileError(SourceError):
    """A candidates file cannot be read at all (encoding, missing email column)."""


class NotFound(NurtureError):
    """A named candidate, campaign or step does not exist."""


class LockHeld(NurtureError):
    """Another daemon holds the single-writer lock (SQLite)."""


class NotAvailable(NurtureError):
    """A command that is not built yet."""
