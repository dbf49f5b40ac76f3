"""One logger for the package: console plus an optional text log file in the run directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOGGER_NAME = "nanodet"
_FORMAT = "[%(name)s %(asctime)s] %(levelname)s %(message)s"


def get_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, "%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def is_main_process() -> bool:
    """Rank 0 under DDP (Lightning sets these variables before the workers run user code)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def add_log_file(path: str | Path) -> logging.Handler | None:
    """Also write the package's log to ``path`` (rank 0 only); returns the handler to remove later."""
    if not is_main_process():
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    get_logger().addHandler(handler)
    return handler


def remove_log_file(handler: logging.Handler | None) -> None:
    if handler is not None:
        get_logger().removeHandler(handler)
        handler.close()
