"""The fleet's nodes as the API shows them: the registry and the ledger (node_status.sql) with
what the landing folder says (last contact, shipper version, bytes waiting)."""

import datetime as dt
from pathlib import Path

from psycopg.rows import dict_row

from xray_pipeline.api.schemas import NodeStatus
from xray_pipeline.core.db.migrations import load_query
from xray_pipeline.core.fleet.landing import last_contact, waiting_bytes

NODE_STATUS = load_query("node_status")


async def node_status(pool, timezone: str, root: Path | None) -> list[NodeStatus]:
    """Every registered node's status (for /api/nodes and /metrics)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(NODE_STATUS, {"tz": timezone})
        rows = await cur.fetchall()
    now = dt.datetime.now(dt.UTC)
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
