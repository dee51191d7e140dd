"""One-shot ingestion: plan what is new in each file, parse and load it chunk by chunk."""

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from loguru import logger

from xray_pipeline.core.db.connect import DatabaseUnavailable
from xray_pipeline.core.ingest.files import (
    find_file,
    iter_chunks,
    open_log,
)
from xray_pipeline.core.ingest.load import LoadResult, PreparedChunk, commit_chunk, prepare_chunk
from xray_pipeline.core.ingest.offline import is_unavailable
from xray_pipeline.core.ingest.plan import ReadTask
from xray_pipeline.core.ingest.references import SourceRef, register_source
from xray_pipeline.core.ingest.stats import RunStats
from xray_pipeline.core.parse import DetourTags, ParsedChunk, parse_chunk
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy

# spools one parsed chunk of a source and returns the segment's path
Spooler = Callable[[ParsedChunk, SourceRef], Path]


def prepared_chunks(
    conn_info: str,
    task: ReadTask,
    source: SourceRef,
    *,
    timezone: str,
    batch_size: int,
    prep_conn: psycopg.Connection | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> Iterator[tuple[ParsedChunk, PreparedChunk | None]]:
    """Read, parse and prepare the task's chunks in a worker with its own connection (the
    caller's `prep_conn`, kept open, or one opened here), one chunk ahead of the caller, so
    that preparing chunk N+1 overlaps the COPY of chunk N.

    When PostgreSQL cannot be reached, the chunk comes without its preparation (None), and
    so do the ones after it: the caller spools them."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        state: dict = {"conn": prep_conn, "offline": False}
        detours = DetourTags()  # this source's: learned once, kept chunk to chunk

        def prepare(offset: int, chunk: bytes) -> tuple[ParsedChunk, PreparedChunk | None]:
            parsed = parse_chunk(
                chunk,
                source=str(task.path),
                base_offset=offset,
                timezone=timezone,
                detours=detours,
            )
            if state["offline"]:
                return parsed, None
            try:
                if state["conn"] is None:
                    state["conn"] = psycopg.connect(conn_info, autocommit=True, connect_timeout=5)
                return parsed, prepare_chunk(
                    state["conn"], parsed, source, timezone=timezone, policy=policy
                )
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                state["offline"] = True
                return parsed, None

        try:
            with open_log(task.path) as fh:
                pending = None
                for offset, chunk in iter_chunks(
                    fh, batch_size, start=task.start, end=task.end, partial_tail=False
                ):
                    future = pool.submit(prepare, offset, chunk)
                    if pending is not None:
                        yield pending.result()
                    pending = future
                if pending is not None:
                    yield pending.result()
        finally:
            if state["conn"] is not None and state["conn"] is not prep_conn:
                with contextlib.suppress(Exception):
                    state["conn"].close()


def load_task(
    conn: psycopg.Connection,
    task: ReadTask,
    source: SourceRef,
    *,
    timezone: str,
    batch_size: int,
    run_id: str,
    before_commit: Callable[[], None] | None,
    spooler: Spooler | None = None,
    prep_conn: psycopg.Connection | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> Iterator[LoadResult | Path]:
    """Load the task's chunks; yields a LoadResult per loaded chunk, or the segment path of
    a chunk spooled because PostgreSQL went away (when a `spooler` is given)."""
    log = logger.bind(source=str(task.path), run_id=run_id)
    offline = False
    for parsed, prepared in prepared_chunks(
        conninfo(conn), task, source, timezone=timezone, batch_size=batch_size,
        prep_conn=prep_conn, policy=policy,
    ):  # fmt: skip
        if not offline and prepared is not None:
            try:
                result = commit_chunk(
                    conn, prepared, source, run_id=run_id, before_commit=before_commit
                )
            except Exception as exc:
                if spooler is None or not is_unavailable(exc):
                    raise
                log.warning("PostgreSQL went away ({}); spooling the rest", str(exc).strip())
                offline = True
            else:
                if result.already_loaded:
                    log.info("bytes {}-{} already loaded", result.start_offset, result.end_offset)
                yield result
                continue
        if spooler is None:
            raise DatabaseUnavailable("PostgreSQL went away during the load")
        offline = True
        yield spooler(parsed, source)


def conninfo(conn: psycopg.Connection) -> str:
    """A connection string for a second connection to the same database, same credentials."""
    if conn.closed:
        return ""
    params = conn.info.get_parameters()
    password = conn.info.password
    if password:
        params["password"] = password
    return psycopg.conninfo.make_conninfo(**params)


def load_range(
    conn: psycopg.Connection,
    path: Path,
    identity: str,
    start: int,
    end: int,
    *,
    timezone: str,
    batch_size: int,
    node: str | None = None,
    run_id: str | None = None,
    watched: Path | None = None,
    prep_conn: psycopg.Connection | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> RunStats:
    """Load bytes [start, end) of the file with `identity` (found at `path` or among its
    rotated siblings, or those of the `watched` live file), exactly once. `prep_conn`: a
    second connection to prepare chunks on (default: one opened for this load)."""
    stats = RunStats(source=str(path), **({"run_id": run_id} if run_id else {}))
    found = find_file(path, identity, watched=watched, min_size=end)
    if found is None:
        raise FileNotFoundError(
            f"no file with identity {identity} at {path} or among its rotated copies"
        )
    source = register_source(conn, identity, str(found), node)
    conn.commit()
    task = ReadTask(found, identity, start, end, found.suffix == ".gz")
    for result in load_task(
        conn,
        task,
        source,
        timezone=timezone,
        batch_size=batch_size,
        run_id=stats.run_id,
        before_commit=None,
        prep_conn=prep_conn,
        policy=policy,
    ):
        stats.add(result)
    stats.source = str(found)
    return stats.finish()


@dataclass(frozen=True)
class RangeLoad:
    """A byte range for `Loader.load`: load_range's arguments."""

    path: Path
    identity: str
    start: int
    end: int
    node: str | None = None
    watched: Path | None = None


class Loader:
    """Loads many byte ranges (of different sources: a fleet's nodes) up to `workers` at a
    time, each worker with its two connections kept open between loads (one commits, one
    prepares the next chunk), so that a run of many small loads neither connects per load
    nor waits on one source at a time, and PostgreSQL sees at most 2 x `workers` sessions."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        *,
        workers: int,
        timezone: str,
        batch_size: int,
        run_id: str | None = None,
        policy: RowPolicy = DEFAULT_POLICY,
    ) -> None:
        self.connect = connect
        self.policy = policy
        self.workers = workers
        self.timezone = timezone
        self.batch_size = batch_size
        self.run_id = run_id
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loader")
        self.local = threading.local()
        self.opened: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    def _connections(self) -> tuple[psycopg.Connection, psycopg.Connection]:
        conns = getattr(self.local, "conns", None)
        if conns is None or any(c.closed or c.broken for c in conns):
            if conns is not None:
                for c in conns:
                    with contextlib.suppress(Exception):
                        c.close()
            conn = self.connect()
            prep = psycopg.connect(conninfo(conn), autocommit=True, connect_timeout=5)
            conns = self.local.conns = (conn, prep)
            with self.lock:
                self.opened.extend(conns)
        return conns

    def _load(self, item: RangeLoad) -> RunStats:
        conn, prep = self._connections()
        try:
            return load_range(
                conn, item.path, item.identity, item.start, item.end,
                timezone=self.timezone, batch_size=self.batch_size, node=item.node,
                run_id=self.run_id, watched=item.watched, prep_conn=prep, policy=self.policy,
            )  # fmt: skip
        except Exception:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise

    def load(self, items: list[RangeLoad]) -> list[RunStats]:
        """Load `items`, `workers` at a time; their stats in their order. The first error is
        raised once every started load has ended (each load is its own transactions: what
        was committed stays, exactly once)."""
        futures = [self.pool.submit(self._load, item) for item in items]
        results, error = [], None
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for conn in self.opened:
            with contextlib.suppress(Exception):
                conn.close()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
