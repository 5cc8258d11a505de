"""dataset_imports: datasets imported from object storage by a worker

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_imports",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("team", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dataset_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_imports"),
    )
    op.create_index("ix_dataset_imports_team", "dataset_imports", ["team"])


def downgrade() -> None:
    op.drop_index("ix_dataset_imports_team", table_name="dataset_imports")
    op.drop_table("dataset_imports")
