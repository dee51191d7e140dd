"""Dagster resources: the PostgreSQL database, the configured log files, the rules."""

from pathlib import Path

import dagster as dg
import psycopg

from xray_pipeline.core.alerts.targets import AlertTargets
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.session import database_url
from xray_pipeline.core.fleet.landing import landed_files
from xray_pipeline.core.ingest.files import expand_paths
from xray_pipeline.core.ingest.loader import Loader
from xray_pipeline.core.privacy.policy import RowPolicy, open_geoip
from xray_pipeline.core.rules.evaluate import RulesConfig
from xray_pipeline.settings import load_settings, normalize_url


class PostgresResource(dg.ConfigurableResource):
    """The xray-pipeline database: `url`, else the settings (config.ini, XRAY_DATABASE_URL),
    else the embedded server (started when needed)."""

    url: str | None = None
    timezone: str = "UTC"
    batch_size: int = 4 * 1024 * 1024
    load_workers: int = 2
    country_db: str | None = None
    asn_db: str | None = None
    source_ip: str = "full"
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    destination: str = "full"
    privacy_secret: str | None = None

    def policy(self) -> RowPolicy:
        """What the rows keep ([privacy]) and the databases that place their addresses
        ([geoip]), as the loads of this run apply them."""
        return RowPolicy(
            source_ip=self.source_ip,
            ipv4_prefix=self.ipv4_prefix,
            ipv6_prefix=self.ipv6_prefix,
            destination=self.destination,
            secret=self.privacy_secret.encode() if self.privacy_secret else None,
            geoip=open_geoip(self.country_db, self.asn_db),
        )

    def loader(self, run_id: str | None = None) -> Loader:
        """Loads a run's ranges, `load_workers` sources at a time (core.ingest.Loader)."""
        return Loader(
            lambda: self.connect(upgrade=False),
            workers=self.load_workers,
            timezone=self.timezone,
            batch_size=self.batch_size,
            run_id=run_id,
            policy=self.policy(),
        )

    def database_url(self) -> str:
        if self.url:
            return normalize_url(self.url)
        return database_url(load_settings())

    def connect(self, *, upgrade: bool = True, timeout: int = 5) -> psycopg.Connection:
        conn = connect(self.database_url(), origin="PostgresResource", timeout=timeout)
        if upgrade:
            apply_migrations(conn)
            conn.commit()
        return conn


class LogSourcesResource(dg.ConfigurableResource):
    """The access logs to watch: files or globs, each optionally `NODE=PATH` to name the
    server it comes from (multi-server setups); `node` is the default node name. The node is
    stored with the file's source, so every row of that file carries it."""

    paths: list[str] = []  # noqa: RUF012 (pydantic copies defaults)
    node: str | None = None
    max_run_bytes: int = 64 * 1024 * 1024
    landing_dir: str | None = None

    def entries(self) -> list[tuple[Path, str | None]]:
        """(file, node) for every configured file, globs expanded, and every file that the
        fleet's nodes landed (their node: the folder's name)."""
        found: list[tuple[Path, str | None]] = []
        for entry in self.paths:
            node, sep, pattern = entry.partition("=")
            if not sep or "/" in node:
                node, pattern = self.node, entry
            found.extend((path, node or self.node) for path in expand_paths([pattern]))
        if self.landing_dir:
            found.extend(landed_files(Path(self.landing_dir)))
        return list(dict.fromkeys(found))

    def files(self) -> list[Path]:
        return [path for path, _ in self.entries()]


class OfflineSpoolResource(dg.ConfigurableResource):
    """The offline spool: JSONL segments written while PostgreSQL was unreachable."""

    path: str
    max_age_minutes: int = 60

    def folder(self) -> Path:
        return Path(self.path)


class RulesResource(dg.ConfigurableResource):
    """The abuse rules ([rules]) and where their incidents are sent ([alerts]); secrets come
    as environment variables, so the UI shows their names only."""

    evaluate: bool = True
    ip_limit: int = 3
    ip_window_minutes: int = 10
    ip_count_by: str = "prefix"
    watched_tags: list[str] = ["TORRENT"]  # noqa: RUF012 (pydantic copies defaults)
    tagged_limit: int = 20
    tagged_window_minutes: int = 10
    rejected_limit: int = 100
    rejected_window_minutes: int = 5
    quiet_minutes: int = 30
    on_open_command: str | None = None
    on_open_dry_run: bool = True
    webhook_url: str | None = None
    webhook_secret: str | None = None
    telegram_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api: str = "https://api.telegram.org"
    attempts: int = 5
    backoff_seconds: float = 10.0
    cooldown_minutes: int = 10
    max_age_minutes: int = 60
    timeout_seconds: float = 10.0

    def config(self) -> RulesConfig:
        return RulesConfig.of(self)

    def targets(self) -> AlertTargets:
        return AlertTargets.of(self, self)
