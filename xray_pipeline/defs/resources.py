"""Dagster resources: the PostgreSQL database, the configured log files, the offline spool,
the rules; and `build_resources`, which makes them from the settings (their defaults are the
settings' own)."""

import os
from pathlib import Path

import dagster as dg
import psycopg

from xray_pipeline.core.alerts.targets import AlertTargets
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.session import database_url
from xray_pipeline.core.fleet.landing import landed_files
from xray_pipeline.core.ingest.files import expand_paths
from xray_pipeline.core.ingest.loader import Loader
from xray_pipeline.core.privacy.policy import RowPolicy, open_geoip
from xray_pipeline.core.rules.evaluate import RulesConfig
from xray_pipeline.settings import Settings, load_settings, normalize_url
from xray_pipeline.settings.sections import (
    AlertsSettings,
    DagsterSettings,
    ParserSettings,
    PrivacySettings,
    RulesSettings,
)

_PARSER, _DAGSTER, _PRIVACY = ParserSettings(), DagsterSettings(), PrivacySettings()
_RULES, _ALERTS = RulesSettings(), AlertsSettings()


class PostgresResource(dg.ConfigurableResource):
    """The xray-pipeline database: `url`, else the settings (config.ini, XRAY_DATABASE_URL),
    else the embedded server (started when needed)."""

    url: str | None = None
    timezone: str = _PARSER.timezone
    batch_size: int = _PARSER.batch_size
    load_workers: int = _DAGSTER.load_workers
    country_db: str | None = None
    asn_db: str | None = None
    source_ip: str = _PRIVACY.source_ip
    ipv4_prefix: int = _PRIVACY.ipv4_prefix
    ipv6_prefix: int = _PRIVACY.ipv6_prefix
    destination: str = _PRIVACY.destination
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
    max_run_bytes: int = _DAGSTER.max_run_bytes
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

    evaluate: bool = _RULES.evaluate
    ip_limit: int = _RULES.ip_limit
    ip_window_minutes: int = _RULES.ip_window_minutes
    ip_count_by: str = _RULES.ip_count_by
    watched_tags: list[str] = list(_RULES.watched_tags)  # noqa: RUF012 (pydantic copies defaults)
    tagged_limit: int = _RULES.tagged_limit
    tagged_window_minutes: int = _RULES.tagged_window_minutes
    rejected_limit: int = _RULES.rejected_limit
    rejected_window_minutes: int = _RULES.rejected_window_minutes
    quiet_minutes: int = _RULES.quiet_minutes
    on_open_command: str | None = None
    on_open_dry_run: bool = _RULES.on_open_dry_run
    webhook_url: str | None = None
    webhook_secret: str | None = None
    telegram_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api: str = _ALERTS.telegram_api
    attempts: int = _ALERTS.attempts
    backoff_seconds: float = _ALERTS.backoff_seconds
    cooldown_minutes: int = _ALERTS.cooldown_minutes
    max_age_minutes: int = _ALERTS.max_age_minutes
    timeout_seconds: float = _ALERTS.timeout_seconds

    def config(self) -> RulesConfig:
        return RulesConfig.of(self)

    def targets(self) -> AlertTargets:
        return AlertTargets.of(self, self)


# ----------------------------------------------------------------------- from the settings

# secret settings, and the variable `up` passes each one in
SECRETS = {
    "privacy.secret": "XRAY_PRIVACY_SECRET",
    "alerts.webhook_secret": "XRAY_ALERTS_WEBHOOK_SECRET",
    "alerts.telegram_token": "XRAY_TELEGRAM_BOT_TOKEN",
}


def _from_environment(settings: Settings, name: str) -> dg.EnvVar | None:
    origin = settings.origin(name)
    return (
        dg.EnvVar(origin.removeprefix("environment "))
        if origin.startswith("environment ")
        else None
    )


def _secret(settings: Settings, name: str) -> str | dg.EnvVar | None:
    """A secret setting (`section.key`), passed as the variable it comes from so that the UI
    never shows it."""
    if (variable := _from_environment(settings, name)) is not None:
        return variable
    section, key = name.split(".")
    secret = getattr(getattr(settings, section), key)
    if secret and os.environ.get(SECRETS[name]) == secret.get_secret_value():
        return dg.EnvVar(SECRETS[name])  # `up` passes a config file's secret this way
    return secret.get_secret_value() if secret else None


def _rules(settings: Settings) -> RulesResource:
    """[rules] and [alerts], field by field (a wrong one stops here, named)."""
    RulesConfig.from_settings(settings)
    AlertTargets.from_settings(settings)
    values = {}
    for name in RulesResource.model_fields:
        section = "rules" if name in RulesSettings.model_fields else "alerts"
        if f"{section}.{name}" in SECRETS:
            values[name] = _secret(settings, f"{section}.{name}")
        else:
            value = getattr(getattr(settings, section), name)
            values[name] = list(value) if isinstance(value, tuple) else value
    return RulesResource(**values)


class ArchiveResource(dg.ConfigurableResource):
    """The Parquet archive of closed days ([archive]): a folder or an object-store URL."""

    url: str
    enabled: bool = True

    def store(self) -> ArchiveStore:
        return ArchiveStore(self.url)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location, from `settings`; the database URL from the
    environment is passed as a dg.EnvVar, so that the UI shows the variable, never the
    password in it."""
    privacy = settings.privacy
    return {
        "postgres": PostgresResource(
            url=_from_environment(settings, "postgresql.url") or settings.external_url(),
            timezone=settings.timezone,
            batch_size=settings.batch_size,
            load_workers=settings.dagster.load_workers,
            country_db=settings.geoip.country_db,
            asn_db=settings.geoip.asn_db,
            source_ip=privacy.source_ip,
            ipv4_prefix=privacy.ipv4_prefix,
            ipv6_prefix=privacy.ipv6_prefix,
            destination=privacy.destination,
            privacy_secret=_secret(settings, "privacy.secret"),
        ),
        "rules": _rules(settings),
        "archive": ArchiveResource(url=settings.archive_root, enabled=settings.archive.enabled),
        "offline_spool": OfflineSpoolResource(path=str(settings.spool_dir)),
        "log_sources": LogSourcesResource(
            paths=list(settings.logfiles),
            node=settings.node,
            max_run_bytes=settings.dagster.max_run_bytes,
            landing_dir=str(settings.landing_dir),
        ),
    }
