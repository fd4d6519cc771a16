"""Records governance on a node (#18): the retention purge as a cleanup context.

Every node runs the purge (``signaling/retention.py``); the store's claims make each
item go once. Its events are filed like any other (``ServiceCore.record``: the record,
webhooks), with the service's clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from signaling.appkeys import CONFIG, HISTORY, NODE_ID, SERVICE, STORE
from signaling.retention import EVENT, RETENTION, Periods, Retention


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    service = app[SERVICE]

    async def file_event(case_id: str, session_id: str, data: dict[str, Any]) -> int:
        event = await service.record(case_id, EVENT, session_id=session_id, **data)
        return int(event.seq)

    retention = app[RETENTION] = Retention(
        app[STORE],
        config.data_dir / "archive",
        Periods.of(config),
        file_event,
        lambda: service.clock(),  # the service's, read each time: tests move it
        app[NODE_ID],
        every_s=config.retention_every_s,
        record=app[HISTORY],
    )
    retention.start()
    yield
    await retention.close()
