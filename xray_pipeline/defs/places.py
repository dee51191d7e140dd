"""The `ip_places` asset: country and network of a day's addresses, for a backfill after a
database update or after [geoip] databases were configured (loads place new rows themselves)."""

import datetime as dt

import dagster as dg

from xray_pipeline.core.privacy.places import enrich_day
from xray_pipeline.defs.assets import POOL
from xray_pipeline.defs.resources import PostgresResource


def build_places_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="ip_places",
        deps=["logs"],
        partitions_def=partitions_def,
        pool=POOL,
        kinds={"postgres"},
        group_name="enrichment",
    )
    def ip_places(context: dg.AssetExecutionContext, postgres: PostgresResource):
        """Country and ASN of each address of the day's rows (sources as the rows keep them,
        IP destinations), from the [geoip] databases as they are now. Each load stores the
        places of its own addresses; backfill days here after a monthly database update, or
        after configuring databases, to place what was loaded before. One row per address:
        refreshing it never rewrites a log row. Hashed sources loaded without a database
        cannot be placed afterwards (their address is not stored)."""
        policy = postgres.policy()
        if policy.geoip is None:
            context.log.warning(
                "no [geoip] country_db or asn_db is configured: nothing to place (set them "
                "in config.ini, then backfill the days to place)"
            )
        totals = {"addresses": 0, "resolved": 0, "written": 0, "unresolvable": 0}
        version = "none"
        with postgres.connect() as conn:
            for key in context.partition_keys:
                result = enrich_day(conn, dt.date.fromisoformat(key), postgres.timezone, policy)
                version = result.version
                for name in totals:
                    totals[name] += getattr(result, name)
                context.log.info(
                    f"{key}: {result.resolved:,} of {result.addresses:,} addresses placed, "
                    f"{result.written:,} rows written"
                )
        share = totals["resolved"] / totals["addresses"] if totals["addresses"] else None
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": totals["written"],
                "addresses": totals["addresses"],
                "resolved": totals["resolved"],
                "resolved_share": dg.MetadataValue.float(round(share, 4) if share else 0.0),
                "written": totals["written"],
                "hashed_unplaceable": totals["unresolvable"],
                "db_version": version,
                "days": dg.MetadataValue.json(list(context.partition_keys)),
            }
        )

    return ip_places
