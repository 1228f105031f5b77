"""Errors for bad user-supplied data.

`DataError` is what every loader in `aura.data` raises when the input a person gave it (a file,
a dataset name, a batch size) cannot be used. Commands catch it, print the message and exit with
status 2, so each message says what is wrong, where (file path, key, index) and how to fix it.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad user-supplied data: missing/corrupt files, wrong shapes or dtypes, bad values.

    A subclass of `ValueError`, so code that already treats bad configuration as `ValueError`
    handles it too.
    """
