"""The incidents of the abuse rules: a filtered list, and one incident with its evidence,
its changes and where each was sent."""

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from psycopg.rows import dict_row

from xray_pipeline.api.deps import API_RESPONSES, IncidentId, PoolDep, clean, require_token, utc
from xray_pipeline.api.schemas import Incident, IncidentDetail, IncidentPage
from xray_pipeline.core.rules.incidents import CHANGES_QUERY, ONE_QUERY, IncidentFilter, list_query

router = APIRouter(
    prefix="/api/incidents",
    tags=["incidents"],
    dependencies=[Depends(require_token)],
    responses=API_RESPONSES,
)
RULES = ("ip_limit", "tagged", "rejected")


@router.get("", response_model=IncidentPage, summary="Incidents, newest first, filtered")
async def list_incidents(
    pool: PoolDep,
    open: Annotated[bool | None, Query(description="true: open only; false: closed")] = None,
    rule: Annotated[str | None, Query(pattern="^(ip_limit|tagged|rejected)$")] = None,
    user: Annotated[
        str | None,
        Query(max_length=320, description="the subject: a user, or a source for `rejected`"),
    ] = None,
    node: Annotated[
        str | None, Query(max_length=200, description="seen on this node (the evidence)")
    ] = None,
    from_: Annotated[
        dt.datetime | None, Query(alias="from", description="active at or after this time")
    ] = None,
    to: Annotated[dt.datetime | None, Query(description="opened at or before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> IncidentPage:
    filters = IncidentFilter(
        open=open,
        rule=rule,
        subject=clean(user),
        node=clean(node),
        since=utc("from", from_),
        until=utc("to", to),
    )
    page, count, params = list_query(filters, limit, offset)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(page, params)
        rows = await cur.fetchall()
        await cur.execute(count, params)
        total = (await cur.fetchone())["count"]
    return IncidentPage(items=[Incident(**r) for r in rows], total=total)


@router.get(
    "/{incident_id}",
    response_model=IncidentDetail,
    summary="One incident: its evidence, its changes and their notifications",
    responses={404: {"description": "no such incident"}},
)
async def one_incident(incident_id: IncidentId, pool: PoolDep) -> IncidentDetail:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(ONE_QUERY, {"id": incident_id})
        row = await cur.fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail=f"no incident {incident_id}")
        await cur.execute(CHANGES_QUERY, {"id": incident_id})
        changes = await cur.fetchall()
    return IncidentDetail(**row, changes=changes)
