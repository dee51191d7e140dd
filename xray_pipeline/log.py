"""loguru set-up: readable lines on a terminal, JSON lines with --log-json. The records of the
standard `logging` module (the fleet's node side logs that way: it is standard library only)
go through the same sink."""

import logging
import sys

from loguru import logger


def _text_format(record: dict) -> str:
    extra = " ".join(f"{k}={v}" for k, v in record["extra"].items() if v is not None)
    extra = extra.replace("{", "{{").replace("}", "}}").replace("<", r"\<")
    tail = f" <dim>{extra}</dim>" if extra else ""
    return (
        "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}"
        + tail
        + "\n{exception}"
    )


class _ToLoguru(logging.Handler):
    """loguru's documented bridge for standard logging records."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Send log records to stderr at `level`, as text or as one JSON object per line."""
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        logger.add(sys.stderr, level=level, colorize=sys.stderr.isatty(), format=_text_format)
    ours = logging.getLogger("xray_pipeline")
    ours.handlers = [_ToLoguru()]
    ours.setLevel(level)
    ours.propagate = False
