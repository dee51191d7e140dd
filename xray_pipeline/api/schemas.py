"""Response models of the sidecar API."""

import datetime as dt

from pydantic import BaseModel, Field


class LogItem(BaseModel):
    ts: dt.datetime
    status: str
    src_ip: str | None = Field(description="source address, or its text when not an IP")
    src_port: int | None
    src_network: str | None
    dest_network: str | None
    dest_host: str | None
    dest_port: int | None
    dest_url: str | None
    inbound_tag: str | None
    outbound_tag: str | None
    email: str | None
    reason: str | None
    node: str | None
    source: str
    byte_offset: int


class LogPage(BaseModel):
    items: list[LogItem]
    total: int
    total_is_estimate: bool = Field(
        description="true when the count was too large to make exactly and is the planner's"
    )
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page")


class Health(BaseModel):
    status: str
