"""Supervision (#15): the exceptions table, and indexes covering the statistics

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 19:05:00

Hand-checked against signaling/history/schema.py (tests/test_history.py compares
the migrated database with the metadata). Exceptions are raised as events are filed
from now on; events filed before this revision raise none (the statistics, read from
the existing rows, cover them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATS_INDEXES = {
    "ix_sessions_stats": (
        "sessions",
        ["created_at", "window", "matter", "end_reason", "ended_at"],
    ),
    "ix_invitations_stats": (
        "invitations",
        ["created_at", "dept", "level", "status", "responded_at", "unanswered_at", "session_id"],
    ),
    "ix_opinions_stats": ("opinions", ["created_at", "author_dept", "decision", "session_id"]),
}
EXCEPTION_INDEXES = {
    "ix_exceptions_at_exception_id": ["at", "exception_id"],
    "ix_exceptions_status_at_exception_id": ["status", "at", "exception_id"],
    "ix_exceptions_kind_at_exception_id": ["kind", "at", "exception_id"],
    "ix_exceptions_dept_at_exception_id": ["dept", "at", "exception_id"],
    "ix_exceptions_session_id_at": ["session_id", "at"],
}


def upgrade() -> None:
    for name, (table, columns) in STATS_INDEXES.items():
        op.create_index(name, table, columns)
    op.create_table(
        "exceptions",
        sa.Column("exception_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("dept", sa.String(length=128), nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("handled_by", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("handled_at", sa.Double(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("exception_id", name=op.f("pk_exceptions")),
    )
    for name, columns in EXCEPTION_INDEXES.items():
        op.create_index(op.f(name), "exceptions", columns)


def downgrade() -> None:
    op.drop_table("exceptions")
    for name, (table, _) in STATS_INDEXES.items():
        op.drop_index(name, table_name=table)
