"""xray-pipeline: Xray access logs into partitioned PostgreSQL, with Dagster."""
