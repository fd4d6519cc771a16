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
        ["window", "matter", "created_at", "ended_at", "end_reason"],
    ),
    "ix_sessions_duration": ("sessions", ["duration_s", "created_at", "window"]),
    "ix_sessions_window_duration": ("sessions", ["window", "duration_s", "created_at"]),
    "ix_invitations_stats": (
        "invitations",
        ["dept", "level", "status", "created_at", "unanswered_at", "session_id"],
    ),
    "ix_invitations_answer": ("invitations", ["dept", "answer_s", "created_at", "session_id"]),
    "ix_invitations_hourly": (
        "invitations",
        ["created_at", "status", "unanswered_at", "dept", "session_id"],
    ),
    "ix_opinions_stats": ("opinions", ["author_dept", "decision", "created_at", "session_id"]),
}
EXCEPTION_INDEXES = {
    "ix_exceptions_at_exception_id": ["at", "exception_id"],
    "ix_exceptions_status_at_exception_id": ["status", "at", "exception_id"],
    "ix_exceptions_kind_at_exception_id": ["kind", "at", "exception_id"],
    "ix_exceptions_dept_at_exception_id": ["dept", "at", "exception_id"],
    "ix_exceptions_session_id_at": ["session_id", "at"],
}


def upgrade() -> None:
    # The times the statistics rank, kept as columns (set as events are filed from now
    # on), filled in for the rows the record holds already.
    op.add_column("sessions", sa.Column("duration_s", sa.Double(), nullable=True))
    op.add_column("invitations", sa.Column("answer_s", sa.Double(), nullable=True))
    sessions = sa.table(
        "sessions", sa.column("duration_s"), sa.column("ended_at"), sa.column("created_at")
    )
    op.execute(
        sessions.update()
        .where(sessions.c.ended_at.is_not(None))
        .values(duration_s=sessions.c.ended_at - sessions.c.created_at)
    )
    invitations = sa.table(
        "invitations",
        sa.column("answer_s"),
        sa.column("responded_at"),
        sa.column("created_at"),
        sa.column("status"),
    )
    op.execute(
        invitations.update()
        .where(invitations.c.status.in_(("accepted", "declined")))
        .values(answer_s=invitations.c.responded_at - invitations.c.created_at)
    )
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
    with op.batch_alter_table("invitations") as batch:
        batch.drop_column("answer_s")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("duration_s")
