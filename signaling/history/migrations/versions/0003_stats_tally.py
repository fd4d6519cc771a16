"""Statistics (#15, scale): the counts per day and hour, kept as events are filed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 01:50:00

Hand-checked against signaling/history/schema.py (tests/test_history.py compares
the migrated database with the metadata). The four ``stats_*`` tables are filled from
the rows the record holds (``tally.rebuild``); from then on the write transaction keeps
them. The indexes that served the counts are dropped: the counts come from the tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from signaling.history import tally

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPE = sa.String(length=140)
ID = sa.String(length=128)
# Served the counts (0002); the counts are the stats_* tables' now.
DROPPED = {
    "ix_sessions_stats": (
        "sessions",
        ["window", "matter", "created_at", "ended_at", "end_reason"],
    ),
    "ix_invitations_stats": (
        "invitations",
        ["dept", "level", "status", "created_at", "unanswered_at", "session_id"],
    ),
    "ix_invitations_hourly": (
        "invitations",
        ["created_at", "status", "unanswered_at", "dept", "session_id"],
    ),
    "ix_opinions_stats": ("opinions", ["author_dept", "decision", "created_at", "session_id"]),
}
# The edges of a period (less than a day, on either side) read by their time.
ADDED = {
    "ix_opinions_period": ("opinions", ["created_at", "author_dept", "decision", "session_id"]),
}


def _key(name: str, type_: sa.types.TypeEngine) -> sa.Column:
    return sa.Column(name, type_, nullable=False)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def _table(name: str, keys: list[sa.Column], counts: list[str]) -> None:
    op.create_table(
        name,
        *keys,
        *(_count(c) for c in counts),
        sa.PrimaryKeyConstraint(*(k.name for k in keys), name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    scope, day = _key("scope", SCOPE), _key("day", sa.Integer())
    _table(
        "stats_sessions",
        [scope, day, _key("window", sa.String(length=100)), _key("matter", sa.Text())],
        ["sessions", "ended", "broken_off"],
    )
    _table(
        "stats_invitations",
        [
            _key("scope", SCOPE),
            _key("day", sa.Integer()),
            _key("dept", ID),
            _key("level", sa.String(length=16)),
            _key("outcome", sa.String(length=16)),
        ],
        ["n"],
    )
    _table(
        "stats_opinions",
        [
            _key("scope", SCOPE),
            _key("day", sa.Integer()),
            _key("dept", ID),
            _key("decision", sa.String(length=32)),
        ],
        ["n"],
    )
    _table(
        "stats_hours",
        [_key("scope", SCOPE), _key("hour", sa.Integer())],
        ["sessions", "invitations", "accepted", "unanswered"],
    )
    op.create_table(
        "stats_values",
        _key("scope", SCOPE),
        _key("measure", sa.String(length=16)),
        _key("ref", ID),
        sa.Column("grp", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "measure", "ref", name=op.f("pk_stats_values")),
        sqlite_with_rowid=False,
    )
    for columns in (
        ["scope", "measure", "value", "at"],
        ["scope", "measure", "grp", "value", "at"],
    ):
        op.create_index(op.f(f"ix_stats_values_{'_'.join(columns)}"), "stats_values", columns)
    for name, (table, _) in DROPPED.items():
        op.drop_index(name, table_name=table)
    for name, (table, columns) in ADDED.items():
        op.create_index(name, table, columns)
    tally.rebuild(op.get_bind())


def downgrade() -> None:
    for name, (table, _) in ADDED.items():
        op.drop_index(name, table_name=table)
    for name, (table, columns) in DROPPED.items():
        op.create_index(name, table, columns)
    for name in (
        "stats_values",
        "stats_hours",
        "stats_opinions",
        "stats_invitations",
        "stats_sessions",
    ):
        op.drop_table(name)
