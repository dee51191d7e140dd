"""`xray-pipeline geoip`: the country and ASN databases."""

import datetime as dt

import typer

from xray_pipeline.cli.console import STATE, console, err_console

geoip_app = typer.Typer(
    help="The country and ASN databases ([geoip] country_db, asn_db).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

SAMPLE = 10_000  # today's distinct source addresses looked up for the resolved share


@geoip_app.command("status")
def geoip_status() -> None:
    """Which databases are loaded, their type and build date, and what share of today's
    distinct source addresses (local day) each resolves."""
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.privacy.geoip import GeoIP, GeoIPError
    from xray_pipeline.core.privacy.policy import HASH_PREFIX, parse_ip

    settings = STATE.settings()
    try:
        geo = GeoIP(settings.geoip.country_db, settings.geoip.asn_db)
    except GeoIPError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    if not geo.enabled:
        console.print(
            "no database configured: set [geoip] country_db and/or asn_db to .mmdb files "
            "(country and network fields stay empty until then)"
        )
        return
    with session(settings) as conn:
        # today's sources as the rows keep them: an address, a masked network (looked up by
        # its first address) or a keyed hash (placed only by the load that hashed it)
        keys = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT coalesce(host(src_ip), src_host) FROM logs, "
                "xray_day_bounds((now() AT TIME ZONE %(tz)s)::date, %(tz)s) b "
                "WHERE ts >= b.lo AND ts < b.hi AND (src_ip IS NOT NULL "
                "OR src_host LIKE 'hash:%%' OR src_host LIKE '%%/%%') LIMIT %(n)s",
                {"tz": settings.timezone, "n": SAMPLE},
            )
        ]
        hashed = [k for k in keys if k.startswith(HASH_PREFIX)]
        stored = {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                "SELECT address, country, asn FROM ip_places WHERE address = ANY(%s)", (hashed,)
            )
        }
    lookups = {k: str(ip) for k in keys if (ip := parse_ip(k.split("/")[0]))}
    places = geo.lookup(lookups.values())
    found = [places.get(a) for a in lookups.values()]
    addresses = list(lookups) + hashed
    resolved = {
        "[geoip] country_db": sum(p is not None and p.country is not None for p in found)
        + sum(stored.get(k, (None, None))[0] is not None for k in hashed),
        "[geoip] asn_db": sum(p is not None and p.asn is not None for p in found)
        + sum(stored.get(k, (None, None))[1] is not None for k in hashed),
    }
    for info in geo.databases():
        built = info.built.astimezone(dt.UTC).strftime("%Y-%m-%d")
        share = (
            f"{resolved[info.setting] / len(addresses):.0%} of today's {len(addresses):,} "
            "source addresses"
            if addresses
            else "no source address today"
        )
        console.print(f"{info.setting}: {info.path} ({info.database_type}, built {built}); {share}")
