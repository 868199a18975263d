"""What train and sweep share: resolving options into runs, and training them with progress."""

import sys
import time

from ..spec import EXECUTION_TYPES, Execution, make_execution, resolve_precision
from . import render
from .progress import PlainReporter, RichReporter


def execution_of(options: dict, force: bool = False) -> Execution:
    """The execution options among `options` (which may hold run options and grid keys too)."""
    return make_execution({**{k: v for k, v in options.items() if k in EXECUTION_TYPES}, "force": force})


def precision_of(options: dict, execution: Execution) -> str:
    """--precision, with `auto` resolved for the device the runs will train on."""
    precision = options.get("precision")
    if precision in (None, "auto"):
        from ..devices import resolve_device

        return resolve_precision(precision, resolve_device(execution.device).type)
    return precision


def waiting(count: int, holders: list[dict]) -> None:
    who = ", ".join(sorted({f"pid {h.get('pid')} on {h.get('host')}" for h in holders})) or "another process"
    print(f"waiting for {count} run(s) that {who} is training in this store", file=sys.stderr)


def train_with_progress(runs, execution: Execution, as_json: bool):
    """Train `runs` with live progress (a terminal) or timestamped lines; returns (rows, seconds, console)."""
    from ..runner import train_runs

    started = time.perf_counter()
    console = render.console()
    if sys.stdout.isatty() and not as_json:
        with RichReporter(console, len(runs)) as reporter:
            rows = train_runs(runs, execution, reporter, waiting)
    else:
        reporter = PlainReporter(sys.stderr if as_json else sys.stdout, len(runs))
        rows = train_runs(runs, execution, reporter, waiting)
    return rows, time.perf_counter() - started, console
