"""The fleet's nodes: which ship, how fresh their newest line is, what they sent today."""

from fastapi import APIRouter, Depends, Request

from xray_pipeline.api.deps import API_RESPONSES, PoolDep, TimezoneDep, require_token
from xray_pipeline.api.queries.nodes import node_status
from xray_pipeline.api.schemas import NodeStatus

router = APIRouter(
    prefix="/api/nodes",
    tags=["nodes"],
    dependencies=[Depends(require_token)],
    responses=API_RESPONSES,
)


@router.get(
    "",
    response_model=list[NodeStatus],
    summary="Registered nodes: last contact, newest line, lag, today's lines and bytes, backlog",
)
async def list_nodes(request: Request, pool: PoolDep, timezone: TimezoneDep) -> list[NodeStatus]:
    return await node_status(pool, timezone, request.app.state.landing_dir)
