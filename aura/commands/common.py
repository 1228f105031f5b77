"""What every command shares: user-error handling (exit code 2) and the JSON result line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from aura.data.errors import DataError
from aura.train.checkpoint import CheckpointError
from aura.train.rundir import RunLockedError

# Exception types that mean "bad input" (one error line, exit 2), not a bug (a traceback): bad
# data, an unusable checkpoint, a run directory in use, and paths that are not what a flag
# expects (a file where a directory should be, no permission, ...).
USER_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    CheckpointError,
    RunLockedError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)


def fail(message: str) -> None:
    """Prints ``error: message`` (one line) to stderr and exits with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def validated(build: Callable[[], Any]) -> Any:
    """Runs a config builder or validation; a ValueError (bad flag value) becomes ``fail``."""
    try:
        return build()
    except ValueError as e:
        fail(str(e))


def guarded(run: Callable[[], Any]) -> Any:
    """Runs the command body; bad input (see :data:`USER_ERRORS`) becomes ``fail``."""
    try:
        return run()
    except USER_ERRORS as e:
        fail(str(e))


def emit_result(result: dict, metrics_out: str | None) -> None:
    """Prints the one-line JSON result and writes it atomically to ``metrics_out``."""
    line = json.dumps(result, sort_keys=True)
    print(line, flush=True)
    if metrics_out:
        parent = os.path.dirname(os.path.abspath(metrics_out))
        os.makedirs(parent, exist_ok=True)
        tmp = f"{metrics_out}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, metrics_out)
