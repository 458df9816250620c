"""jobs, idempotency_keys and blocked_ips

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasksvc.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON()),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("compensation_status", sa.String(16)),
        sa.Column("compensation_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("compensation_error", sa.Text()),
        sa.Column("compensation_finished_at", UTCDateTime()),
        sa.Column("undo", sa.JSON()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("lease_expires_at", UTCDateTime()),
    )
    op.create_index("ix_jobs_scope_id", "jobs", ["scope", "id"])
    op.create_index("ix_jobs_scope_status_id", "jobs", ["scope", "status", "id"])
    op.create_index("ix_jobs_scope_type_id", "jobs", ["scope", "type", "id"])
    op.create_index("ix_jobs_status_next_attempt", "jobs", ["status", "next_attempt_at"])

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    op.create_table(
        "blocked_ips",
        sa.Column("ip", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text()),
        sa.Column("job_id", sa.Uuid()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_blocked_ips_created_ip", "blocked_ips", ["created_at", "ip"])


def downgrade() -> None:
    op.drop_table("blocked_ips")
    op.drop_table("idempotency_keys")
    op.drop_table("jobs")
