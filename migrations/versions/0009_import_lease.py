"""dataset_imports lease: attempts, worker, heartbeat_at, enqueued_at (the jobs' lease for imports)

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30

A worker claiming an import takes attempt N and renews heartbeat_at while it downloads; a reaper requeues an
import whose heartbeat went stale (its worker died) and re-enqueues one queued for longer than the lease (the
API replica died between commit and enqueue), like jobs (worker/reaper.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_imports") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("worker", sa.String(200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_dataset_imports_status", ["status"])


def downgrade() -> None:
    with op.batch_alter_table("dataset_imports") as batch:
        batch.drop_index("ix_dataset_imports_status")
        batch.drop_column("enqueued_at")
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker")
        batch.drop_column("attempts")
