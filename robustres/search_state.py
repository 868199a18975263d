"""A search's state file, `searches/<id>.json` in the store: its options and every decision made so
far, rewritten atomically after each round that changes it. A resumed search compares the decisions
it makes with those stored (`same_start`); a finished one reads back from a read-only store."""

from __future__ import annotations

import json
import math

import numpy as np

from . import halving as H
from .atomic import write_bytes_atomic
from .errors import StoreError
from .store import Store


def state_path(store: Store, ident: str):
    return store.root / "searches" / f"{ident}.json"


def read_state(store: Store, ident: str) -> dict | None:
    try:
        return json.loads(state_path(store, ident).read_text())
    except (OSError, ValueError):
        return None


def write_state(store: Store, ident: str, options: H.SearchOptions, decisions: list[dict], spent: int,
                finished: bool) -> None:
    """The state file, written atomically when it changes (a replay that changes nothing writes
    nothing, so a finished search reads back from a read-only store)."""
    path = state_path(store, ident)
    state = {"search_id": ident, "options": options.to_dict(), "finished": finished, "model_epochs": spent,
             "decisions": plain(decisions)}
    stored = read_state(store, ident)
    if stored == state:
        return
    if stored is not None and not finished and stored.get("model_epochs", 0) >= spent and \
            stored.get("decisions", [])[:len(state["decisions"])] == state["decisions"]:
        return  # replaying rounds the file already holds (a resumed or repeated search)
    store.make_folder(path.parent)
    try:
        write_bytes_atomic(path, json.dumps(state, indent=1, allow_nan=False).encode())
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def same_start(previous: dict, decisions: list[dict]) -> bool:
    """The decisions an earlier (perhaps killed) run of this search stored begin those made now."""
    old, new = previous.get("decisions", []), plain(decisions)
    n = min(len(old), len(new))
    return old[:n] == new[:n]


def plain(value):
    """JSON's values: NaN (a diverged h's median) as null, numpy numbers as Python's."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
