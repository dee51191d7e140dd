"""Parser benchmark: parse_chunk on 2,000,000 generated lines vs a naive per-line `re` parser.

Prints lines/s and MB/s of parse_chunk over chunks of the pipeline's default batch size
(`[parser] batch_size`) and of any other sizes asked for, peak RSS, and, on the same lines, the
lines/s of a plain-Python per-line parser of the same grammar and the ratio. Each size is
warmed up by one untimed pass over the file (a process's first pass is slower while its heap
grows; a pipeline parses chunk after chunk), then timed over the whole file `--passes` times;
every pass is printed and the median is judged, at the default batch size. `--against REV`
adds an A/B in the same run: the parse_chunk of that git revision's parser, timed on the same
file at the judged size, the two parsers taking turns on each chunk (reading not timed). Usage:
uv run python bench/parse.py [--lines N] [--batch-mb M ...] [--passes P] [--naive-lines K]
                             [--against REV]
"""

import argparse
import functools
import importlib.util
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import OUT, ensure_log, peak_rss_mb, timed
from xray_pipeline.core import parse as P
from xray_pipeline.core.ingest.files import iter_chunks
from xray_pipeline.core.parse import parse_chunk
from xray_pipeline.core.schema import LINES_SCHEMA
from xray_pipeline.settings import ParserSettings

DEFAULT_BATCH_MB = ParserSettings().batch_size / (1024 * 1024)

_LOCATE = re.compile(P.LOCATE_TS)
_LEVEL = re.compile(P.LEVEL)
_DNS = re.compile(P.DNS)
_DNS_TAIL = re.compile(P.DNS_TAIL)
_ACCESS = re.compile(P.ACCESS)
_REST = re.compile(P.ACCEPTED_REST)
_AFTER = re.compile(P.AFTER_DEST)
_URL = re.compile(P.URL)


def naive_parse_line(raw: bytes) -> dict:
    """The same grammar, one line at a time with Python's re: the baseline."""
    line = raw.decode("utf-8", "replace").replace("\x00", "").rstrip("\r\n").strip()
    found = _LOCATE.match(line)
    ts, body = (found["ts"], found["body"].strip()) if found else (None, line)
    row = dict.fromkeys(LINES_SCHEMA, None)
    row["kind"] = "other"
    if _LEVEL.match(body):
        return row
    dns = _DNS.match(body)
    if dns:
        tail = _DNS_TAIL.match(dns["dtail"])
        row.update(
            kind="dns",
            ts=ts,
            dest_host=dns["domain"].removesuffix("."),
            reason=tail["error"] if tail else None,
        )
        return row
    acc = _ACCESS.match(body)
    if not acc:
        return row
    src = acc["src_b"] or acc["src_h"]
    port = int(acc["src_port"]) if acc["src_port"] else None
    if port is None and acc["src_network"] != "unix" and src not in P.PORTLESS_SOURCES:
        return row
    row.update(
        kind="access",
        ts=ts,
        src_network=acc["src_network"],
        src_ip=src,
        src_port=port,
        status=acc["status"],
    )
    rest = acc["rest"] or ""
    if acc["status"] == "rejected":
        row["reason"] = rest or None
        return row
    dest = _REST.match(rest)
    after = rest
    if dest:
        after = dest["after"] or ""
        url = _URL.match(dest["url"]) if dest["url"] else None
        row["dest_network"] = dest["dest_network"]
        row["dest_host"] = dest["dest_b"] or dest["dest_h"] or (url and (url["h6"] or url["h"]))
        p = dest["dest_port"] or (url and url["p"])
        row["dest_port"] = int(p) if p else None
    tags = _AFTER.match(after)
    if tags:
        row.update(
            inbound_tag=tags["inbound_tag"], outbound_tag=tags["outbound_tag"], email=tags["email"]
        )
    return row


ROOT = Path(__file__).resolve().parents[1]


def this_tree() -> Callable[..., P.ParsedChunk]:
    """This tree's parse_chunk with one DetourTags, as a run parses one source."""
    return functools.partial(parse_chunk, detours=P.DetourTags())


def parser_at(rev: str) -> Callable[..., P.ParsedChunk]:
    """parse_chunk of `rev`'s parser (run against this tree's other modules): its
    parse.py, or its parse/ package loaded in place of this tree's for the time of the import."""
    archive = subprocess.run(
        ["git", "archive", rev, "xray_pipeline/core/"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix=f"parse-at-{rev}-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    old = folder / "xray_pipeline/core/parse.py"
    if old.exists():
        module = types.ModuleType(f"parse_at_{rev}")
        exec(compile(old.read_text(), f"{rev}:{old.name}", "exec"), module.__dict__)
        return module.parse_chunk
    package = folder / "xray_pipeline/core/parse"
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith(P.__name__)}
    try:
        spec = importlib.util.spec_from_file_location(
            P.__name__, package / "__init__.py", submodule_search_locations=[str(package)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[P.__name__] = module
        spec.loader.exec_module(module)
    finally:
        for name in [k for k in sys.modules if k.startswith(P.__name__)]:
            del sys.modules[name]
        sys.modules.update(ours)
    return functools.partial(module.parse_chunk, detours=module.DetourTags())


def timed_pass(path: Path, batch: int, parse: Callable[..., P.ParsedChunk]) -> tuple[int, float]:
    """Lines parsed and seconds for one pass over the file in chunks of `batch` bytes."""
    lines = rows = 0
    with timed() as t, path.open("rb") as fh:
        for offset, chunk in iter_chunks(fh, batch):
            parsed = parse(chunk, base_offset=offset)
            lines += parsed.line_count
            rows += parsed.access.height + parsed.dns.height + parsed.rejects.height
    assert rows == lines
    return lines, t["seconds"]


def interleaved_pass(
    path: Path,
    batch: int,
    first: Callable[..., P.ParsedChunk],
    second: Callable[..., P.ParsedChunk],
    turn: int,
) -> tuple[float, float]:
    """Lines/s of two parsers over one pass, both parsing each chunk in turn (which one goes
    first alternates chunk by chunk), so that the machine's drift hits both alike."""
    seconds = [0.0, 0.0]
    lines = 0
    parsers = (first, second)
    with path.open("rb") as fh:
        for number, (offset, chunk) in enumerate(iter_chunks(fh, batch)):
            order = (0, 1) if (number + turn) % 2 == 0 else (1, 0)
            for which in order:
                with timed() as t:
                    parsed = parsers[which](chunk, base_offset=offset)
                seconds[which] += t["seconds"]
            lines += parsed.line_count
    return lines / seconds[0], lines / seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument(
        "--batch-mb",
        type=float,
        nargs="+",
        default=[DEFAULT_BATCH_MB, 8.0],
        help=f"chunk sizes, MB (the first is judged; default {DEFAULT_BATCH_MB:g}, the "
        "pipeline's default, then 8)",
    )
    parser.add_argument("--passes", type=int, default=3, help="timed passes per size")
    parser.add_argument(
        "--naive-lines",
        type=int,
        default=400_000,
        help="lines the slow baseline parses (a prefix of the same file)",
    )
    parser.add_argument("--input", type=Path, help="parse this log instead of a generated one")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also time the parse_chunk of this git revision, alternating with this tree's",
    )
    args = parser.parse_args()

    path = args.input or ensure_log(OUT / "parse.log", args.lines)
    size_mb = path.stat().st_size / 1e6
    print(f"input: {path} ({size_mb:,.1f} MB)")

    rss_before = peak_rss_mb()
    rates = []
    for batch_mb in args.batch_mb:
        batch = int(batch_mb * 1024 * 1024)
        timed_pass(path, batch, this_tree())  # warm-up: regexes, thread pool, heap
        passes = []
        for _ in range(args.passes):
            lines, seconds = timed_pass(path, batch, this_tree())
            passes.append(lines / seconds)
            print(
                f"parse_chunk: {lines:,} lines in {seconds:.2f} s = {passes[-1]:,.0f} "
                f"lines/s, {size_mb / seconds:,.1f} MB/s (chunks of {batch_mb:g} MB)"
            )
        rates.append(statistics.median(passes))
        print(f"  median of {len(passes)} passes: {rates[-1]:,.0f} lines/s ({batch_mb:g} MB)")
    fast = rates[0]
    print(f"peak RSS: {peak_rss_mb():,.0f} MB (before parsing: {rss_before:,.0f} MB)")

    if args.against:
        old_parse = parser_at(args.against)
        batch = int(args.batch_mb[0] * 1024 * 1024)
        timed_pass(path, batch, old_parse)  # its warm-up
        rates = [
            interleaved_pass(path, batch, this_tree(), old_parse, turn)
            for turn in range(args.passes)
        ]
        now, then = (statistics.median(pair[which] for pair in rates) for which in (0, 1))
        print(
            f"A/B at {args.batch_mb[0]:g} MB, {args.passes} passes, the two parsers taking turns "
            f"on each chunk: this tree {now:,.0f} lines/s, {args.against} {then:,.0f} lines/s "
            f"(medians; {now / then:.2f}x)"
        )

    with path.open("rb") as fh:
        sample = [fh.readline() for _ in range(args.naive_lines)]
    with timed() as t:
        for raw in sample:
            naive_parse_line(raw)
    naive = len(sample) / t["seconds"]
    print(
        f"naive per-line re: {len(sample):,} lines in {t['seconds']:.2f} s = {naive:,.0f} lines/s"
    )
    print(f"ratio: {fast / naive:.1f}x the naive baseline (chunks of {args.batch_mb[0]:g} MB)")
    print(
        f"target at {args.batch_mb[0]:g} MB chunks: >= 1,000,000 lines/s and >= 4x: "
        f"{'met' if fast >= 1_000_000 and fast / naive >= 4 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
