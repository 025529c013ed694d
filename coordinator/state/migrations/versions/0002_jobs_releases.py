"""jobs with leases, step and error; releases with experts, eval, parent; channel history

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"))
        batch_op.add_column(sa.Column("step", sa.String(length=32), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("result", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("error_code", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("error_message", sa.Text(), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_jobs_state"), ["state"], unique=False)
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("experts", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("eval", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("parent", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("forced_by", sa.String(length=128), nullable=False, server_default=""))
        batch_op.create_foreign_key("fk_releases_job_id", "jobs", ["job_id"], ["id"])
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
        )
    op.create_table(
        "channel_moves",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["release"], ["releases.number"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("channel_moves", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channel_moves_channel"), ["channel"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("channel_moves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_moves_channel"))
    op.drop_table("channel_moves")
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_constraint("fk_releases_job_id", type_="foreignkey")
        for column in ("forced_by", "job_id", "parent", "eval", "experts"):
            batch_op.drop_column(column)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_state"))
        for column in (
            "error_message",
            "error_code",
            "result",
            "params",
            "heartbeat_at",
            "lease_expires_at",
            "lease_owner",
            "step",
            "max_attempts",
        ):
            batch_op.drop_column(column)
