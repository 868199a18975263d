"""robustres doctor: what a bug report needs, writing nothing."""

import sys

import typer

from ..errors import one_line
from . import render
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import execution_of
from .options import AsJson, execution_options, with_options

HELP = ("What a bug report needs: versions, devices, the store and the data folder; writes nothing. Exit code 1 "
        "when the store or the data folder exists but cannot be read.")


@app.command(help=HELP, short_help="Versions, devices, the store and the data folder, for a bug report.",
             epilog=examples("robustres doctor", "robustres doctor --store runs/ --json"))
@with_options(execution_options(names=("store", "data_dir")))
def doctor(options: dict, as_json: AsJson = False) -> None:
    from ..doctor import gather  # imports torch: after the options are parsed

    execution = execution_of(options, look=False)  # the folders' names checked; what is in them, doctor reports
    info = gather(execution.store, execution.data_dir)
    if as_json:
        print(render.dumps(info))
    else:
        render.print_doctor(info)
    unreadable = info["data"]["datasets"].get("error")
    errors = [info["store"].get("error"),
              unreadable and f"cannot read the data folder {execution.data_dir}: {unreadable}"]
    for error in filter(None, errors):
        print(f"error: {one_line(error)}", file=sys.stderr)
    raise typer.Exit(EXIT_FAILED if any(errors) else EXIT_OK)
