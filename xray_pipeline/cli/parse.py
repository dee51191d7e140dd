"""`xray-pipeline parse` (a dry run of the parser) and `generate` (a synthetic access log)."""

import sys
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console


class OutputFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    table = "table"


def parse_cmd(
    files: Annotated[list[str], typer.Argument(help="log files to parse; - reads stdin")],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="jsonl, csv or table")
    ] = OutputFormat.jsonl,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="zone of the Xray clock (default: settings)")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="bytes parsed at a time", min=1024)
    ] = 4 * 1024 * 1024,
) -> None:
    """Dry run: print what the pipeline would store, one record per input line, in order.

    Fields are the spec's canonical ones (ts as printed, without zone; kind = access, dns or
    other; fields that do not apply are null) plus `line_no`. Nothing is written anywhere.
    """
    import csv
    import json

    import polars as pl

    from xray_pipeline.core.ingest.files import iter_chunks, open_log
    from xray_pipeline.core.parse import DetourTags, parse_chunk
    from xray_pipeline.core.schema import CANONICAL_FIELDS

    settings = STATE.settings(**{"parser.timezone": timezone})
    fields = ["line_no", *CANONICAL_FIELDS]
    writer = None
    if output_format is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
    for name in files:
        try:
            handle = nullcontext(sys.stdin.buffer) if name == "-" else open_log(Path(name))
        except OSError as exc:
            err_console.print(f"error: cannot read {name}: {exc.strerror}")
            raise typer.Exit(1) from exc
        line_base = 0
        detours = DetourTags()
        with handle as fh:
            for offset, chunk in iter_chunks(fh, batch_size):
                parsed = parse_chunk(
                    chunk,
                    source=name,
                    base_offset=offset,
                    timezone=settings.timezone,
                    detours=detours,
                )
                frame = parsed.lines.with_columns(pl.col("line_no") + line_base).select(fields)
                line_base += parsed.line_count
                if output_format is OutputFormat.table:
                    with pl.Config(
                        tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=400
                    ):
                        console.print(str(frame))
                    continue
                for record in frame.iter_rows(named=True):
                    if writer:
                        writer.writerow(record)
                    else:
                        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


def generate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="log file to write")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="number of lines", min=0)] = 10_000,
    days: Annotated[int, typer.Option("--days", help="days the lines span", min=1)] = 1,
    start: Annotated[
        str, typer.Option("--start", help="first day, YYYY-MM-DD (local time of the log)")
    ] = "2025-11-17",
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 42,
    users: Annotated[int, typer.Option("--users", help="distinct users", min=1)] = 200,
    other_share: Annotated[
        float,
        typer.Option("--other-share", help="share of lines in the non-modern shapes", min=0, max=1),
    ] = 0.15,
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="also write what each line must parse to (JSON lines)"),
    ] = None,
    append: Annotated[bool, typer.Option("--append", help="append instead of overwrite")] = False,
    sharers: Annotated[
        int,
        typer.Option(
            "--sharers",
            help="plant K users who share their account (6 sources in 4 minutes, over every "
            "node) and K with 30 connections to TORRENT in 5 minutes; the cases are written "
            "to <truth or out>.planted.json",
            min=0,
        ),
    ] = 0,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            help="write one log per node (access-n1.log ...): each user's own lines on one "
            "node, a sharer's over all of them",
            min=1,
        ),
    ] = 1,
    follow: Annotated[
        bool, typer.Option("--follow", help="after --lines, append at --rate forever (Ctrl-C)")
    ] = False,
    rate: Annotated[
        float, typer.Option("--rate", help="lines per second with --follow", min=0)
    ] = 50.0,
) -> None:
    """Write a synthetic, realistic access log (every shape of the spec, time-ordered)."""
    import datetime as dt

    from xray_pipeline.core.synthetic.generate import GeneratorConfig, node_path, write_log
    from xray_pipeline.core.synthetic.live import follow as follow_log
    from xray_pipeline.core.synthetic.planted import plant, write_cases

    try:
        first_day = dt.datetime.strptime(start, "%Y-%m-%d")
    except ValueError as exc:
        err_console.print(f"error: --start {start!r} is not a date like 2025-11-17")
        raise typer.Exit(2) from exc
    cfg = GeneratorConfig(
        lines=lines, days=days, start=first_day, seed=seed, users=users, other_share=other_share
    )
    names = [f"n{i + 1}" for i in range(nodes)] if nodes > 1 else None
    try:
        planted, cases = plant(
            sharers=sharers, users=users, start=first_day, days=days, nodes=names
        )
    except ValueError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    written = (
        write_log(cfg, out, truth=truth, append=append, planted=planted, nodes=nodes)
        if lines
        else 0
    )
    where = f"{nodes} files like {node_path(out, 'n1')}" if nodes > 1 else str(out)
    err_console.print(f"wrote {lines + planted.height:,} lines ({written:,} bytes) to {where}")
    if cases:
        base = truth or out
        cases_path = base.with_name(f"{base.stem}.planted.json")
        write_cases(cases_path, cases)
        err_console.print(f"planted {sharers} sharer(s) and {sharers} tagged user(s): {cases_path}")
    if follow:
        settings = STATE.settings()
        err_console.print(f"appending {rate:g} lines/s to {out}; Ctrl-C stops")
        try:
            for _ in follow_log(
                out,
                rate=rate,
                timezone=settings.timezone,
                seed=seed,
                users=users,
                other_share=other_share,
            ):
                pass
        except KeyboardInterrupt:
            err_console.print("stopped")
