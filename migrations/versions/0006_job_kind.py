"""jobs.kind (train | batch_predict) and jobs.params (what a non-training job runs on)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Batch predictions are jobs (same claim, lease, reaper and cancel as training), told apart by `kind`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default="train"))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.create_index("ix_jobs_kind", ["kind"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_kind")
        batch.drop_column("params")
        batch.drop_column("kind")
