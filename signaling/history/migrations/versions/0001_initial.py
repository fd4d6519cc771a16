"""The record: cases, sessions, invitations, participants, events, chat, opinions, snapshots

Revision ID: 0001
Revises:
Create Date: 2026-12-06 13:24:10.383897

Hand-checked against signaling/history/schema.py (tests/test_history.py compares
the migrated database with the metadata).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_cases")),
    )
    op.create_table(
        "events",
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("actor", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name=op.f("fk_events_case_id_cases")
        ),
        sa.PrimaryKeyConstraint("case_id", "seq", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_session_id_seq"), "events", ["session_id", "seq"])

    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("creator_sub", sa.String(length=128), nullable=False),
        sa.Column("applicant_name", sa.Text(), nullable=True),
        sa.Column("matter", sa.Text(), nullable=True),
        sa.Column("window", sa.String(length=100), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("ended_by", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("sealed_at", sa.Double(), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("chain_head", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name=op.f("fk_sessions_case_id_cases")
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_sessions")),
    )
    op.create_index(
        op.f("ix_sessions_case_id_created_at_session_id"),
        "sessions",
        ["case_id", "created_at", "session_id"],
    )
    op.create_index(
        op.f("ix_sessions_created_at_session_id"), "sessions", ["created_at", "session_id"]
    )
    op.create_index(
        op.f("ix_sessions_window_created_at_session_id"),
        "sessions",
        ["window", "created_at", "session_id"],
    )

    op.create_table(
        "chat",
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=True),
        sa.Column("sender", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id", "seq"],
            ["events.case_id", "events.seq"],
            name=op.f("fk_chat_case_id_events"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name=op.f("fk_chat_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("case_id", "seq", name=op.f("pk_chat")),
    )
    op.create_index(op.f("ix_chat_session_id_seq"), "chat", ["session_id", "seq"])

    op.create_table(
        "invitations",
        sa.Column("invitation_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("dept", sa.String(length=128), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("reviewer", sa.String(length=128), nullable=True),
        sa.Column("reviewer_name", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("rang_at", sa.Double(), nullable=True),
        sa.Column("unanswered_at", sa.Double(), nullable=True),
        sa.Column("responded_at", sa.Double(), nullable=True),
        sa.Column("responded_by", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("answerer_sub", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name=op.f("fk_invitations_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("invitation_id", name=op.f("pk_invitations")),
    )
    op.create_index(
        op.f("ix_invitations_created_at_invitation_id"),
        "invitations",
        ["created_at", "invitation_id"],
    )
    op.create_index(
        op.f("ix_invitations_dept_created_at_invitation_id"),
        "invitations",
        ["dept", "created_at", "invitation_id"],
    )
    op.create_index(
        op.f("ix_invitations_dept_status_created_at_invitation_id"),
        "invitations",
        ["dept", "status", "created_at", "invitation_id"],
    )
    op.create_index(
        op.f("ix_invitations_session_id_created_at"), "invitations", ["session_id", "created_at"]
    )
    op.create_index(
        op.f("ix_invitations_status_created_at_invitation_id"),
        "invitations",
        ["status", "created_at", "invitation_id"],
    )

    op.create_table(
        "opinions",
        sa.Column("opinion_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("author", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("author_dept", sa.String(length=128), nullable=True),
        sa.Column("decision", sa.String(length=32), nullable=False),
        sa.Column("missing", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("refer_to", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name=op.f("fk_opinions_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("opinion_id", name=op.f("pk_opinions")),
    )
    op.create_index(
        op.f("ix_opinions_session_id_created_at"), "opinions", ["session_id", "created_at"]
    )

    op.create_table(
        "participants",
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("sub", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("dept", sa.String(length=128), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.Double(), nullable=False),
        sa.Column("disconnected_at", sa.Double(), nullable=True),
        sa.Column("left_at", sa.Double(), nullable=True),
        sa.Column("left_reason", sa.String(length=32), nullable=True),
        sa.Column("connections", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.session_id"],
            name=op.f("fk_participants_session_id_sessions"),
        ),
        sa.PrimaryKeyConstraint("participant_id", name=op.f("pk_participants")),
    )
    op.create_index(
        op.f("ix_participants_session_id_joined_at"), "participants", ["session_id", "joined_at"]
    )

    op.create_table(
        "snapshots",
        sa.Column("snapshot_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("taken_by", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name=op.f("fk_snapshots_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_snapshots")),
    )
    op.create_index(
        op.f("ix_snapshots_session_id_created_at"), "snapshots", ["session_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_snapshots_session_id_created_at"), table_name="snapshots")

    op.drop_table("snapshots")
    op.drop_index(op.f("ix_participants_session_id_joined_at"), table_name="participants")

    op.drop_table("participants")
    op.drop_index(op.f("ix_opinions_session_id_created_at"), table_name="opinions")

    op.drop_table("opinions")
    op.drop_index(op.f("ix_invitations_status_created_at_invitation_id"), table_name="invitations")
    op.drop_index(op.f("ix_invitations_session_id_created_at"), table_name="invitations")
    op.drop_index(
        op.f("ix_invitations_dept_status_created_at_invitation_id"), table_name="invitations"
    )
    op.drop_index(op.f("ix_invitations_dept_created_at_invitation_id"), table_name="invitations")
    op.drop_index(op.f("ix_invitations_created_at_invitation_id"), table_name="invitations")

    op.drop_table("invitations")
    op.drop_index(op.f("ix_chat_session_id_seq"), table_name="chat")

    op.drop_table("chat")
    op.drop_index(op.f("ix_sessions_window_created_at_session_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_created_at_session_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_case_id_created_at_session_id"), table_name="sessions")

    op.drop_table("sessions")
    op.drop_index(op.f("ix_events_session_id_seq"), table_name="events")

    op.drop_table("events")
    op.drop_table("cases")
