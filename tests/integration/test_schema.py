"""The migrations build exactly the models' schema, on both databases; listing walks an index."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from tasksvc.models import Base


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_newest_first_listing_uses_the_index_without_sorting(engine: Engine) -> None:
    before = uuid.uuid4()
    queries = {
        "all": "SELECT * FROM jobs WHERE scope = :s AND id < :b ORDER BY id DESC LIMIT 51",
        "status": "SELECT * FROM jobs WHERE scope = :s AND status = :st AND id < :b ORDER BY id DESC LIMIT 51",
        "type": "SELECT * FROM jobs WHERE scope = :s AND type = :t AND id < :b ORDER BY id DESC LIMIT 51",
    }
    params = {"s": "", "st": "queued", "t": "hash", "b": before.hex if engine.dialect.name == "sqlite" else before}
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET enable_seqscan = off"))  # an empty table would otherwise be scanned
            for name, sql in queries.items():
                plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), params))
                assert "Index Scan Backward" in plan, (name, plan)
                assert "Sort" not in plan, (name, plan)
        else:
            for name, sql in queries.items():
                plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql), params))
                assert "USING INDEX ix_jobs_scope_" in plan, (name, plan)
                assert "TEMP B-TREE" not in plan, (name, plan)
