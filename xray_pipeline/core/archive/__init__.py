"""The Parquet archive of closed days: write, verify, read and erase it (pure: no Dagster)."""
