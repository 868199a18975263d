"""robustres doctor: what a bug report needs, writing nothing."""

import json
import sys

import typer

from . import render
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import execution_of
from .options import AsJson, execution_options, with_options

HELP = ("What a bug report needs: versions, devices, the store and the data folder; writes nothing. Exit code 1 "
        "when the store exists but cannot be read.")


@app.command(help=HELP, short_help="Versions, devices, the store and the data folder, for a bug report.",
             epilog=examples("robustres doctor", "robustres doctor --store runs/ --json"))
@with_options(execution_options(names=("store", "data_dir")))
def doctor(options: dict, as_json: AsJson = False) -> None:
    from ..doctor import gather  # imports torch: after the options are parsed

    execution = execution_of(options)  # the folders' names checked
    info = gather(execution.store, execution.data_dir)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        render.print_doctor(info)
    if "error" in info["store"]:
        print(f"error: {info['store']['error']}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_OK)
