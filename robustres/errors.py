"""The error types every layer raises, and how an error message quotes a value.

The CLI turns SpecError and DataError into one line and exit code 2 (bad input), StoreError into
one line and exit code 1.
"""

from __future__ import annotations

import reprlib


class SpecError(ValueError):
    """Bad input: the message is one line that names the problem."""


class DataError(Exception):
    """The data cannot be had: missing files, a bad layout, no network for a download."""


class DataMissing(DataError):
    """The data is not there at all (as opposed to there and unreadable): a dry run can go on."""


class StoreError(Exception):
    """The store cannot be written or read as a whole."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 1, 4, 4, 40, 40


def shown(value) -> str:
    """A value as an error message quotes it: short, however large or deeply nested (a YAML alias
    bomb is a few hundred bytes that name billions of items)."""
    return _SHORT.repr(value)
