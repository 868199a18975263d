"""`robustres doctor`: what a bug report needs, gathered without changing anything."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import torch

from . import __version__
from .claims import Claims
from .data import available
from .store import Store, StoreError

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


def gather(store_root: Path, data_dir: Path) -> dict:
    """Everything doctor reports; `store` holds an `error` instead when it cannot be read."""
    try:
        store = Store(store_root, write_cache=False)
        store_info = store.describe()
        if store_info["exists"]:
            store_info["runs_being_trained"] = Claims(store).count_live()
    except StoreError as exc:
        store_info = {"path": str(store_root), "exists": True, "error": str(exc)}
    except Exception as exc:  # doctor reports what it cannot read (exit 1), whatever the reason
        store_info = {"path": str(store_root), "exists": True,
                      "error": f"cannot read the store at {store_root}: {type(exc).__name__}: {exc}"}
    try:
        datasets = available(data_dir)
    except Exception as exc:
        datasets = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        exists = data_dir.is_dir()
    except OSError:
        exists = True  # something may be there that this user cannot look at; `datasets` says why
    return {"versions": versions(), "devices": devices(), "store": store_info,
            "data": {"path": str(data_dir), "exists": exists, "datasets": datasets},
            "argv": sys.argv[1:]}
