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


# The interrupting signals this command received (the CLI's handler appends; cleared as each command
# starts): an exception raised after Ctrl-C is the interrupt's doing (an import cut short, a
# callback left half-way), not a failure of the run it surfaced in.
SIGNALS: list[int] = []


# Warnings said this command (cleared as each command starts): a damaged file is read by several
# readers of one command (a survey, the claims' second look, the pack runner), and each would warn.
WARNED: set[str] = set()


def first_time(message: str) -> bool:
    """True the first time this command meets `message` (then it is remembered)."""
    if message in WARNED:
        return False
    WARNED.add(message)
    return True


def one_line(exc, limit: int = 300) -> str:
    """An error message as the user sees it: one line, at most `limit` characters. Too long, a word
    of over a third of that (a path, mostly) loses its middle first, so the reason after it
    survives; then the end is cut."""
    text = " ".join(str(exc).split())
    while len(text) > limit:
        word = max(text.split(" "), key=len)
        if len(word) <= limit // 3:
            return text[: limit - 3] + "..."
        keep = max(len(word) - (len(text) - limit), limit // 3)  # its new length, the "..." included
        text = text.replace(word, word[: keep // 2 - 1] + "..." + word[len(word) - (keep - keep // 2 - 2):], 1)
    return text


def os_error_line(exc: OSError) -> str:
    """An OSError no layer answered (a file deep in the store that this user may not read): the
    path and the reason, never a traceback."""
    return f"{exc.filename}: {exc.strerror or exc}" if exc.filename is not None else str(exc.strerror or exc)
