"""Run statistics: what one ingest, sensor run or replay loaded, exported as JSON lines or CSV."""

import csv
import datetime as dt
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xray_pipeline.core.ingest.load import LoadResult


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class RunStats:
    """Per-run statistics, exported as a JSON line or a CSV row."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    mode: str = "online"
    started: str = field(default_factory=now_iso)
    finished: str = ""
    duration_s: float = 0.0
    source: str = ""
    bytes: int = 0
    lines: int = 0
    access_rows: int = 0
    dns_rows: int = 0
    rejects: int = 0
    new_users: int = 0
    new_endpoints: int = 0
    new_protocols: int = 0
    new_tags: int = 0
    new_places: int = 0
    lines_per_s: float = 0.0
    days_touched: list[str] = field(default_factory=list)
    chunks: int = 0
    chunks_already_loaded: int = 0
    spooled_chunks: int = 0
    spooled_lines: int = 0
    spool: str = ""
    oldest_ts: dt.datetime | None = field(default=None, repr=False)
    newest_ts: dt.datetime | None = field(default=None, repr=False)
    _clock: float = field(default_factory=time.perf_counter, repr=False)

    def spooled(self, segment: Path) -> None:
        with segment.open("rb") as fh:
            header = json.loads(fh.readline())
        self.mode = "offline"
        self.spool = str(segment.parent)
        self.spooled_chunks += 1
        self.spooled_lines += header["lines"]
        self.bytes += header["end"] - header["start"]

    def add(self, result: LoadResult) -> None:
        self.chunks += 1
        if result.already_loaded:
            self.chunks_already_loaded += 1
            return
        self.bytes += result.bytes
        for name in (
            "lines",
            "access_rows",
            "dns_rows",
            "new_users",
            "new_endpoints",
            "new_protocols",
            "new_tags",
            "new_places",
        ):
            setattr(self, name, getattr(self, name) + getattr(result, name))
        self.rejects += result.reject_rows
        if result.oldest_ts is not None:
            self.oldest_ts = min(self.oldest_ts or result.oldest_ts, result.oldest_ts)
        if result.newest_ts is not None:
            self.newest_ts = max(self.newest_ts or result.newest_ts, result.newest_ts)
        days = set(self.days_touched) | {d.isoformat() for d in result.days}
        self.days_touched = sorted(days)

    def finish(self) -> "RunStats":
        """Stamp the end of the run, its duration and its rate."""
        self.finished = now_iso()
        self.duration_s = round(time.perf_counter() - self._clock, 3)
        self.lines_per_s = round(self.lines / self.duration_s, 1) if self.duration_s else 0.0
        return self

    def as_dict(self) -> dict:
        record = asdict(self)
        record.pop("oldest_ts")
        record.pop("newest_ts")
        record.pop("_clock")
        return record


def export_stats(stats: RunStats, output: str, fmt: str) -> None:
    """Append the run's statistics: a JSON line, or a CSV row (header once); `-` = stdout."""
    record = stats.as_dict()
    record["days_touched"] = (
        ";".join(record["days_touched"]) if fmt == "csv" else record["days_touched"]
    )
    if output == "-":
        if fmt == "json":
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(record), lineterminator="\n")
            writer.writeheader()
            writer.writerow(record)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        return
    new_file = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(record), lineterminator="\n")
        if new_file:
            writer.writeheader()
        writer.writerow(record)
