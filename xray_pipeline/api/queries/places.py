"""Country and network (ASN) of the sources: the `country` and `asn` filters, and the top
countries and networks of a window, from `ip_places` joined on what the rows keep."""

# what a row keeps of its source: ip_places is keyed by it
SOURCE = "coalesce(host({a}.src_ip), {a}.src_host)"


def place_conds(country: str | None, asn: int | None, params: dict, prefix: str = "") -> list[str]:
    """The conditions on `ip_places` (as `prefix`country, `prefix`asn) for `country` / `asn`;
    binds the values into `params`."""
    conds = []
    if country is not None:
        conds.append(f"{prefix}country = %(country)s")
        params["country"] = country.upper()
    if asn is not None:
        conds.append(f"{prefix}asn = %(asn)s")
        params["asn"] = asn
    return conds


def place_filter(country: str | None, asn: int | None, params: dict, alias: str = "l") -> str:
    """` AND …` restricting `alias` (a `logs` row) to sources placed in `country` / `asn`
    (nothing when neither is given); binds the values into `params`. Addresses are matched on
    src_ip as inet (no host() per row), masked and hashed sources on src_host."""
    conds = place_conds(country, asn, params)
    if not conds:
        return ""
    where = " AND ".join(conds)
    return (
        f" AND ({alias}.src_ip IN (SELECT address::inet FROM ip_places WHERE {where} "
        "AND address NOT LIKE 'hash:%%' AND address NOT LIKE '%%/%%') "
        f"OR {alias}.src_host IN (SELECT address FROM ip_places WHERE {where}))"
    )


# The window's connections per place (the daily_places rollup for whole past days, `logs`
# grouped on the stored columns for the rest, host() and the place on the groups only), then
# the `top` countries and networks with the remainder: never silently capped.
TOP_PLACES = """
WITH pairs AS MATERIALIZED (
    SELECT country, asn, sum(n)::bigint AS n FROM (
        SELECT country, asn, connections AS n FROM daily_places WHERE day = ANY(%(days)s)
        UNION ALL
        SELECT p.country, p.asn, g.n FROM (
            SELECT l.src_ip, l.src_host, count(*) AS n FROM logs l WHERE {live} GROUP BY 1, 2
        ) g LEFT JOIN ip_places p ON p.address = coalesce(host(g.src_ip), g.src_host, '')
    ) x GROUP BY 1, 2
), countries AS (
    SELECT country, sum(n)::bigint AS connections FROM pairs WHERE country IS NOT NULL
    GROUP BY 1
), networks AS (
    SELECT asn, sum(n)::bigint AS connections FROM pairs WHERE asn IS NOT NULL GROUP BY 1
), top_countries AS (
    SELECT * FROM countries ORDER BY connections DESC, country LIMIT %(top)s
), top_networks AS (
    SELECT n.asn, a.org, n.connections FROM networks n LEFT JOIN asns a ON a.asn = n.asn
    ORDER BY n.connections DESC, n.asn LIMIT %(top)s
)
SELECT
    (SELECT coalesce(json_agg(t ORDER BY t.connections DESC, t.country), '[]')
       FROM top_countries t) AS countries,
    (SELECT coalesce(sum(connections), 0) FROM countries)
        - (SELECT coalesce(sum(connections), 0) FROM top_countries) AS countries_other,
    (SELECT coalesce(sum(n), 0) FROM pairs WHERE country IS NULL) AS countries_unknown,
    (SELECT count(*) FROM countries) AS countries_distinct,
    (SELECT coalesce(json_agg(t ORDER BY t.connections DESC, t.asn), '[]')
       FROM top_networks t) AS networks,
    (SELECT coalesce(sum(connections), 0) FROM networks)
        - (SELECT coalesce(sum(connections), 0) FROM top_networks) AS networks_other,
    (SELECT coalesce(sum(n), 0) FROM pairs WHERE asn IS NULL) AS networks_unknown,
    (SELECT count(*) FROM networks) AS networks_distinct,
    -- the builds in use, from a sample (a label: not a scan of every address)
    (SELECT string_agg(DISTINCT db_version, ' ') FROM (
        SELECT db_version FROM ip_places LIMIT 1000) v) AS databases
"""
