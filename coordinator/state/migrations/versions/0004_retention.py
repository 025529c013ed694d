"""retention: each release's per-domain retention, and the cache of experts' own scores

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch_op:
        batch_op.add_column(sa.Column("retention", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "expert_scores",
        sa.Column("package_digest", sa.String(length=80), nullable=False),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("evaluator", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("package_score", sa.Float(), nullable=True),
        sa.Column("wall_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("package_digest", "examples", "threads", "evaluator"),
    )


def downgrade() -> None:
    op.drop_table("expert_scores")
    with op.batch_alter_table("releases") as batch_op:
        batch_op.drop_column("retention")
