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
from xray_pipeline.core.ingest.batch import (
    Joint,
    Part,
    PreparedBatch,
    commit_batch,
    prepare_batch,
)
from xray_pipeline.core.ingest.files import (
    find_file,
    iter_chunks,
    open_log,
)
from xray_pipeline.core.ingest.load import LoadResult
from xray_pipeline.core.ingest.offline import is_unavailable
from xray_pipeline.core.ingest.plan import ReadTask
from xray_pipeline.core.ingest.references import SourceRef, register_sources
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
) -> Iterator[tuple[ParsedChunk, PreparedBatch | None]]:
    """Read, parse and prepare the task's chunks in a worker with its own connection (the
    caller's `prep_conn`, kept open, or one opened here), one chunk ahead of the caller, so
    that preparing chunk N+1 overlaps the COPY of chunk N.

    When PostgreSQL cannot be reached, the chunk comes without its preparation (None), and
    so do the ones after it: the caller spools them."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        state: dict = {"conn": prep_conn, "offline": False}
        detours = DetourTags()  # this source's: learned once, kept chunk to chunk

        def prepare(offset: int, chunk: bytes) -> tuple[ParsedChunk, PreparedBatch | None]:
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
                return parsed, prepare_batch(
                    state["conn"], [Part(source, parsed)], timezone=timezone, policy=policy
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
                [result] = commit_batch(conn, prepared, run_id=run_id, before_commit=before_commit)
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


@dataclass(frozen=True)
class RangeLoad:
    """A byte range of a source for `Loader.load`: the file it was planned at (or the live
    file it was `watched` as, whose rotated copies are searched), its identity, the range, the
    node its rows belong to."""

    path: Path
    identity: str
    start: int
    end: int
    node: str | None = None
    watched: Path | None = None


# the most parts one batch holds: its ledger statement and its reference pass stay small
MAX_PARTS = 1000


@dataclass
class _Raw:
    """A chunk of one item, read and not yet parsed."""

    item: int
    source: SourceRef
    offset: int
    data: bytes


class Loader:
    """Loads many byte ranges (of different sources: a fleet's nodes, a day's files) in
    batches: the chunks of every source, up to `batch_size` bytes together, in one transaction
    (one reference pass, one COPY per table, a ledger row per chunk), so that a poll of 200
    nodes' small ranges costs one load, not 200. Up to `workers` batches are parsed and
    prepared at once, each on its own connection, while the one before commits on another:
    PostgreSQL sees at most 1 + `workers` sessions, kept open between loads. A batch's chunks
    are parsed at once; the routing tags are learned once, and kept from load to load."""

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
        self.conn: psycopg.Connection | None = None
        self.detours = DetourTags()  # learned once, kept from load to load

    def _commit_conn(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = self.connect()
            with self.lock:
                self.opened.append(self.conn)
        return self.conn

    def _prep_conn(self) -> psycopg.Connection:
        """The calling worker's own autocommitted connection."""
        prep = getattr(self.local, "conn", None)
        if prep is None or prep.closed or prep.broken:
            prep = psycopg.connect(
                conninfo(self._commit_conn()), autocommit=True, connect_timeout=5
            )
            self.local.conn = prep
            with self.lock:
                self.opened.append(prep)
        return prep

    def _sources(self, items: list[RangeLoad]) -> dict[int, SourceRef | Exception]:
        """Each item's file found and registered, in one statement; an item whose file is
        gone gets the error."""
        found: dict[int, SourceRef | Exception] = {}
        files: dict[int, tuple[str, str, str | None]] = {}
        for n, item in enumerate(items):
            path = find_file(item.path, item.identity, watched=item.watched, min_size=item.end)
            if path is None:
                found[n] = FileNotFoundError(
                    f"no file with identity {item.identity} at {item.path} or among its "
                    "rotated copies"
                )
            else:
                files[n] = (item.identity, str(path), item.node)
        conn = self._commit_conn()
        unique = {identity: file for file in files.values() for identity in file[:1]}
        registered = {ref.identity: ref for ref in register_sources(conn, list(unique.values()))}
        conn.commit()
        for n, (identity, path, _) in files.items():
            ref = registered[identity]
            found[n] = SourceRef(id=ref.id, identity=identity, path=path, node=ref.node)
        return found

    def _chunks(
        self, items: list[RangeLoad], sources: dict, errors: dict[int, Exception]
    ) -> Iterator[list[_Raw]]:
        """The items' complete-line chunks, grouped into batches of about `batch_size` bytes;
        an item whose file cannot be read gets the error (what was read of it loads)."""
        batch: list[_Raw] = []
        size = 0
        for n, item in enumerate(items):
            source = sources[n]
            if isinstance(source, Exception):
                continue
            try:
                with open_log(Path(source.path)) as fh:
                    for offset, data in iter_chunks(
                        fh, self.batch_size, start=item.start, end=item.end, partial_tail=False
                    ):
                        if batch and (
                            size + len(data) > self.batch_size or len(batch) >= MAX_PARTS
                        ):
                            yield batch
                            batch, size = [], 0
                        batch.append(_Raw(n, source, offset, data))
                        size += len(data)
            except OSError as exc:
                errors[n] = exc
        if batch:
            yield batch

    def _prepare(self, raw: list[_Raw]) -> PreparedBatch:
        """The batch's chunks parsed at once (one fixed cost of a parse, not one a source),
        then prepared."""
        joint = Joint.parse(
            [(chunk.source, chunk.offset, chunk.data) for chunk in raw],
            timezone=self.timezone,
            detours=self.detours,
        )
        return prepare_batch(self._prep_conn(), joint, timezone=self.timezone, policy=self.policy)

    def _commit(self, raw: list[_Raw], prepared: PreparedBatch, stats: list[RunStats]) -> None:
        conn = self._commit_conn()
        try:
            results = commit_batch(conn, prepared, run_id=self.run_id)
        except Exception:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        for chunk, result in zip(raw, results, strict=True):
            stats[chunk.item].add(result)

    def _alone(self, raw: list[_Raw], stats: list[RunStats], errors: dict[int, Exception]) -> None:
        """A batch that failed, part by part: the part at fault fails alone (its item gets the
        error), the others load."""
        for chunk in raw:
            if chunk.item in errors:
                continue
            try:
                prepared = self._prepare([chunk])
                self._commit([chunk], prepared, stats)
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                errors[chunk.item] = exc

    def load(self, items: list[RangeLoad]) -> list[RunStats]:
        """Load `items`; their stats in their order. An item that fails (its file gone, a part
        that cannot be loaded) does not stop the others: the first error is raised once they
        are loaded, exactly once; a database that goes away stops the load at once."""
        stats = [
            RunStats(source=str(item.path), **({"run_id": self.run_id} if self.run_id else {}))
            for item in items
        ]
        sources = self._sources(items)
        errors = {n: s for n, s in sources.items() if isinstance(s, Exception)}
        pending: list = []
        for raw in self._chunks(items, sources, errors):
            pending.append((raw, self.pool.submit(self._prepare, raw)))
            if len(pending) > self.workers:
                self._settle(pending.pop(0), stats, errors)
        for job in pending:
            self._settle(job, stats, errors)
        for n, source in sources.items():
            if not isinstance(source, Exception):
                stats[n].source = source.path
        if errors:
            raise errors[min(errors)]
        return [s.finish() for s in stats]

    def _settle(self, job: tuple, stats: list[RunStats], errors: dict[int, Exception]) -> None:
        raw, future = job
        try:
            prepared = future.result()
            self._commit(raw, prepared, stats)
        except Exception as exc:
            if is_unavailable(exc) or len(raw) == 1:
                if is_unavailable(exc):
                    raise
                errors[raw[0].item] = exc
                return
            self._alone(raw, stats, errors)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for conn in self.opened:
            with contextlib.suppress(Exception):
                conn.close()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
