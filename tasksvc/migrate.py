"""Apply the Alembic migrations shipped inside the package (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from tasksvc import db

SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def is_current(engine: Engine) -> bool:
    """True if the database is at the latest migration (what `tasksvc api`/`worker` need)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with db.read(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (the latest by default)."""
    config = _config()
    with db.write(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
