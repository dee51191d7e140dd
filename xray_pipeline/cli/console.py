"""What every command shares: the consoles, the global options' state, a progress bar."""

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TimeRemainingColumn,
)

from xray_pipeline.settings import Settings, load_settings

console = Console(soft_wrap=True, markup=False, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


@dataclass
class State:
    """The global options (`xray-pipeline --config ... COMMAND`), read by every command."""

    config: Path | None = None
    overrides: dict | None = None
    verbose: bool = False

    def settings(self, **extra: object) -> Settings:
        overrides = {**(self.overrides or {}), **{k: v for k, v in extra.items() if v}}
        return load_settings(self.config, overrides)


STATE = State()

LogfileOption = Annotated[
    list[str] | None,
    typer.Option("--logfile", "-l", help="log file or glob (repeatable; default [parser] logfile)"),
]

NO_LOGFILE = "error: no log file given; pass --logfile PATH or set [parser] logfile in config.ini"

# a read this large gets a progress bar (on a terminal)
PROGRESS_FROM_BYTES = 16 * 1024 * 1024


class Bar:
    """A rich progress bar on a terminal; silent elsewhere (CI, pipes)."""

    def __init__(self, progress: Progress | None, description: str) -> None:
        self.progress = progress
        self.description = description
        self.task = None

    def total(self, total: int) -> None:
        """Show the bar for `total` units (bytes or days)."""
        if self.progress is not None and self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=total)

    def bytes_total(self, total: int) -> None:
        """Show the bar for a read of `total` bytes, when it is large."""
        if total > PROGRESS_FROM_BYTES:
            self.total(total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)


@contextmanager
def progress_bar(description: str, *, in_bytes: bool):
    """A Bar for bytes (`in_bytes`) or for counted items, shown on a terminal only."""
    progress = None
    if sys.stderr.isatty():
        count: ProgressColumn = DownloadColumn() if in_bytes else MofNCompleteColumn()
        progress = Progress(
            "{task.description}",
            BarColumn(),
            count,
            TimeRemainingColumn(),
            console=err_console,
        )
    bar = Bar(progress, description)
    try:
        yield bar
    finally:
        if bar.task is not None:
            progress.stop()
