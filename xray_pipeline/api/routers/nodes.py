"""The fleet's nodes: which ship, how fresh their newest line is, what they sent today."""

import datetime as dt

from fastapi import APIRouter, Depends, Request
from psycopg.rows import dict_row

from xray_pipeline.api.deps import API_RESPONSES, PoolDep, TimezoneDep, require_token
from xray_pipeline.api.schemas import NodeStatus
from xray_pipeline.core.db.migrations import load_query
from xray_pipeline.core.fleet.landing import last_contact, waiting_bytes

router = APIRouter(
    prefix="/api/nodes",
    tags=["nodes"],
    dependencies=[Depends(require_token)],
    responses=API_RESPONSES,
)
NODE_STATUS = load_query("node_status")


@router.get(
    "",
    response_model=list[NodeStatus],
    summary="Registered nodes: last contact, newest line, lag, today's lines and bytes, backlog",
)
async def list_nodes(request: Request, pool: PoolDep, timezone: TimezoneDep) -> list[NodeStatus]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(NODE_STATUS, {"tz": timezone})
        rows = await cur.fetchall()
    now = dt.datetime.now(dt.UTC)
    root = request.app.state.landing_dir
    items = []
    for row in rows:
        loaded = row.pop("loaded_by_path")
        contact, version = (None, None) if root is None else last_contact(root, row["name"])
        waiting = 0 if root is None else waiting_bytes(root, row["name"], loaded)
        newest = row["newest_line"]
        items.append(
            NodeStatus(
                **row,
                bytes_waiting=waiting,
                last_contact=contact,
                shipper_version=version,
                lag_seconds=None if newest is None else (now - newest).total_seconds(),
            )
        )
    return items
