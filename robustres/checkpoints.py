"""Checkpoints: one file per run, holding that run's model alone (never a pack's fused tensors),
its optimizer state, its history and how its pack executed; written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import write_atomic, write_bytes_atomic
from .models import split_state, stack_states


def save_checkpoint(path: Path, state: dict) -> None:
    write_atomic(path, lambda f: torch.save(state, f))


def save_checkpoint_bytes(path: Path, blob: bytes) -> None:
    """A checkpoint that was saved elsewhere (a Ray worker), written here atomically."""
    write_bytes_atomic(path, blob)


def load_checkpoint(path: Path | None, run_id: str | None = None) -> dict | None:
    """The checkpoint at `path`, or None when there is none, it is damaged or it is another run's."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # a damaged checkpoint means training from scratch, never a crash
    if run_id is not None and state.get("run_id") != run_id:
        return None
    return state


def split_optimizer(state: dict, k: int, count: int) -> dict:
    return {"state": {i: split_state(s, k, count) for i, s in state["state"].items()},
            "param_groups": state["param_groups"]}


def stack_optimizers(states: list[dict]) -> dict:
    return {"state": {i: stack_states([s["state"][i] for s in states]) for i in states[0]["state"]},
            "param_groups": states[0]["param_groups"]}
