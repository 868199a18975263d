"""Checkpoints: one file per run, holding that run's model alone (never a pack's fused tensors),
its optimizer state, its history and how its pack executed; written atomically.

A pack's runs are checkpointed together (`save_pack`), and a kill in the middle of that must not
leave them at different epochs: they would resume in different packs, and a fused pack computes
its models only to float rounding alike with other pack-mates. So each run's previous checkpoint
is kept as `<name>.prev` until every run of the pack has its new one, and the new checkpoint names
its pack-mates. A reader (`load_checkpoint`) that finds a `.prev` takes the new checkpoint only if
every mate got theirs at the same epoch, else the previous one: the save is all or nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import write_atomic, write_bytes_atomic


def save_checkpoint(path: Path, state: dict) -> None:
    write_atomic(path, lambda f: torch.save(state, f))


def save_checkpoint_bytes(path: Path, blob: bytes) -> None:
    """A checkpoint that was saved elsewhere (a Ray worker), written here atomically."""
    write_bytes_atomic(path, blob)


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def save_pack(checkpoints: list[tuple[Path, dict | bytes]]) -> None:
    """Checkpoint a pack's runs together, all or nothing (see the module's docstring). A state
    (dict) gets `pack`, its mates' file names, added; bytes (from a Ray worker) carry their own."""
    names = [path.name for path, _ in checkpoints]
    settle([path for path, _ in checkpoints])  # no leftovers of an earlier save: each .prev is this save's
    for path, _ in checkpoints:
        if path.exists():
            os.replace(path, previous_path(path))
    for path, state in checkpoints:
        if isinstance(state, bytes):
            save_checkpoint_bytes(path, state)
        else:
            save_checkpoint(path, {**state, "pack": names})
    for path, _ in checkpoints:
        previous_path(path).unlink(missing_ok=True)


def settle(paths: list[Path]) -> None:
    """Make each run's file the checkpoint `load_checkpoint` reads: an interrupted save is undone
    (its `.prev` renamed back), a finished one's leftover `.prev` deleted. Only a process that
    holds the runs' claims may call this."""
    for path in paths:
        previous = previous_path(path)
        if not previous.exists():
            continue
        if resolved_path(path) == previous:
            os.replace(previous, path)
        else:
            previous.unlink(missing_ok=True)


def resolved_path(path: Path) -> Path:
    """The file that holds the run's checkpoint: `path`, unless a save of its pack was cut short
    (a `.prev` is there and some mate lacks a checkpoint at the new one's epoch)."""
    previous = previous_path(path)
    if not previous.exists():
        return path
    state = _read(path)
    if state is None:
        return previous  # killed between moving the old one aside and writing the new one
    epoch, names = len(state.get("history", [])), state.get("pack")
    if not isinstance(names, list):
        return previous
    for name in names:
        if not isinstance(name, str) or Path(name).name != name:
            return previous  # a mate outside the folder: not a checkpoint this package wrote
        mate = state if name == path.name else _read(path.with_name(name))
        if mate is None or len(mate.get("history", [])) != epoch:
            return previous
    return path


def _read(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # a damaged checkpoint means training from scratch, never a crash
    return state if isinstance(state, dict) else None


def load_checkpoint(path: Path | None, run_id: str | None = None) -> dict | None:
    """The run's checkpoint at `path` (or its `.prev`, see `resolved_path`), or None when there is
    none, it is damaged or it is another run's."""
    if path is None:
        return None
    state = _read(resolved_path(Path(path)))
    if state is None or (run_id is not None and state.get("run_id") != run_id):
        return None
    return state

