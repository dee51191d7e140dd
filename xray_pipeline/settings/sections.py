"""One model per config.ini section: each setting's type, default, help and variables."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from xray_pipeline.settings.values import (
    Bool,
    Bytes,
    CountBy,
    DatabaseUrl,
    Day,
    DestinationMode,
    Fraction,
    LogLevel,
    Names,
    NonNegativeInt,
    Port,
    PositiveInt,
    Prefix,
    Seconds,
    Secret,
    SourceIpMode,
    StatsFormat,
    Text,
    TimeZone,
)


def setting(default: Any, help: str, *, env: tuple[str, ...] = ()) -> Any:
    """A field with its help text and, where it is not XRAY_<SECTION>_<KEY>, its variables."""
    return Field(default, description=help, json_schema_extra={"env": list(env)} if env else None)


# --------------------------------------------------------------------------- the sections


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PostgresqlSettings(Section):
    """The database the pipeline loads into (unset host and url: the embedded server)."""

    host: Text | None = setting(None, "PostgreSQL host (unset: embedded server)")
    port: Port = setting(5432, "PostgreSQL port")
    dbname: Text = setting("xray", "database name")
    user: Text = setting("postgres", "database user")
    password: Secret | None = setting(None, "database password")
    url: DatabaseUrl | None = setting(
        None,
        "full database URL; wins over host/port/dbname/user/password",
        env=("XRAY_DATABASE_URL", "DATABASE_URL"),
    )


class ParserSettings(Section):
    """The access logs and how they are read."""

    logfile: Names = setting((), "access log files or globs, comma separated")
    offline_file: Text | None = setting(
        None, "spool folder used while PostgreSQL is down (default: XRAY_HOME/spool)"
    )
    batch_size: Bytes = setting(4 * 1024 * 1024, "bytes read per chunk (4M, 8M)")
    spool_max_mb: PositiveInt = setting(
        1024, "size limit of the offline spool; when full, ingestion pauses"
    )
    timezone: TimeZone = setting(
        "UTC", "zone of the Xray process clock (Xray writes local time without a zone)"
    )
    node: Text | None = setting(None, "node name stored with every row of these files")


class StatsSettings(Section):
    """The statistics each ingest run appends."""

    format: StatsFormat = setting("json", "run statistics format: json or csv")
    output: Text | None = setting(
        None, "run statistics file (default: XRAY_HOME/stats.jsonl or .csv; - for stdout)"
    )


class MigrationSettings(Section):
    """`xray-pipeline migrate` from the original tool's table."""

    drop_old: Bool = setting(False, "drop the legacy table after migrating")


class DagsterSettings(Section):
    """The Dagster code location: partitions, sensor, run size."""

    start_date: Day | None = setting(
        None,
        "first day of the daily partitions (unset: the first day of the logs, recorded by the "
        "first `up` or `demo`); older lines go to that day's partition",
    )
    database: Text = setting("dagster", "database of Dagster's own storage")
    sensor_interval: PositiveInt = setting(5, "seconds between sensor ticks")
    max_run_bytes: Bytes = setting(64 * 1024 * 1024, "largest byte range one sensor run loads")
    load_workers: PositiveInt = setting(
        2,
        "batches a run prepares at once while the one before commits (one PostgreSQL "
        "connection each, and one that commits)",
    )
    tail_minutes: NonNegativeInt = setting(
        60,
        "minutes a tail run of the current day lives, loading new lines as they come, before "
        "the sensor starts the next (0: no tail runs, the sensor requests a run per batch)",
    )
    tail_poll_seconds: Seconds = setting(
        1.0, "seconds between a tail run's looks at the files (the floor of the ingest lag)"
    )
    run_retention_days: PositiveInt = setting(
        7, "days Dagster keeps a finished run and its events (the data stays)"
    )


class RetentionSettings(Section):
    """How long rows are kept (the maintenance schedule)."""

    raw_days: PositiveInt | None = setting(
        None,
        "days of raw data kept: log rows, DNS lines and rejects, and the landed bytes and spool "
        "segments as old (unset: all; the rollups keep rollup_days)",
    )
    days: PositiveInt | None = setting(None, "the former name of raw_days (used when it is unset)")
    rollup_days: PositiveInt | None = setting(None, "days of rollups kept (unset: all)")
    ahead_days: PositiveInt = setting(3, "days of partitions created ahead")
    landed_days: PositiveInt = setting(
        30, "days the nodes' landed bytes are kept once loaded (at most [retention] raw_days)"
    )
    hot_days: PositiveInt | None = setting(
        14,
        "days a day's rows stay in PostgreSQL; an older day whose archive is verified leaves "
        "it (the rollups stay; unset, or [archive] enabled = false: every day stays)",
    )


class ArchiveSettings(Section):
    """The Parquet archive of closed days."""

    enabled: Bool = setting(True, "write each closed day to the archive (the logs_archive asset)")
    url: Text | None = setting(
        None,
        "folder or object-store URL (s3://, gs://, az://: Polars reads it, fsspec and its "
        "backend, e.g. s3fs, write it) of the archive (default: <home>/archive)",
    )


class GeoipSettings(Section):
    """Country and network (ASN) of addresses, from local MaxMind-format (.mmdb) files."""

    country_db: Text | None = setting(
        None, "country database (.mmdb: DB-IP Lite, ip-location-db, GeoLite2); unset: none"
    )
    asn_db: Text | None = setting(None, "ASN database (.mmdb); unset: none")


class PrivacySettings(Section):
    """What a stored row keeps of who connected and where to (applies to rows loaded from
    then on; `privacy apply` rewrites older days)."""

    source_ip: SourceIpMode = setting(
        "full",
        "full: the address; mask: its network only (ipv4_prefix, ipv6_prefix); hash: a keyed "
        "hash (distinct addresses still count, no address is stored; needs secret)",
    )
    ipv4_prefix: Prefix = setting(24, "bits of an IPv4 source kept by source_ip = mask")
    ipv6_prefix: Prefix = setting(48, "bits of an IPv6 source kept by source_ip = mask")
    destination: DestinationMode = setting(
        "full",
        "full: host and port; domain: the registrable domain only (www.video.example.co.uk: "
        "example.co.uk; addresses stay); none: no destination",
    )
    secret: Secret | None = setting(
        None,
        "key of source_ip = hash (at least 16 characters; from the environment, never in a file "
        "in a repository); changing it changes every hash",
        env=("XRAY_PRIVACY_SECRET",),
    )


class RulesSettings(Section):
    """The abuse rules: each load's rows are judged against them, and what breaches one is an
    incident (`xray-pipeline incidents`, /api/incidents); per-user IP limits with
    `xray-pipeline limits`."""

    evaluate: Bool = setting(True, "judge each load's rows against the rules (false: rules off)")
    ip_limit: PositiveInt = setting(
        3, "distinct sources one user may use within ip_window_minutes (`limits set` per user)"
    )
    ip_window_minutes: PositiveInt = setting(10, "the IP limit's sliding window")
    ip_count_by: CountBy = setting(
        "prefix",
        "what counts as one source: address, prefix (IPv4 /24, IPv6 /64: a phone moving "
        "between cells stays one) or asn (needs [geoip] asn_db)",
    )
    watched_tags: Names = setting(("TORRENT",), "outbound tags whose traffic is watched")
    tagged_limit: PositiveInt = setting(
        20, "connections one user may route to a watched tag within tagged_window_minutes"
    )
    tagged_window_minutes: PositiveInt = setting(10, "the tagged traffic's sliding window")
    rejected_limit: PositiveInt = setting(
        100, "rejected connections one source may make within rejected_window_minutes"
    )
    rejected_window_minutes: PositiveInt = setting(5, "the rejected storm's sliding window")
    quiet_minutes: PositiveInt = setting(
        30, "an incident closes once its condition has not held for this long"
    )
    on_open_command: Text | None = setting(
        None,
        "a command run once per opened incident, the incident as JSON on its stdin (call a "
        "panel's API to disable the user); its output is kept with the incident",
    )
    on_open_dry_run: Bool = setting(
        True, "keep what on_open_command would have been given, without running it"
    )


class AlertsSettings(Section):
    """Where the incidents' changes (opened, escalated, closed) are sent, once each."""

    webhook_url: Text | None = setting(
        None, "POST each change as JSON (schema version 1, docs/alerts.md) to this URL"
    )
    webhook_secret: Secret | None = setting(
        None,
        "key of the X-Xray-Signature header (HMAC-SHA256 of the body); from the environment",
    )
    telegram_token: Secret | None = setting(
        None, "Telegram bot token (sendMessage)", env=("XRAY_TELEGRAM_BOT_TOKEN",)
    )
    telegram_chat_id: Text | None = setting(
        None, "the chat the bot writes to", env=("XRAY_TELEGRAM_CHAT_ID",)
    )
    telegram_api: Text = setting("https://api.telegram.org", "the Bot API's address")
    attempts: PositiveInt = setting(
        5, "failed sends of one change to one target before it goes to the dead letter"
    )
    backoff_seconds: Seconds = setting(10, "wait after a first failure, doubled after each")
    cooldown_minutes: NonNegativeInt = setting(
        10, "least time between two messages about one incident to one target"
    )
    max_age_minutes: PositiveInt = setting(
        60, "changes older than this (a backfill's) are kept as stale, not sent"
    )
    timeout_seconds: Seconds = setting(10, "time limit of one send")


class ChecksSettings(Section):
    """The thresholds of the asset checks."""

    reject_rate: Fraction = setting(0.05, "share of rejected lines that warns")
    freshness_minutes: PositiveInt = setting(
        15, "newest row older than this while the log is written fails the freshness check"
    )
    node_silence_minutes: PositiveInt = setting(
        15, "a registered node that has not called the center for this long warns"
    )


class ApiSettings(Section):
    """The FastAPI sidecar."""

    token: Secret | None = setting(
        None, "bearer token required on /api routes (unset: open)", env=("XRAY_API_TOKEN",)
    )
    admin_token: Secret | None = setting(
        None,
        "bearer token of the admin routes (a user's export and erasure); unset: those routes "
        "are off",
        env=("XRAY_API_ADMIN_TOKEN",),
    )
    cors_origins: Names = setting((), "origins allowed by CORS (none by default)")
    database_url: DatabaseUrl | None = setting(
        None, "the sidecar's own (read-only) connection; default: the xray_api role"
    )
    statement_timeout_ms: PositiveInt = setting(5000, "per-query time limit")
    max_range_bytes: Bytes = setting(
        16 * 1024 * 1024, "largest byte range a node may ship in one request (inflated)"
    )


class ShipSettings(Section):
    """`xray-pipeline ship` on a node of a fleet: where to send its logs, as whom."""

    central: Text | None = setting(
        None, "the center's API address, e.g. https://center.example:8000"
    )
    node: Text | None = setting(
        None, "this node's name, as registered by `nodes add` at the center"
    )
    token: Secret | None = setting(
        None, "this node's token (better: a token_file readable by the shipper only)",
        env=("XRAY_SHIP_TOKEN",),
    )  # fmt: skip
    token_file: Text | None = setting(None, "file holding this node's token")
    spool_max_mb: PositiveInt = setting(
        512, "size limit of the node's spool of unsent ranges; when full, reading pauses"
    )
    max_range_bytes: Bytes = setting(
        4 * 1024 * 1024,
        "largest range sent in one request (the center takes up to [api] max_range_bytes)",
    )
    interval: Seconds = setting(1.0, "seconds between looks at the files")


class GeneralSettings(Section):
    """The state folder and logging."""

    home: Text = setting(
        ".xray", "state folder: embedded database, spool, stats", env=("XRAY_HOME",)
    )
    log_level: LogLevel = setting("INFO", "log level", env=("XRAY_LOG_LEVEL",))


def env_names(section: str, key: str, info: FieldInfo) -> tuple[str, ...]:
    """The environment variables of a setting, first one winning."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return tuple(extra.get("env") or (f"XRAY_{section.upper()}_{key.upper()}",))
