"""The PostgreSQL the tests start themselves: reachable, writable, databases isolated."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from .postgres import Cluster, fresh_database

NOTES = sa.Table(
    "notes",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)


async def test_sqlalchemy_async_create_insert_select(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(NOTES.metadata.create_all)
            await conn.execute(sa.insert(NOTES), [{"text": "立案"}, {"text": "会审"}])
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(NOTES.c.text).order_by(NOTES.c.id))).all()
            version = (await conn.execute(sa.text("SHOW server_version_num"))).scalar_one()
        assert [r.text for r in rows] == ["立案", "会审"]
        assert int(version) >= 130000
        async with engine.begin() as conn:
            await conn.run_sync(NOTES.metadata.drop_all)
    finally:
        await engine.dispose()


async def test_asyncpg_directly(fresh_postgres_url: str) -> None:
    dsn = fresh_postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE t (k text PRIMARY KEY, v integer NOT NULL)")
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", [("a", 1), ("b", 2)])
        assert await conn.fetchval("SELECT sum(v) FROM t") == 3
    finally:
        await conn.close()


async def test_fresh_databases_are_empty_and_isolated(postgres_cluster: Cluster) -> None:
    with fresh_database(postgres_cluster) as url_a, fresh_database(postgres_cluster) as url_b:
        assert url_a != url_b
        first, second = create_async_engine(url_a), create_async_engine(url_b)
        try:
            async with first.begin() as conn:
                await conn.run_sync(NOTES.metadata.create_all)
                await conn.execute(sa.insert(NOTES), [{"text": "only here"}])
            async with second.connect() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            assert tables == []
            async with first.connect() as conn:
                query = sa.select(sa.func.count()).select_from(NOTES)
                assert (await conn.execute(query)).scalar() == 1
        finally:
            await first.dispose()
            await second.dispose()


def test_fresh_database_is_dropped_on_exit(postgres_cluster: Cluster) -> None:
    with fresh_database(postgres_cluster) as url:
        name = url.rsplit("/", 1)[1]
        assert name in postgres_cluster.databases()
    assert name not in postgres_cluster.databases()


def test_server_runs_unprivileged_listening_on_loopback_only(postgres_cluster: Cluster) -> None:
    data = postgres_cluster.data
    owner = data.stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0
    else:
        assert owner == os.geteuid()
    shown = postgres_cluster.client("psql", "-d", "postgres", "-Atc", "SHOW listen_addresses")
    assert shown.stdout.strip() == "127.0.0.1"
    assert Path(postgres_cluster.sockets, f".s.PGSQL.{postgres_cluster.port}").exists()
