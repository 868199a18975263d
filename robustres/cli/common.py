"""What train and sweep share: resolving options into runs, and training them with progress."""

import os
import stat
import sys
import time
from pathlib import Path

from ..spec import EXECUTION_TYPES, Execution, SpecError, make_execution, resolve_precision
from . import render
from .paths import check_listable, check_page_path, check_plot_folder, stat_of
from .progress import PlainReporter, RichReporter


def execution_of(options: dict, force: bool = False, look: bool = True) -> Execution:
    """The execution options among `options` (which may hold run options and grid keys too); with
    `look`, the store and data folder are checked to be folders this user may look into."""
    execution = make_execution({**{k: v for k, v in options.items() if k in EXECUTION_TYPES}, "force": force})
    if look:
        for name, env in (("store", "$ROBUSTRES_STORE"), ("data_dir", "$ROBUSTRES_DATA")):
            path = getattr(execution, name)
            check_folder(path, f"{'--' + name.replace('_', '-') if options.get(name) is not None else env} {path}")
    return execution


def check_folder(path: Path, what: str) -> None:
    """A folder to read from or create: where it exists, this user may look into it (permission
    denied is bad input, answered before anything is written)."""
    found = stat_of(path, what)
    if found is not None and stat.S_ISDIR(found.st_mode):
        check_listable(path, what)


def given_precision(options: dict) -> str:
    """--precision as given, `auto` (or none) standing in as fp32 until the runs are checked."""
    precision = options.get("precision")
    return "fp32" if precision in (None, "auto") else precision


def resolve_precisions(runs: list, options: dict, execution: Execution) -> list:
    """The checked runs with `auto` precision resolved for their device: only now is torch imported
    (to ask for CUDA), so bad input is answered before that second of start-up."""
    if options.get("precision") not in (None, "auto"):
        return runs
    from ..devices import resolve_device

    precision = resolve_precision(None, resolve_device(execution.device).type)
    return runs if precision == "fp32" else [spec.with_(precision=precision) for spec in runs]


def check_store(root, writes: bool = False) -> Path:
    """A store to read (and to write, when `writes`): it must exist and be a folder (one that holds
    no runs yet is fine) that this user may read."""
    if not str(root).strip():
        raise SpecError("--store is empty; name a folder")
    root = Path(root)
    found = stat_of(root, f"store {root}")
    if found is None:
        raise SpecError(f"store {root} does not exist (train or sweep creates it; --store or $ROBUSTRES_STORE "
                        "names another)")
    if not stat.S_ISDIR(found.st_mode):
        raise SpecError(f"store {root} is not a store: it is a file, not a folder")
    check_listable(root, f"store {root}")
    if writes and not os.access(root, os.W_OK | os.X_OK):
        raise SpecError(f"store {root} is read-only, and this command writes its results there")
    return root


def check_outputs(plot: str | None, page: str | None) -> None:
    """report's --plot folder and --html file, when given: places that take files."""
    if plot is not None:
        check_plot_folder(plot)
    if page is not None:
        check_page_path(page)


def waiting(count: int, holders: list[dict]) -> None:
    who = ", ".join(sorted({f"pid {h.get('pid')} on {h.get('host')}" for h in holders})) or "another process"
    print(f"waiting for {count} run(s) that {who} is training in this store", file=sys.stderr)


def train_with_progress(runs, execution: Execution, as_json: bool):
    """Train `runs` with live progress (a terminal) or timestamped lines; returns (rows, seconds, console)."""
    from ..execution.train import train_runs

    started = time.perf_counter()
    console = render.console()
    if sys.stdout.isatty() and not as_json:
        with RichReporter(console, len(runs)) as reporter:
            rows = train_runs(runs, execution, counted := CountReused(reporter), waiting)
    else:
        reporter = PlainReporter(sys.stderr if as_json else sys.stdout, len(runs))
        rows = train_runs(runs, execution, counted := CountReused(reporter), waiting)
    if execution.track_layers and counted.reused:  # the store's rows are reused: nothing trains, nothing is tracked
        print(f"warning: --track-layers recorded nothing for the {counted.reused} run(s) already in the store (not "
              "retrained); --force retrains them and records the layers", file=sys.stderr)
    return rows, time.perf_counter() - started, console


class CountReused:
    """A reporter that counts the runs reported from the store, passing everything on."""

    def __init__(self, inner):
        self.inner, self.reused = inner, 0

    def run_finished(self, spec, row, reused: bool) -> None:
        self.reused += bool(reused)
        self.inner.run_finished(spec, row, reused)

    def __getattr__(self, name):
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def train_quietly(runs, execution: Execution, as_json: bool) -> list[dict]:
    """One round of a search: live bars on a terminal that vanish when it ends; silent otherwise
    (the rounds' decisions are the plain output)."""
    from ..execution.runner import Silent
    from ..execution.train import train_runs

    if sys.stdout.isatty() and not as_json:
        with RichReporter(render.console(), len(runs), transient=True, until=execution.stop_at) as reporter:
            return train_runs(runs, execution, reporter, waiting)
    return train_runs(runs, execution, Silent(), waiting)
