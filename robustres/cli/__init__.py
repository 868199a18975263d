"""The `robustres` command line: one module per command; each parses its options, hands the work to the
library (the best h, for one, is report.py's alone), renders what comes back and returns an exit code.

Bad input exits with code 2 and one line on stderr ("error: ..."), before anything is written.
"""

import signal
import sys

# Ctrl-C (or SIGTERM) in the split second of imports that starts every command: noted, not raised
# (raised, it lands anywhere, inside importlib's own locks too), and answered once the imports are
# done, with the interrupt line and no traceback. Before this line runs, Python's own handler is
# the one that answers (a few milliseconds of interpreter start-up; docs/faults.md says so).
_EARLY: list[int] = []


def _note(signum, _frame):
    _EARLY.append(signum)


try:
    _ORIGINAL = {sig: signal.signal(sig, _note) for sig in (signal.SIGINT, signal.SIGTERM)
                 if signal.getsignal(sig) is not signal.SIG_IGN}  # ignored (nohup, `&` in a script): it stays so
except ValueError:  # imported outside the main thread (a test's): signals are the main thread's
    _ORIGINAL = {}

import threading  # noqa: E402

import typer  # noqa: E402

from ..errors import SIGNALS, WARNED, one_line, os_error_line  # noqa: E402
from ..spec import DataError, SpecError, StoreError  # noqa: E402
from .interrupts import exit_interrupted, interrupted_message  # noqa: E402

# isort: off
# Each module registers its command; --help lists them in this order, the order of the workflow.
from . import train, sweep, search, noise_eval, report, doctor  # noqa: F401, E402
# isort: on
from .app import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, app  # noqa: E402
from .options import check_repeats  # noqa: E402

if _EARLY:  # (`_note` stays until `main` takes the signals, and `main` gives back the originals)
    print(interrupted_message(sys.argv[1:]), file=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_interrupted(EXIT_TERMINATED if signal.SIGTERM in _EARLY else EXIT_INTERRUPTED)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the process is, so that it unwinds as Ctrl-C does (claims released,
    the message printed), then exits 143."""


_SIGNALS = SIGNALS  # the interrupting signals received (typer turns KeyboardInterrupt into exit 130)


def _interrupt(signum, _frame):
    _SIGNALS.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _catch_signals() -> dict:
    """SIGINT and SIGTERM raise in the main thread (of the CLI process, not of a test calling
    main() from another thread); returns the handlers to put back."""
    _SIGNALS.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    return {sig: _ORIGINAL.get(sig, h) if h is _note else h for sig, h in previous.items()}


def _interrupted(argv: list[str]) -> int:
    print(interrupted_message(argv), file=sys.stderr)
    return EXIT_TERMINATED if signal.SIGTERM in _SIGNALS else EXIT_INTERRUPTED


def _is_usage_error(exc: Exception) -> bool:
    # Click's usage errors (bad flags, missing values) carry exit code 2 and format_message().
    return getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Errors are one line on stderr."""
    args = sys.argv[1:] if argv is None else list(argv)
    WARNED.clear()  # each command warns afresh (tests run many commands in one process)
    previous = _catch_signals()
    try:
        return _main(args, argv)
    except (KeyboardInterrupt, typer.Abort):
        return _interrupted(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(args: list[str], argv: list[str] | None) -> int:
    try:
        command = typer.main.get_command(app)
        check_repeats(command, args)
        rv = command.main(args=argv, prog_name="robustres", standalone_mode=False)
    except (SpecError, DataError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if _SIGNALS and isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            return _interrupted(args)  # the signal landed inside an import (scipy's turns it into ImportError)
        if isinstance(exc, OSError):
            print(f"error: {one_line(os_error_line(exc))}", file=sys.stderr)
            return EXIT_FAILED
        if not _is_usage_error(exc):
            raise
        if type(exc).__name__ != "NoArgsIsHelpError":  # the help text was shown already
            print(f"error: {one_line(exc.format_message())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if _SIGNALS:
        return _interrupted(args)
    return rv if isinstance(rv, int) else EXIT_OK


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # in the instant before main took the signals, or after it gave them back
        print(interrupted_message(sys.argv[1:]), file=sys.stderr)
        code = EXIT_INTERRUPTED
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a late Ctrl-C changes nothing now
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        exit_interrupted(code)
    sys.exit(code)
