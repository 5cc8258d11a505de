"""jobs.warnings (the audit's warnings at creation), jobs.memory_bytes (estimated peak training memory) and
workers.memory_budget_bytes / memory_used_bytes (reported with each heartbeat)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

A worker claims a queued job only when the job's estimate fits its budget; a job no live worker can take says
why it waits (service/api/jobs.py waiting_detail).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("memory_bytes", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("memory_budget_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("memory_used_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("memory_used_bytes")
        batch.drop_column("memory_budget_bytes")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("memory_bytes")
        batch.drop_column("warnings")
