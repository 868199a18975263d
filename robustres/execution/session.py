"""A training round over a store: what it holds, the claims this process takes, the store made
ready; and coming back for the runs another process holds.

`open_session` is the only way a driver gets runs to train. Its steps, in order: claim the runs
that are not finished (looking again once they are ours), clear claims that dead processes left on
finished runs, report the finished runs, then, if anything is left to train, delete stale
temporaries, warn about unreadable checkpoints and, on --force, forget the runs' old results.

Invariants:
- Reading the store writes nothing (`survey`); a session writes only after its claims are taken.
- The session owns its Claims and their heartbeat: every claim it took is released when it ends,
  normally, on an exception or on Ctrl-C (the claims are released, nothing is half-written: the
  runner stores a run only after its checkpoint). A driver releases a pack's claims through
  `Session.done` as soon as the pack is stored, so another process waiting for it goes on.
- Runs another live process is training are left out of `todo`; their rows stay None, and
  `until_done` comes back for them when their claims are released or go stale.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from ..checkpoints import load_checkpoint
from ..claims import Claims
from ..spec import Execution, RunSpec
from ..store import FINAL_STATUSES, Store
from .plan import Pack
from .runner import Reporter


@dataclass
class Survey:
    """What the store already holds for a list of runs; reading it writes nothing."""

    finished: dict[str, dict]  # run_id -> row, completed or diverged (or paused where this training stops)
    todo: list[RunSpec]
    epochs_done: dict[str, int]  # run_id -> epochs in its checkpoint
    elsewhere: dict[str, dict] = field(default_factory=dict)  # run_id -> the live process training it


def survey(runs: list[RunSpec], execution: Execution, checkpoints: bool = True) -> Survey:
    """Which runs are finished; for the others, how far their checkpoints got (unless told not to
    look: reading every checkpoint of a big sweep takes a while)."""
    store = Store(execution.store)
    finished, todo, done = {}, [], {}
    for spec in runs:
        existing = store.get_run(spec.run_id)
        if existing and not execution.force and (existing["status"] in FINAL_STATUSES
                                                 or reached_stop(existing, spec, execution.stop_at)):
            finished[spec.run_id] = existing
            continue
        todo.append(spec)
        saved = None if execution.force or not checkpoints else load_checkpoint(
            store.checkpoint_path(spec.run_id), spec.run_id)
        done[spec.run_id] = len(saved["history"]) if saved else 0
    return Survey(finished, todo, done)


def reached_stop(row: dict, spec: RunSpec, stop_at: int | None) -> bool:
    """A run paused (or stopped) at or after the epoch this training stops at has nothing to do, unless
    its schedule's end is reached (by the stop, or by the run): a run is finished only by its final
    row. (A kill between the last epoch's checkpoint and the final row leaves `running` at
    epochs_done == epochs; counted as done, it stayed `running` forever and a search's answer lost
    it.) Training it again trains no epoch: the engine resumes at the end and writes the final row."""
    done = row.get("epochs_done") or 0
    if stop_at is None or stop_at >= spec.epochs or (row["status"] == "running" and done >= spec.epochs):
        return False
    return row["status"] in ("running", "stopped") and done >= stop_at


def match_unfingerprinted(runs: list[RunSpec], execution: Execution) -> list[RunSpec]:
    """Runs stored before runs had a data fingerprint keep being found: a run whose id the store does
    not hold, but holds its id without the fingerprint, is that stored run (its data unchecked).
    One warning line for all of them."""
    store = Store(execution.store)
    out, matched = [], 0
    for spec in runs:
        if spec.data_fingerprint is not None and not store.has_run(spec.run_id):
            old = spec.with_(data_fingerprint=None)
            if store.has_run(old.run_id):
                spec, matched = old, matched + 1
        out.append(spec)
    if matched:
        store.warn(f"{matched} run(s) in {store.root} were stored without a data fingerprint (by an older "
                   f"robustres): matched by their config alone, without checking that the data is the same")
    return out


# ---------------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------------


@dataclass
class Session:
    """One training round: the runs this process trains, under its claims, and every run's row."""

    store: Store
    requested: list[RunSpec]  # every run asked for: packs are cut from these (plan.make_packs)
    todo: list[RunSpec]  # claimed by this process, to train
    epochs_done: dict[str, int]  # run_id -> epochs in its checkpoint, for the runs in `todo`
    rows: dict[str, dict]  # run_id -> its row: the finished ones from the start, the others as packs end
    claims: Claims

    def done(self, pack: Pack, rows: list[dict]) -> None:
        """A pack's rows are stored: keep them and let its runs' claims go."""
        self.rows.update((row["run_id"], row) for row in rows)
        self.claims.release([spec.run_id for spec in pack.runs])

    def rows_in_order(self) -> list[dict | None]:
        """One row per requested run, in order; None for runs another process holds."""
        return [self.rows.get(spec.run_id) for spec in self.requested]


@contextmanager
def open_session(runs: list[RunSpec], execution: Execution, reporter: Reporter) -> Iterator[Session]:
    """Claim what is left to train of `runs` and make the store ready for it; on leaving, release
    every claim taken (see the module's docstring for the steps and their order)."""
    store = Store(execution.store)
    with Claims(store) as claims:
        work = claim_unfinished(runs, execution, claims)
        clear_stale_claims(claims, work)
        report_finished(runs, work, reporter)
        if work.todo:
            store.remove_stale_temporaries()
            warn_unreadable_checkpoints(store, work, execution)
            if execution.force:
                forget_results(store, work.todo)
        yield Session(store, list(runs), work.todo, work.epochs_done, dict(work.finished), claims)
    if work.todo:
        store.refresh()


def claim_unfinished(runs: list[RunSpec], execution: Execution, claims: Claims) -> Survey:
    """Claim the runs the store has not finished; survey the claimed ones again (another process
    may have finished one meanwhile) and let those go. Runs another live process holds are listed
    in `elsewhere`, not in `todo`."""
    work = survey(runs, execution, checkpoints=False)
    if not work.todo:
        return work
    taken, elsewhere = claims.take([spec.run_id for spec in work.todo])
    mine = set(taken)
    again = survey([spec for spec in work.todo if spec.run_id in mine], execution)
    claims.release(list(again.finished))
    return Survey({**work.finished, **again.finished}, again.todo, again.epochs_done, elsewhere)


def clear_stale_claims(claims: Claims, work: Survey) -> None:
    """Claims that killed processes left on finished runs: nothing else would ever take them over."""
    claims.clear_stale(list(work.finished))


def report_finished(runs: list[RunSpec], work: Survey, reporter: Reporter) -> None:
    for spec in runs:
        if spec.run_id in work.finished:
            reporter.run_finished(spec, work.finished[spec.run_id], reused=True)


def warn_unreadable_checkpoints(store: Store, work: Survey, execution: Execution) -> None:
    """A checkpoint file that no epoch could be read from: its run trains from scratch, and says so."""
    for spec in work.todo:
        path = store.checkpoint_path(spec.run_id)
        if not execution.force and not work.epochs_done.get(spec.run_id) and path.exists():
            store.warn(f"unreadable checkpoint {path} (damaged, or another run's): "
                       f"run {spec.run_id} trains from scratch")


def forget_results(store: Store, todo: list[RunSpec]) -> None:
    """--force: the runs' rows, epochs and checkpoints go before they train again."""
    for spec in todo:
        store.delete_run(spec.run_id)


def until_done(train_round: Callable[[list[RunSpec], Execution], list[dict | None]], runs: list[RunSpec],
               execution: Execution, on_wait: Callable[[int, list[dict]], None] | None = None,
               poll_seconds: float = 0.5) -> list[dict]:
    """Run training rounds until every run has a row: runs that another process was training (None
    rows) are taken up again as soon as their claims are released or go stale, and then either
    reported from the store (that process finished them) or trained here (it died)."""
    rows = dict(zip([s.run_id for s in runs], train_round(runs, execution)))
    execution = replace(execution, force=False)  # what the other process trained is fresh
    while True:
        pending = [s for s in runs if rows[s.run_id] is None]
        if not pending:
            return [rows[s.run_id] for s in runs]
        claims = Claims(Store(execution.store))  # only looked at: it takes nothing
        holders = [h for h in (claims.holder(s.run_id) for s in pending) if h is not None]
        if on_wait is not None:
            on_wait(len(pending), holders)
        while all(claims.holder(s.run_id) is not None for s in pending):
            time.sleep(poll_seconds)
        rows.update(zip([s.run_id for s in pending], train_round(pending, execution)))
