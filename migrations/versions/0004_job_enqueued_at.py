"""jobs.enqueued_at: when a queued job's message was last sent (heartbeat_at is only a running job's lease)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    # queued jobs kept their last enqueue time in heartbeat_at: move it
    op.execute("UPDATE jobs SET enqueued_at = heartbeat_at, heartbeat_at = NULL WHERE status = 'queued'")


def downgrade() -> None:
    op.execute("UPDATE jobs SET heartbeat_at = enqueued_at WHERE status = 'queued' AND enqueued_at IS NOT NULL")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enqueued_at")
