"""`robustres doctor`: what a bug report needs, gathered without changing anything."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import zipfile
from pathlib import Path

import torch

from . import __version__
from .claims import Claims
from .data import available
from .store import Store, StoreError, file_name, stale_temporary

PACKAGES = ("torch", "torchvision", "typer", "rich", "pandas", "pyarrow", "pyyaml", "matplotlib", "ray")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"robustres": __version__, "python": platform.python_version(),
                                  "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return out


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def devices() -> list[dict]:
    out = [{"device": "cpu", "name": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_bytes": _memory_bytes(), "free_bytes": None}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            out.append({"device": f"cuda:{i}", "name": props.name, "cores": props.multi_processor_count,
                        "memory_bytes": total, "free_bytes": free})
    return out


# Files no read takes as they are, by kind; what each means is said where doctor prints them.
LITTER = ("dangling_links", "truncated_checkpoints", "missing_epochs_files", "prev_checkpoints",
          "stale_temporaries")
EXAMPLES = 3  # paths named per kind: enough to find the rest, short for a store of 10,000 runs


def _checkpoint_cut(path: Path) -> bool:
    """A checkpoint file that is not whole. torch.save writes a zip archive, whose directory is at
    its end: a cut file has none, and this finds it without loading the tensors."""
    return not zipfile.is_zipfile(path)


def _missing_epochs(store: Store) -> list[Path]:
    """Runs whose row says epochs were done but whose epochs file is gone (their curves, and a
    search's scores at a rung, are lost)."""
    runs = store.runs(columns=["run_id", "epochs_done"])
    done = runs[runs.epochs_done.fillna(0) > 0].run_id
    return [p for p in (store.epochs_dir / file_name(r, ".parquet") for r in done) if not p.exists()]


def litter(store: Store) -> dict[str, dict]:
    """The store's files that a read leaves out or works around, per kind (`LITTER`): a count and a
    few of their paths."""
    found: dict[str, list[Path]] = {kind: [] for kind in LITTER}
    for folder, _, names in os.walk(store.root):
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_symlink() and not path.exists():
                found["dangling_links"].append(path)
            elif name.startswith(".") and name.endswith(".tmp") and stale_temporary(path):
                found["stale_temporaries"].append(path)
            elif Path(folder) == store.checkpoints_dir and name.endswith(".pt.prev"):
                found["prev_checkpoints"].append(path)
            elif Path(folder) == store.checkpoints_dir and name.endswith(".pt") and _checkpoint_cut(path):
                found["truncated_checkpoints"].append(path)
    found["missing_epochs_files"] = _missing_epochs(store)
    return {kind: {"count": len(paths), "examples": [str(p) for p in paths[:EXAMPLES]]}
            for kind, paths in found.items()}


def data_info(data_dir: Path) -> dict:
    try:
        datasets = available(data_dir)
    except Exception as exc:
        datasets = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        exists, folder = data_dir.exists(), data_dir.is_dir()
    except OSError:  # something may be there that this user cannot look at; `datasets` says why
        exists, folder = True, None
    return {"path": str(data_dir), "exists": exists, "is_folder": folder, "datasets": datasets}


def gather(store_root: Path, data_dir: Path) -> dict:
    """Everything doctor reports; `store` holds an `error` instead when it cannot be read."""
    try:
        store = Store(store_root, write_cache=False)
        store_info = store.describe()
        if store_info["exists"]:
            store_info["runs_being_trained"] = Claims(store).count_live()
            store_info["files_left_out"] = litter(store)
    except StoreError as exc:
        store_info = {"path": str(store_root), "exists": True, "error": str(exc)}
    except Exception as exc:  # doctor reports what it cannot read (exit 1), whatever the reason
        store_info = {"path": str(store_root), "exists": True,
                      "error": f"cannot read the store at {store_root}: {type(exc).__name__}: {exc}"}
    return {"versions": versions(), "devices": devices(), "store": store_info, "data": data_info(data_dir),
            "argv": sys.argv[1:]}
