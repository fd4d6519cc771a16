"""The record's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

The live store keeps what is happening now; these tables keep what happened, for years:
every case event (``events``, the timeline as ``append_event`` filed it) and the rows
the events imply (sessions, invitations and their answers, participants' presence, chat,
opinions, stills' facts). Rows are written only by ``projection`` through ``repo``.
Times are UNIX seconds (double precision), as in the events. JSON columns hold actors
(``{sub, name, role, dept, level}``) and event data.

The indexes follow the supervisors' queries (docs/history.md says which serves which).
The initial Alembic revision creates exactly this; a test compares the two.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

# Names of constraints and indexes fixed by convention, so migrations can name them.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSON = sa.JSON(none_as_null=True)  # None is SQL NULL, not the JSON text "null"
ID = sa.String(128)  # ids, subs and departments (a token's claims allow at most 128)
TIME: sa.Double[float] = sa.Double()


def _session_fk() -> sa.ForeignKey:
    return sa.ForeignKey("sessions.session_id")


cases = sa.Table(
    "cases",
    metadata,
    sa.Column("case_id", ID, primary_key=True),
    sa.Column("created_at", TIME, nullable=False),  # the case's first event
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", ID, primary_key=True),
    sa.Column("case_id", ID, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active, ended
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", JSON, nullable=False),
    sa.Column("creator_sub", ID, nullable=False),
    sa.Column("applicant_name", sa.Text),
    sa.Column("matter", sa.Text),
    sa.Column("window", sa.String(100)),
    sa.Column("ended_at", TIME),
    sa.Column("ended_by", JSON),  # null: ended by the system (broken off)
    sa.Column(
        "end_reason", sa.String(32)
    ),  # "broken_off" when the system ended it ("idle" before #15)
    sa.Column("duration_s", TIME),  # ended_at - created_at
    # From archive.sealed: the case file's manifest as the store vouched for it.
    sa.Column("sealed_at", TIME),
    sa.Column("manifest_sha256", sa.String(64)),
    sa.Column("chain_head", sa.String(64)),
    sa.Index(None, "case_id", "created_at", "session_id"),
    sa.Index(None, "created_at", "session_id"),
    sa.Index(None, "window", "created_at", "session_id"),
    # The statistics (signaling/history/stats.py), each read in the index's order (no
    # sort): the durations' ranks, overall and by window (the counts: stats_sessions).
    sa.Index("ix_sessions_duration", "duration_s", "created_at", "window"),
    sa.Index("ix_sessions_window_duration", "window", "duration_s", "created_at"),
)


invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("invitation_id", ID, primary_key=True),
    sa.Column("session_id", ID, _session_fk(), nullable=False),
    sa.Column("case_id", ID, nullable=False),
    sa.Column("dept", ID),  # exactly one of dept / reviewer
    sa.Column("level", sa.String(16)),
    sa.Column("reviewer", ID),
    sa.Column("reviewer_name", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", JSON),
    sa.Column("rang_at", TIME),
    sa.Column("unanswered_at", TIME),
    sa.Column("responded_at", TIME),  # accepted, declined or cancelled
    sa.Column("responded_by", JSON),
    sa.Column("answer_s", TIME),  # accepted or declined: responded_at - created_at
    sa.Column("answerer_sub", ID),
    sa.Column("reason", sa.Text),
    sa.Column("note", sa.Text),
    sa.Index(None, "session_id", "created_at"),
    sa.Index(None, "dept", "status", "created_at", "invitation_id"),
    sa.Index(None, "dept", "created_at", "invitation_id"),
    sa.Index(None, "status", "created_at", "invitation_id"),
    sa.Index(None, "created_at", "invitation_id"),
    # The statistics (signaling/history/stats.py): the answers' ranks by department, in
    # the index's order (the counts: stats_invitations, stats_hours).
    sa.Index("ix_invitations_answer", "dept", "answer_s", "created_at", "session_id"),
)


participants = sa.Table(
    "participants",
    metadata,
    sa.Column("participant_id", ID, primary_key=True),
    sa.Column("session_id", ID, _session_fk(), nullable=False),
    sa.Column("sub", ID, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("dept", ID),
    sa.Column("level", sa.String(16)),
    sa.Column("state", sa.String(16), nullable=False),  # joined, disconnected, left
    sa.Column("joined_at", TIME, nullable=False),
    sa.Column("disconnected_at", TIME),
    sa.Column("left_at", TIME),
    sa.Column("left_reason", sa.String(32)),  # left, connection_lost, session_ended
    sa.Column("connections", sa.Integer, nullable=False),  # joins, rejoins and resumes
    sa.Index(None, "session_id", "joined_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("case_id", ID, sa.ForeignKey("cases.case_id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", TIME, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("session_id", ID),
    sa.Column("actor", JSON),
    sa.Column("data", JSON, nullable=False),
    sa.Index(None, "session_id", "seq"),
)

chat = sa.Table(
    "chat",
    metadata,
    sa.Column("case_id", ID, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("session_id", ID, _session_fk(), nullable=False),
    sa.Column("participant_id", ID),
    sa.Column("sender", JSON),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("ts", TIME, nullable=False),
    sa.ForeignKeyConstraint(["case_id", "seq"], ["events.case_id", "events.seq"]),
    sa.Index(None, "session_id", "seq"),
)

opinions = sa.Table(
    "opinions",
    metadata,
    sa.Column("opinion_id", ID, primary_key=True),
    sa.Column("session_id", ID, _session_fk(), nullable=False),
    sa.Column("case_id", ID, nullable=False),
    sa.Column("author", JSON, nullable=False),
    sa.Column("author_dept", ID),
    sa.Column("decision", sa.String(32), nullable=False),
    sa.Column("missing", JSON, nullable=False),
    sa.Column("refer_to", ID),
    sa.Column("note", sa.Text),
    sa.Column("created_at", TIME, nullable=False),
    sa.Index(None, "session_id", "created_at"),
    # Covering the statistics' edges of a period, less than a day (signaling/history/
    # stats.py; whole days are counted in stats_opinions).
    sa.Index("ix_opinions_period", "created_at", "author_dept", "decision", "session_id"),
)

# A still's facts; its file stays in the case file (its path is never in the record).
snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("snapshot_id", ID, primary_key=True),
    sa.Column("session_id", ID, _session_fk(), nullable=False),
    sa.Column("case_id", ID, nullable=False),
    sa.Column("taken_by", JSON, nullable=False),
    sa.Column("content_type", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Index(None, "session_id", "created_at"),
)

# What went wrong, raised as the events that show it are filed (signaling/history/
# raising.py) in the same transaction; handled by a supervisor (``exception.handled``).
# No foreign key: a session's rows are rebuilt when events arrive late, its exceptions stay.
exceptions = sa.Table(
    "exceptions",
    metadata,
    sa.Column("exception_id", sa.String(64), primary_key=True),  # from the raising event
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("case_id", ID, nullable=False),
    sa.Column("session_id", ID, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the event that raised it
    sa.Column("dept", ID),
    sa.Column("at", TIME, nullable=False),
    sa.Column("detail", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open, handled
    sa.Column("handled_by", JSON),
    sa.Column("handled_at", TIME),
    sa.Column("note", sa.Text),
    sa.Index(None, "at", "exception_id"),
    sa.Index(None, "status", "at", "exception_id"),
    sa.Index(None, "kind", "at", "exception_id"),
    sa.Index(None, "dept", "at", "exception_id"),
    sa.Index(None, "session_id", "at"),
)


# The statistics' counts (signaling/history/tally.py): a projection of the rows above,
# kept in the write transaction as the events that change them are filed, so a year's
# counts sum a few thousand rows. ``day``/``hour``: UTC, as ``floor(created_at / 86400)``
# (or 3600) of the session, invitation or opinion. ``scope``: ``""`` every row,
# ``d:<dept>`` a department's share (the sessions it was invited to, its invitations and
# opinions), ``w:<window>`` a window's. Keys hold ``""`` for none (they cannot be NULL).
def _tally(name: str, *columns: sa.Column[Any] | sa.Index) -> sa.Table:
    keys = [c.name for c in columns if isinstance(c, sa.Column) and c.primary_key]
    return sa.Table(
        name,
        metadata,
        *columns,
        sa.PrimaryKeyConstraint(*keys),
        sqlite_with_rowid=False,  # the key is the table: a period's rows in one range
    )


def _key(name: str, type_: Any = ID) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=False, primary_key=True)


def _count(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger, nullable=False)


SCOPE = sa.String(140)  # "d:" or "w:" + an id (128) or a window (100)

stats_sessions = _tally(
    "stats_sessions",
    _key("scope", SCOPE),
    _key("day", sa.Integer),
    _key("window", sa.String(100)),
    _key("matter", sa.Text),
    _count("sessions"),
    _count("ended"),
    _count("broken_off"),
)
stats_invitations = _tally(
    "stats_invitations",
    _key("scope", SCOPE),
    _key("day", sa.Integer),
    _key("dept"),
    _key("level", sa.String(16)),
    _key("outcome", sa.String(16)),  # accepted, declined, unanswered, cancelled, open
    _count("n"),
)
stats_opinions = _tally(
    "stats_opinions",
    _key("scope", SCOPE),
    _key("day", sa.Integer),
    _key("dept"),
    _key("decision", sa.String(32)),
    _count("n"),
)
stats_hours = _tally(  # by_day's measures, by hour: any time zone of whole hours
    "stats_hours",
    _key("scope", SCOPE),
    _key("hour", sa.Integer),
    _count("sessions"),
    _count("invitations"),
    _count("accepted"),
    _count("unanswered"),
)

# The values the percentiles rank where no row's own index holds them in order: the
# durations of the sessions a department was invited to (scope ``d:<dept>``, group: the
# window), the answers' times of a window's invitations (``w:<window>``, group: the
# department). ``ref``: the session or invitation; ``at``: its creation.
stats_values = _tally(
    "stats_values",
    _key("scope", SCOPE),
    _key("measure", sa.String(16)),  # duration, answer
    _key("ref", ID),
    sa.Column("grp", sa.String(128), nullable=False),
    sa.Column("value", TIME, nullable=False),
    sa.Column("at", TIME, nullable=False),
    sa.Index(None, "scope", "measure", "value", "at"),
    sa.Index(None, "scope", "measure", "grp", "value", "at"),
)

TABLES = {t.name: t for t in metadata.sorted_tables}
