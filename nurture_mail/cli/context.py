"""What every command shares: settings, the database and the clock, opened lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..config import Settings, load_settings

if TYPE_CHECKING:  # imported when a command first needs the database: startup stays quick
    from ..database import Database


@dataclass
class AppContext:
    config_path: str | None = None
    database_url: str | None = None
    verbose: bool = False
    now: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                self.config_path, database_url=self.database_url, now=self.now, verbose=self.verbose
            )
        return self._settings

    @property
    def db(self) -> Database:
        if self._db is None:
            from ..database import open_database

            self._db = open_database(self.settings.database_url)
        return self._db

    def clock(self) -> datetime:
        """The engine's notion of now: --now / NURTURE_NOW if given, else the real time.

        Read once per command, at this edge, and passed down.
        """
        return self.settings.now or datetime.now(UTC)

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None
