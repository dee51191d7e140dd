"""What a stored row keeps of who connected and where to ([privacy]), and the country and
network of its addresses ([geoip]), decided once per distinct value of a chunk.

Sources: `full` keeps the address; `mask` keeps its network (`203.0.113.0/24`); `hash` keeps
a keyed hash (`hash:` and 16 hex digits, HMAC-SHA256 with the secret), so that distinct
addresses still count while no address is stored. Country and network are resolved from the
address before it is masked or hashed, and stored in `ip_places` under what the row keeps.
Sources that are not addresses (`DNS`, unix sockets, Xray's own masked text) stay as they are.

Destinations: `full` keeps host and port; `domain` keeps the registrable domain
(`www.video.example.co.uk` -> `example.co.uk`, from the public suffix list bundled with
tldextract, never fetched) and the port, and drops URL paths; `none` keeps nothing.
"""

import functools
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field

import polars as pl

from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.settings import SettingsError

HASH_PREFIX = "hash:"
HASH_HEX = 16
MIN_SECRET = 16


class PrivacyError(SettingsError):
    """A privacy setting that cannot work: the message names the setting and the fix."""


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(value: str) -> IpAddress | None:
    """The address `value` names (an IPv4-mapped IPv6 address as its IPv4), else None."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class RowPolicy:
    """[privacy] and [geoip] as the loader applies them (the defaults keep everything)."""

    source_ip: str = "full"
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    destination: str = "full"
    secret: bytes | None = field(default=None, repr=False)
    geoip: GeoIP | None = None

    def __post_init__(self) -> None:
        if self.source_ip not in {"full", "mask", "hash"}:
            raise PrivacyError(f"[privacy] source_ip = {self.source_ip!r}: use full, mask or hash")
        if self.destination not in {"full", "domain", "none"}:
            raise PrivacyError(
                f"[privacy] destination = {self.destination!r}: use full, domain or none"
            )
        if not 0 <= self.ipv4_prefix <= 32:
            raise PrivacyError("[privacy] ipv4_prefix: use 0 to 32 bits (24 keeps a /24)")
        if not 0 <= self.ipv6_prefix <= 128:
            raise PrivacyError("[privacy] ipv6_prefix: use 0 to 128 bits (48 keeps a /48)")
        if self.source_ip == "hash" and (self.secret is None or len(self.secret) < MIN_SECRET):
            raise PrivacyError(
                "[privacy] source_ip = hash needs a secret of at least 16 characters: set "
                "XRAY_PRIVACY_SECRET in the environment of every process that loads (for "
                "example `openssl rand -hex 32`), and keep it: a new secret makes new hashes"
            )

    @property
    def keeps_everything(self) -> bool:
        return self.source_ip == "full" and self.destination == "full"

    # ------------------------------------------------------------------ sources

    def source_text(self, ip: IpAddress) -> str:
        """What a row keeps of source address `ip` under mask or hash."""
        if self.source_ip == "mask":
            bits = self.ipv4_prefix if ip.version == 4 else self.ipv6_prefix
            return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
        digest = hmac.new(self.secret or b"", str(ip).encode(), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:HASH_HEX]

    def sources(self, values: list[str]) -> pl.DataFrame:
        """One row per distinct source text: `src_ip` (as parsed), `stored_ip` (the address
        kept, or null), `stored_host` (the text kept, or null) and `address` (the address to
        resolve, or null)."""
        schema = {
            "src_ip": pl.String,
            "stored_ip": pl.String,
            "stored_host": pl.String,
            "address": pl.String,
        }
        rows = []
        for value in values:
            ip = parse_ip(value)
            if ip is None:
                rows.append((value, None, value, None))
            elif self.source_ip == "full":
                rows.append((value, value, None, str(ip)))
            else:
                rows.append((value, None, self.source_text(ip), str(ip)))
        return pl.DataFrame(rows, schema=schema, orient="row")

    # ------------------------------------------------------------------ destinations

    def destination_host(self, host: str) -> str:
        """What a row keeps of destination `host` under `domain`."""
        if parse_ip(host.strip("[]")) is not None:
            return host
        found = _public_suffixes()(host.lower())
        return found.top_domain_under_public_suffix or host.lower()

    def destinations(self, access: pl.DataFrame) -> pl.DataFrame:
        """`access` with its destination columns as the policy keeps them."""
        if self.destination == "full":
            return access
        if self.destination == "none":
            return access.with_columns(
                pl.lit(None, pl.String).alias("dest_host"),
                pl.lit(None, pl.Int32).alias("dest_port"),
                pl.lit(None, pl.String).alias("dest_url"),
            )
        hosts = access["dest_host"].drop_nulls().unique().to_list()
        mapping = pl.DataFrame(
            {"dest_host": hosts, "kept": [self.destination_host(h) for h in hosts]},
            schema={"dest_host": pl.String, "kept": pl.String},
        )
        return (
            access.join(mapping, on="dest_host", how="left")
            .with_columns(
                pl.col("kept").alias("dest_host"),
                pl.lit(None, pl.String).alias("dest_url"),
            )
            .drop("kept")
        )


@functools.cache
def _public_suffixes():
    import tldextract

    # the snapshot bundled with the package: a load never reaches out to the network
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def policy_from_settings(settings) -> RowPolicy:
    """The RowPolicy of `settings` ([privacy], [geoip]); the databases opened once a process."""
    privacy = settings.privacy
    secret = privacy.secret.get_secret_value().encode() if privacy.secret else None
    return RowPolicy(
        source_ip=privacy.source_ip,
        ipv4_prefix=privacy.ipv4_prefix,
        ipv6_prefix=privacy.ipv6_prefix,
        destination=privacy.destination,
        secret=secret,
        geoip=open_geoip(settings.geoip.country_db, settings.geoip.asn_db),
    )


@functools.cache
def open_geoip(country_db: str | None, asn_db: str | None) -> GeoIP | None:
    """The process's GeoIP for these files (None when neither is set)."""
    if not country_db and not asn_db:
        return None
    return GeoIP(country_db, asn_db)


DEFAULT_POLICY = RowPolicy()
