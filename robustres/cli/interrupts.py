"""The line a command prints when Ctrl-C or SIGTERM stops it: the one place that picks it.

Imports nothing beyond the standard library, so that it can answer an interrupt that lands while
the command's own modules are still being imported.
"""

from __future__ import annotations

import sys

INTERRUPTED = ("interrupted: each run's last checkpoint is in the store (epochs after it train again); re-run the "
               "same command to resume")
INTERRUPTED_QUIETLY = "interrupted: nothing is left half-written; re-run the same command"
TRAINING = ("train", "sweep", "search")


def command_of(argv: list[str]) -> str | None:
    """The command named on a command line (its first word that is not an option)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def trains(argv: list[str]) -> bool:
    """Whether this command line trains runs (noise-eval does in its train-noise mode)."""
    command = command_of(argv)
    if command == "noise-eval":
        return "train-noise" in argv or "--mode=train-noise" in argv
    return command in TRAINING


def interrupted_message(argv: list[str]) -> str:
    """Commands that train point to their checkpoints; the others (report, doctor, noise-eval's
    test-noise) have none to point to."""
    return INTERRUPTED if trains(argv) else INTERRUPTED_QUIETLY


def exit_interrupted(code: int) -> None:
    """sys.exit(code) after an interrupt. CPython 3.11 remembers a KeyboardInterrupt that passed
    through an eval() of a string (namedtuple's, during an import) even when it was caught, and at
    exit kills the process by SIGINT instead, the code lost; every eval of a string starts by
    forgetting it, so one harmless eval comes first."""
    eval("None")
    sys.exit(code)
