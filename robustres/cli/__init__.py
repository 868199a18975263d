"""The `robustres` command line: one module per command, each parsing its options, calling one
library function, rendering the result and returning an exit code.

Bad input exits with code 2 and one line on stderr ("error: ..."), before anything is written.
"""

import sys

import typer

from ..spec import DataError, SpecError
from ..store import StoreError

# isort: off
# Each module registers its command; --help lists them in this order, the order of the workflow.
from . import train, sweep, noise_eval, report, doctor  # noqa: F401
# isort: on
from .app import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, INTERRUPTED, app


def _is_usage_error(exc: Exception) -> bool:
    # Click's usage errors (bad flags, missing values) carry exit code 2 and format_message().
    return getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Errors are one line on stderr."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="robustres", standalone_mode=False)
    except (SpecError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, typer.Abort):
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        if type(exc).__name__ != "NoArgsIsHelpError":  # the help text was shown already
            print(f"error: {exc.format_message()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return rv if isinstance(rv, int) else EXIT_OK


def run() -> None:
    sys.exit(main())
