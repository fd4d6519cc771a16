"""The record: every case's history in SQL (SQLite embedded, PostgreSQL for many nodes).

The live ``Store`` keeps what is happening now; this package keeps what happened:
``schema`` (the tables), ``projection`` (event -> rows, pure), ``repo`` (``History``:
record and query), ``migrate`` (Alembic: upgrade and the start check). See
docs/history.md.
"""
