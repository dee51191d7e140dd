-- Per local day x country x ASN: connections, rejected. The sources' places as ip_places holds
-- them when the day was rolled up (rebuilt after a backfill of ip_places). A few hundred rows
-- a day: the top countries and networks of whole past days, and the daily series of one
-- country or network, read it.
CREATE TABLE IF NOT EXISTS daily_places (
    day date NOT NULL,
    country text,
    asn bigint,
    connections bigint NOT NULL,
    rejected bigint NOT NULL,
    CONSTRAINT daily_places_key UNIQUE NULLS NOT DISTINCT (day, country, asn)
);
