"""Pure logic (no Dagster, no FastAPI), in domain packages."""
