"""Which stored run rows can be trusted: the checks a row passes when the store reads it.

A row can be readable Parquet and still wrong: edited by hand, written by another tool, or read
from an older schema that lacks a column. Used as it is, such a row crashes the report (a NaN
accuracy), moves a recommendation (an accuracy of -0.2, a row counted twice) or evaluates another
network than the run's (a config that no longer matches its run id). The store leaves every row
that fails out, with one warning naming its file and the reason (store.py), as it does with files
it cannot read; `row_problem` says what is wrong, and its kind is what `doctor` counts.
"""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd

from .spec import FIELD_TYPES, ID_VERSION, RunSpec

# stopped: cut by a search at a rung (epochs_done says where); it resumes if asked to go on.
STATUSES = ("running", "completed", "diverged", "failed", "stopped")
ACCURACIES = ("final_test_acc", "best_test_acc")
# A damaged row's kind, as doctor counts it.


def _number(value) -> float | None:
    """A stored number as a float; None for null (NaN too: pandas reads a null float as NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _whole(value) -> int | None:
    number = _number(value)
    return None if number is None or not number.is_integer() else int(number)


def status_problem(row: dict) -> str | None:
    status = row.get("status")
    if status not in STATUSES:  # exact: `COMPLETED` is no status of ours, whatever it meant
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    return None


def h_problem(row: dict) -> str | None:
    # >= 0, as train and sweep accept (h = 0 is a valid, if degenerate, run); NaN is null here.
    h = _number(row.get("h"))
    if h is None or not math.isfinite(h) or h < 0:
        return f"h is {row.get('h')!r}, not a finite number >= 0"
    return None


def accuracy_problem(row: dict) -> str | None:
    """Accuracies are fractions in [0, 1] where present; a completed run has both."""
    for name in ACCURACIES:
        raw = row.get(name)
        value = _number(raw)
        if value is None:
            if row.get("status") == "completed":
                what = "NaN" if raw is not None else "missing"
                return f"{name} is {what} in a completed run"
            continue  # running, failed and stopped runs have none; a diverged run may lack the final one
        if not 0 <= value <= 1:
            return f"{name} is {value!r}, not a fraction in [0, 1]"
    return None


def epochs_problem(row: dict) -> str | None:
    """epochs_done <= epochs, 1 <= best_epoch <= epochs_done, and a diverged run says when."""
    epochs, done, best = _whole(row.get("epochs")), _whole(row.get("epochs_done")), _whole(row.get("best_epoch"))
    if epochs is None or epochs < 1:
        return f"epochs is {row.get('epochs')!r}, not a whole number >= 1"
    if done is not None and not 0 <= done <= epochs:
        return f"epochs_done {done} is not between 0 and epochs ({epochs})"
    if best is not None and not 1 <= best <= (epochs if done is None else done):
        return f"best_epoch {best} is past the epochs done ({epochs if done is None else done})"
    if row.get("status") == "diverged":
        when = _whole(row.get("diverged_epoch"))
        if when is None or not 1 <= when <= epochs:
            return f"diverged_epoch is {row.get('diverged_epoch')!r} in a diverged run (1 to {epochs})"
    return None


def spec_from_row(row: dict) -> RunSpec:
    """The run a row's config columns describe (milestones are stored as text, e.g. "40,60")."""
    d = {k: (None if _is_missing(v) else v) for k, v in row.items() if k in FIELD_TYPES}
    d["milestones"] = tuple(int(m) for m in str(d.get("milestones") or "").split(",") if m)
    for k, t in FIELD_TYPES.items():
        if t in (int, bool) and d.get(k) is not None:
            d[k] = t(d[k])
    return RunSpec.from_dict(d)


def _is_missing(v) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def run_id_problem(row: dict) -> str | None:
    """The id hashed from the row's config must be the row's: an edited config is another run. A
    row stored without a data fingerprint (an older store) hashes without one, as it was stored."""
    try:
        spec = spec_from_row(row)
    except (TypeError, ValueError, OverflowError) as exc:
        return f"its config cannot be read ({type(exc).__name__}: {exc})"
    if spec.run_id == row.get("run_id"):
        return None
    if _is_missing(row.get("precision")) and id_before_precision(spec) == row.get("run_id"):
        return ("its run id is of an older id scheme (stored before 2026-11-27, when precision became part "
                "of a run's identity); train the run again to get it back")
    return f"its config hashes to run id {spec.run_id}, not {row.get('run_id')} (the config was changed)"


def id_before_precision(spec: RunSpec) -> str:
    """The run id as stores before 2026-11-27 hashed it: every field of that day (precision and the
    data fingerprint came later), so such a row is told from an edited one."""
    fields = {k: v for k, v in spec.to_dict().items() if k not in ("precision", "data_fingerprint")}
    payload = json.dumps({"v": ID_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


CHECKS = (("status", status_problem), ("h", h_problem), ("accuracy", accuracy_problem),
          ("epochs", epochs_problem), ("run id", run_id_problem))


def row_problem(row: dict) -> tuple[str, str] | None:
    """(kind, reason) of the first thing wrong with a run row; None when it can be used."""
    for kind, check in CHECKS:
        reason = check(row)
        if reason is not None:
            return kind, reason
    return None


def latest(rows: list[dict]) -> int:
    """Which of several rows of one run to keep: the one updated last (the last of equals), since
    every write of a run replaces its whole file, the newest row is the one its writer meant."""
    stamps = [str(r.get("updated_at") or "") for r in rows]
    return max(range(len(rows)), key=lambda i: (stamps[i], i))
