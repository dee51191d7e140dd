"""PostgreSQL: connections and their errors, the embedded server, schema migrations and partitions,
rollups and maintenance."""
