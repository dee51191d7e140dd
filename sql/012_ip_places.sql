-- Country and network (ASN) of the addresses in the logs, as the [geoip] databases say. One
-- row per address as the rows keep it: an address (host(src_ip), or an IP destination's host
-- as stored in endpoints), a masked network (`203.0.113.0/24`) or a keyed hash (`hash:…`),
-- resolved from the full address before it was masked or hashed. A database update refreshes
-- these rows (db_version names the build that resolved each), never the log rows.
CREATE TABLE IF NOT EXISTS ip_places (
    address text PRIMARY KEY,
    country text,
    asn bigint,
    db_version text NOT NULL,
    resolved_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ip_places_country ON ip_places (country);
CREATE INDEX IF NOT EXISTS ip_places_asn ON ip_places (asn);

-- The organisation of each autonomous system, as the newest ASN database names it.
CREATE TABLE IF NOT EXISTS asns (
    asn bigint PRIMARY KEY,
    org text
);
