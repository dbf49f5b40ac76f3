"""What the test suite adds to the checkout: it must add nothing (tests write to temporary folders).

``checkout_state()`` lists every file git does not track, ignored ones included, and every tracked
file that differs from the index, leaving out what Python and pytest write by themselves
(bytecode, pytest's and ruff's caches, the editable install's metadata) and the folders a developer keeps there
(.venv, .whl, scratch). None outside a git checkout.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT_OUT = (":!.venv", ":!.whl", ":!scratch", ":!.git")
BY_PYTHON = ("__pycache__/", ".pytest_cache/", ".ruff_cache/", ".egg-info/", ".pyc")  # caches and metadata


def checkout_state():
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".",
                              *KEPT_OUT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    entries = set()
    for line in out.stdout.splitlines():
        path = line[3:]
        if not any(marker in path for marker in BY_PYTHON):
            entries.add(line)
    return entries


def added_by_the_suite(before, after):
    """Entries present after the suite and not before (sorted), or [] when either is unknown."""
    if before is None or after is None:
        return []
    return sorted(after - before)
