"""One logger for the package: console plus an optional text log file in the run directory.

A continual run keeps the console to a few lines per task (``run_log``): the evaluators' full
tables and Lightning's notices go to the run's log file only, and a record logged with
``extra=FILE_ONLY`` does too.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

LOGGER_NAME = "nanodet"
_FORMAT = "[%(name)s %(asctime)s] %(levelname)s %(message)s"
FILE_ONLY = {"file_only": True}  # ``logger.info(..., extra=FILE_ONLY)``: the log file, not the console
# Lightning's loggers: a run's console leaves out their notices below WARNING ("GPU available...",
# "`Trainer.fit` stopped..."); the caller names its own loggers to hide beside them.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch")

_hidden_from_console: list[str] = []  # logger-name prefixes, while a ``run_log`` lasts


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):
            return False
        return record.levelno >= logging.WARNING or not record.name.startswith(tuple(_hidden_from_console))


_CONSOLE_FILTER = _ConsoleFilter()


def get_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, "%m-%d %H:%M:%S"))
        handler.addFilter(_CONSOLE_FILTER)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def is_main_process() -> bool:
    """Rank 0 under DDP (Lightning sets these variables before the workers run user code)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _file_handler(path: str | Path) -> logging.FileHandler:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    return handler


def add_log_file(path: str | Path) -> logging.Handler | None:
    """Also write the package's log to ``path`` (rank 0 only); returns the handler to remove later."""
    if not is_main_process():
        return None
    handler = _file_handler(path)
    get_logger().addHandler(handler)
    return handler


def remove_log_file(handler: logging.Handler | None) -> None:
    if handler is not None:
        get_logger().removeHandler(handler)
        handler.close()


def _lightning_loggers() -> list[logging.Logger]:
    # Lightning's loggers print through handlers of their own and do not propagate to ours.
    return [logging.getLogger(name) for name in LIGHTNING_LOGGERS]


@contextmanager
def run_log(path: str | Path, hidden: Sequence[str] = ()) -> Iterator[None]:
    """While it lasts, the package's and Lightning's records go to ``path`` too (rank 0), and the
    console leaves out what Lightning's loggers and the loggers ``hidden`` (name prefixes) say
    below WARNING."""
    handler = add_log_file(path)
    lightning = _lightning_loggers()
    for lg in lightning:
        if handler is not None:
            lg.addHandler(handler)
        for console in list(lg.handlers):
            if console is not handler:
                console.addFilter(_CONSOLE_FILTER)
    hidden = [*LIGHTNING_LOGGERS, *hidden]
    _hidden_from_console.extend(hidden)
    try:
        yield
    finally:
        if hidden:
            del _hidden_from_console[-len(hidden):]
        for lg in lightning:
            for console in lg.handlers:
                console.removeFilter(_CONSOLE_FILTER)
            if handler is not None:
                lg.removeHandler(handler)
        remove_log_file(handler)


def log_to_file_only(path: str | Path) -> None:
    """A worker process's package log goes to ``path`` alone (appended; the console is the parent's)."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(_file_handler(path))
    logger.setLevel(logging.INFO)
    logger.propagate = False
