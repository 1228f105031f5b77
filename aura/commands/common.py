"""What every command shares: user-error handling (exit code 2) and the JSON result line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from aura.data.errors import DataError

USER_ERRORS: tuple[type[Exception], ...] = (DataError, FileNotFoundError)


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean "bad input" (printed, exit 2), not a bug (traceback)."""
    from aura.train.checkpoint import CheckpointError

    return (*USER_ERRORS, CheckpointError)


def fail(message: str) -> None:
    """Prints ``error: message`` to stderr and exits with code 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def validated(build: Callable[[], Any]) -> Any:
    """Runs a config builder; a ValueError (bad flag value) becomes ``fail``."""
    try:
        return build()
    except ValueError as e:
        fail(str(e))


def guarded(run: Callable[[], Any]) -> Any:
    """Runs the command body; bad data or checkpoints become ``fail`` (no traceback)."""
    try:
        return run()
    except user_errors() as e:
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
