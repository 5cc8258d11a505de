"""registry: aliases + alias history, version description/tags/parent, never-reused version numbers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Mirrors service/db/tables.py (ModelAlias, AliasEvent, ModelVersion.description/tags/parent,
RegisteredModel.last_version, back-filled from the versions that exist).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("registered_models",
                  sa.Column("last_version", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.execute(
        "UPDATE registered_models SET last_version = COALESCE("
        "(SELECT MAX(version) FROM model_versions WHERE model_versions.model_id = registered_models.id), 0)"
    )
    op.add_column("model_versions", sa.Column("description", sa.Text(), nullable=True))
    op.add_column("model_versions", sa.Column("tags", sa.JSON(), nullable=True))
    op.add_column("model_versions", sa.Column("parent", sa.JSON(), nullable=True))

    op.create_table(
        "model_aliases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["registered_models.id"],
                                name="fk_model_aliases_model_id_registered_models", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"],
                                name="fk_model_aliases_version_id_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_model_aliases"),
        sa.UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),
    )
    op.create_index("ix_model_aliases_model_id", "model_aliases", ["model_id"])
    op.create_index("ix_model_aliases_version_id", "model_aliases", ["version_id"])

    op.create_table(
        "alias_events",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("key_name", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["registered_models.id"],
                                name="fk_alias_events_model_id_registered_models", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_alias_events"),
        sa.UniqueConstraint("model_id", "seq", name="uq_alias_events_model_seq"),
    )
    op.create_index("ix_alias_events_model_id", "alias_events", ["model_id"])


def downgrade() -> None:
    op.drop_table("alias_events")
    op.drop_table("model_aliases")
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 too): a batch table copy would DROP registered_models,
    # and with foreign keys on that cascades into model_versions
    for column in ("parent", "tags", "description"):
        op.drop_column("model_versions", column)
    op.drop_column("registered_models", "last_version")
