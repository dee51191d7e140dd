"""The SQL of the sidecar's routes: one module per resource, values always bound."""


async def ping(conn) -> None:
    """A round trip to the database (the readiness probe)."""
    await conn.execute("SELECT 1")
