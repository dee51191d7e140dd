"""Country and network (ASN) of addresses, from local MaxMind-format databases (.mmdb).

Any MMDB with the usual fields works: a country database (`country.iso_code`, as GeoLite2 and
DB-IP Lite write it, or `country_code`, as the ip-location-db builds do) and an ASN database
(`autonomous_system_number` and `autonomous_system_organization`). A database file replaced
on disk (a monthly update) is reopened at the next look-up, without a restart. Look-ups go
once per distinct address: a chunk of log lines has far fewer addresses than lines.
"""

import datetime as dt
import ipaddress
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from xray_pipeline.settings import SettingsError

# how many of a database's first records are read to find out what fields it has
PROBE_RECORDS = 32
# addresses whose places a process remembers (per database build) before it starts afresh
CACHE_SIZE = 200_000


class GeoIPError(SettingsError):
    """A database that cannot be used: the message names the setting and the fix."""


@dataclass(frozen=True)
class DatabaseInfo:
    """What a loaded database is: its setting, file, type and build time."""

    setting: str
    path: Path
    database_type: str
    built: dt.datetime

    @property
    def version(self) -> str:
        """Names this build: enrichment done with it is kept apart from another build's."""
        return f"{self.database_type}@{int(self.built.timestamp())}"


def _country(record: dict) -> str | None:
    country = record.get("country")
    if isinstance(country, dict) and isinstance(country.get("iso_code"), str):
        return country["iso_code"]
    code = record.get("country_code")
    return code if isinstance(code, str) else None


def _asn(record: dict) -> tuple[int | None, str | None]:
    number = record.get("autonomous_system_number")
    org = record.get("autonomous_system_organization")
    return (
        number if isinstance(number, int) else None,
        org if isinstance(org, str) else None,
    )


# kind: (its label, the field it needs, whether a record has it)
KINDS = {
    "country": ("a country", "country.iso_code or country_code", lambda r: _country(r) is not None),
    "asn": ("an ASN", "autonomous_system_number", lambda r: _asn(r)[0] is not None),
}


class Database:
    """One MMDB file of a kind ("country" or "asn"), checked when opened and reopened when
    the file on disk changes."""

    def __init__(self, path: str | Path, kind: str, setting: str) -> None:
        self.path = Path(path).expanduser()
        self.kind = kind
        self.setting = setting
        self._stamp: tuple[int, int, int] | None = None
        self._reader: maxminddb.Reader | None = None
        self.info: DatabaseInfo | None = None
        self.reader()

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise GeoIPError(
                f"{self.setting} {self.path}: cannot read it ({exc.strerror}); point it at a "
                f".mmdb file, or leave it unset to store no {self.kind}"
            ) from None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reader(self) -> maxminddb.Reader:
        """The open database, reopened first when its file was replaced."""
        stamp = self._file_stamp()
        if self._reader is None or stamp != self._stamp:
            reader = self._open()
            if self._reader is not None:
                self._reader.close()
            self._reader, self._stamp = reader, stamp
        return self._reader

    def _open(self) -> maxminddb.Reader:
        label, fields, has_field = KINDS[self.kind]
        try:
            reader = maxminddb.open_database(str(self.path))
        except (InvalidDatabaseError, ValueError) as exc:
            raise GeoIPError(
                f"{self.setting} {self.path}: not a MaxMind-format database ({exc}); use an "
                ".mmdb file (DB-IP Lite, ip-location-db, GeoLite2)"
            ) from None
        records = []
        for _, record in reader:
            records.append(record)
            if len(records) >= PROBE_RECORDS:
                break
        if not any(isinstance(r, dict) and has_field(r) for r in records):
            reader.close()
            raise GeoIPError(
                f"{self.setting} {self.path}: its records have no {fields} field, so it is not "
                f"{label} database; point the setting at one"
            )
        meta = reader.metadata()
        self.info = DatabaseInfo(
            self.setting,
            self.path,
            meta.database_type,
            dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC),
        )
        return reader


@dataclass(frozen=True)
class Place:
    """What the databases say of one address (None where they say nothing)."""

    country: str | None = None
    asn: int | None = None
    as_org: str | None = None


NOWHERE = Place()


class GeoIP:
    """The configured databases (either may be absent: its fields stay null)."""

    def __init__(self, country_db: str | Path | None, asn_db: str | Path | None) -> None:
        self.country = Database(country_db, "country", "[geoip] country_db") if country_db else None
        self.asn = Database(asn_db, "asn", "[geoip] asn_db") if asn_db else None
        self.lookups = 0  # addresses looked up in the files (not in the cache), for tests
        self._lock = threading.Lock()
        self._cache: dict[str, Place] = {}
        self._cache_version = ""
        # (database, address) pairs that a load has stored under the current build
        self.stored: set[tuple[str, str]] = set()

    @property
    def enabled(self) -> bool:
        return self.country is not None or self.asn is not None

    def databases(self) -> list[DatabaseInfo]:
        """The loaded databases, as they are now on disk."""
        found = []
        for db in (self.country, self.asn):
            if db is not None:
                db.reader()
                found.append(db.info)
        return found

    def version(self) -> str:
        """The versions of the loaded databases, as one key."""
        return " ".join(info.version for info in self.databases()) or "none"

    def lookup(self, addresses: Iterable[str | None]) -> dict[str, Place]:
        """The place of each distinct address that is an IP address (masked, unix-socket or
        host-name sources get none, without error). Each address is read from the files once
        per database build and process; later look-ups come from memory."""
        with self._lock:
            version = self.version()
            if version != self._cache_version or len(self._cache) > CACHE_SIZE:
                self._cache, self._cache_version = {}, version
                self.stored = set()
            country = self.country.reader() if self.country else None
            asn = self.asn.reader() if self.asn else None
            places: dict[str, Place] = {}
            for address in dict.fromkeys(a for a in addresses if a):
                place = self._cache.get(address)
                if place is None:
                    place = self._cache[address] = self._read(address, country, asn)
                if place != NOWHERE:
                    places[address] = place
            return places

    def _read(self, address: str, country, asn) -> Place:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return NOWHERE
        self.lookups += 1
        c = country.get(ip) if country else None
        a = asn.get(ip) if asn else None
        number, org = _asn(a) if isinstance(a, dict) else (None, None)
        return Place(_country(c) if isinstance(c, dict) else None, number, org)
