"""Response models of the sidecar API (what /docs and the OpenAPI schema show)."""

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class Window(BaseModel):
    """A response about a time window [from, to)."""

    model_config = ConfigDict(populate_by_name=True)

    from_: dt.datetime | None = Field(alias="from", description="start, inclusive")
    to: dt.datetime | None = Field(description="end, exclusive")


class LogItem(BaseModel):
    ts: dt.datetime
    status: str
    src_ip: str | None = Field(
        description="source address, or its text when not an IP (a masked network, a keyed "
        "hash, a socket)"
    )
    country: str | None = Field(None, description="the source's country, when placed")
    asn: int | None = Field(None, description="the source's network, when placed")
    dest_country: str | None = Field(
        None, description="the destination's country, when it is an address that is placed"
    )
    dest_asn: int | None = Field(None, description="the destination's network, likewise")
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


class CountryCount(BaseModel):
    country: str = Field(description="ISO 3166 code, as the country database has it")
    connections: int


class NetworkCount(BaseModel):
    asn: int
    org: str | None = Field(description="the organisation, as the ASN database names it")
    connections: int


class TopCountries(BaseModel):
    items: list[CountryCount] = Field(description="the top countries by connections")
    other: int = Field(description="connections from the placed countries beyond the top")
    unknown: int = Field(
        description="connections whose source has no country: no database, a source that is "
        "not an address, or one the database does not know"
    )
    distinct: int = Field(description="how many countries the window's sources are in")


class TopNetworks(BaseModel):
    items: list[NetworkCount] = Field(description="the top networks (ASNs) by connections")
    other: int = Field(description="connections from the placed networks beyond the top")
    unknown: int = Field(description="connections whose source has no ASN")
    distinct: int = Field(description="how many networks the window's sources are in")


EMPTY_COUNTRIES = TopCountries(items=[], other=0, unknown=0, distinct=0)
EMPTY_NETWORKS = TopNetworks(items=[], other=0, unknown=0, distinct=0)


class Stats(Window):
    connections: int
    accepted: int
    rejected: int
    unique_users: int
    protocols: dict[str, int]
    inbound_tags: dict[str, int]
    outbound_tags: dict[str, int]
    countries: TopCountries = Field(description="where the connections come from")
    networks: TopNetworks = Field(description="the networks (ASNs) they come from")
    geoip: str | None = Field(
        description="the database builds that placed the sources (`xray-pipeline-synthetic` "
        "in the demo: made-up places)"
    )
    days_from_rollups: int = Field(description="whole past days read from the rollups")

    @classmethod
    def empty(cls, lo: dt.datetime | None, hi: dt.datetime | None) -> "Stats":
        zero = dict.fromkeys(("connections", "accepted", "rejected", "unique_users"), 0)
        return cls(from_=lo, to=hi, **zero, protocols={}, inbound_tags={}, outbound_tags={},
                   countries=EMPTY_COUNTRIES, networks=EMPTY_NETWORKS, geoip=None,
                   days_from_rollups=0)  # fmt: skip


class SeriesPoint(BaseModel):
    t: dt.datetime
    connections: int
    rejected: int


class Series(BaseModel):
    bucket: str
    timezone: str | None = None
    points: list[SeriesPoint]


class Freshness(BaseModel):
    newest_row: dt.datetime | None
    lag_seconds: float | None = Field(description="age of the newest row (the ingest lag)")


class UserItem(BaseModel):
    email: str | None
    connections: int
    last_seen: dt.datetime | None
    source_ips: int


class UserPage(BaseModel):
    items: list[UserItem]
    total: int


class SourceIp(BaseModel):
    ip: str | None = Field(
        description="the source as stored: an address, a masked network or a keyed hash"
    )
    country: str | None = None
    asn: int | None = None
    as_org: str | None = None
    connections: int
    first_seen: dt.datetime
    last_seen: dt.datetime


class Destination(BaseModel):
    host: str
    port: int | None
    connections: int


class Session(BaseModel):
    start: dt.datetime
    end: dt.datetime
    connections: int


class UserDetail(Window):
    email: str
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    connections: int
    source_ips: list[SourceIp]
    countries: list[CountryCount] = Field(description="the window's countries, most used first")
    networks: list[NetworkCount] = Field(description="the window's networks, most used first")
    top_destinations: list[Destination]
    sessions: list[Session] = Field(description="newest first, at most 200")


class UserIps(Window):
    email: str
    window_minutes: int
    distinct_ips: int
    distinct_countries: int
    distinct_networks: int
    ips: list[SourceIp]


class NodeStatus(BaseModel):
    """A registered node of the fleet."""

    name: str
    created_at: dt.datetime
    last_contact: dt.datetime | None = Field(description="the last time its shipper called")
    newest_line: dt.datetime | None = Field(description="the newest line loaded from it")
    lag_seconds: float | None = Field(description="now minus newest_line")
    lines_today: int = Field(description="lines loaded today (local day)")
    bytes_today: int = Field(description="bytes loaded today (local day)")
    lines_loaded: int = Field(description="lines loaded since the node was registered")
    bytes_loaded: int = Field(description="bytes loaded since the node was registered")
    bytes_waiting: int = Field(description="bytes landed at the center, not loaded yet")
    shipper_version: str | None


class Health(BaseModel):
    status: str


class Incident(BaseModel):
    """A breach of an abuse rule: one episode, updated while it lasts."""

    id: int
    rule: str = Field(description="ip_limit, tagged or rejected")
    subject: str = Field(description="the user (ip_limit, tagged) or the source (rejected)")
    state: str = Field(description="open or closed")
    opened_at: dt.datetime
    last_seen: dt.datetime = Field(description="the last row over the limit")
    closed_at: dt.datetime | None
    peak: int = Field(description="the highest count within the rule's window")
    limit: int
    acknowledged_at: dt.datetime | None
    nodes: list[str] = Field(description="the nodes the evidence was seen on")
    units: int = Field(description="how many distinct sources (or tags) the evidence holds")


class IncidentPage(BaseModel):
    items: list[Incident]
    total: int


class IncidentChange(BaseModel):
    change: str = Field(description="opened, escalated or closed")
    at: dt.datetime
    peak: int
    deliveries: list[dict] = Field(
        description="per target (webhook, telegram, command): status, attempts, sent_at, last_error"
    )


class IncidentDetail(Incident):
    evidence: list[dict] = Field(
        description="at the peak, per unit (a source, prefix or ASN; for tagged traffic a "
        "tag): sources, nodes, country, asn, first_seen, last_seen, connections"
    )
    action: dict | None = Field(description="what on_open_command did (or would have: dry run)")
    changes: list[IncidentChange]
