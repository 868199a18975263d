"""The Typer application every command registers with, and the exit codes."""

import typer

from .. import __version__
from . import interrupts

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
INTERRUPTED = interrupts.INTERRUPTED  # the line itself is picked in interrupts.interrupted_message

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: paragraphs rewrapped to the terminal, no type placeholders
    help="Step-factor (h) studies of ResNets, after Zhang et al., IJCAI 2019: y = x + h * F(x). "
         "Exit codes: 0 fine, 1 a run failed or a report gate failed, 2 bad input, 130 interrupted (Ctrl-C), "
         "143 terminated (SIGTERM).",
)


def examples(*lines: str) -> str:
    """A help epilog of example commands, printed as written (click's \\b keeps the line breaks)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@app.callback(invoke_without_command=True)
def root(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True)) -> None:
    if version:
        print(f"robustres {__version__}")
        raise typer.Exit(EXIT_OK)
