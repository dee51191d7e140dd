-- Per local day x country x ASN x protocol x inbound tag x outbound tag: connections,
-- rejected. The sources' places as ip_places holds them when the day was rolled up (the
-- rollup is rebuilt after a backfill of ip_places). The top countries and networks of whole
-- past days, and the stats and daily series of one country or network, read it.
CREATE TABLE IF NOT EXISTS daily_places (
    day date NOT NULL,
    country text,
    asn bigint,
    protocol_id smallint,
    inbound_tag_id integer,
    outbound_tag_id integer,
    connections bigint NOT NULL,
    rejected bigint NOT NULL,
    CONSTRAINT daily_places_key UNIQUE NULLS NOT DISTINCT
        (day, country, asn, protocol_id, inbound_tag_id, outbound_tag_id)
);
CREATE INDEX IF NOT EXISTS daily_places_country_day ON daily_places (country, day);
CREATE INDEX IF NOT EXISTS daily_places_asn_day ON daily_places (asn, day);
