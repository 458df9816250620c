"""Apply the Alembic migrations shipped inside the package (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from tasksvc import db

SCRIPTS = Path(__file__).parent / "migrations"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (the latest by default)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    with db.write(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
