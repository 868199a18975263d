"""The results store: the only code that touches Parquet files.

Layout under the store root:

    runs/<run_id>.parquet         one row: the run's full config, status and results
    epochs/<run_id>.parquet       one row per finished epoch
    checkpoints/<run_id>.pt       the latest end-of-epoch training state (written by the engine)
    claims/<run_id>.json          which live process is training the run now (see `Claims`)

One file per run keeps writers independent (no shared file to rewrite), and every write goes to a
temporary name in the same folder followed by an atomic rename, so a reader sees the old file or the
new one, never a partial one. Readers only look at `*.parquet`.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .spec import RunSpec

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "diverged", "failed")
FINAL_STATUSES = ("completed", "diverged")  # results: re-running them reports, not retrains

_CONFIG_TYPES = {
    "dataset": pa.string(), "model": pa.string(), "depth": pa.int64(), "h": pa.float64(),
    "seed": pa.int64(), "bn": pa.bool_(), "epochs": pa.int64(), "batch_size": pa.int64(),
    "lr": pa.float64(), "momentum": pa.float64(), "milestones": pa.string(), "gamma": pa.float64(),
    "weight_decay": pa.float64(), "optimizer": pa.string(), "train_noise": pa.float64(),
    "noise_kind": pa.string(), "precision": pa.string(), "limit_train": pa.int64(), "limit_test": pa.int64(),
    "n_train": pa.int64(), "n_test": pa.int64(), "moons_noise": pa.float64(),
    "synthetic_like": pa.string(), "width": pa.int64(), "hidden": pa.int64(),
}
assert set(_CONFIG_TYPES) == {f.name for f in fields(RunSpec)}, "store schema out of step with RunSpec"

RUNS_SCHEMA = pa.schema(
    [("run_id", pa.string())]
    + list(_CONFIG_TYPES.items())
    + [
        ("status", pa.string()),
        ("final_test_acc", pa.float64()),  # fraction in [0, 1], after the last epoch
        ("best_test_acc", pa.float64()),  # best over epochs (what the paper reports)
        ("best_epoch", pa.int64()),
        ("epochs_done", pa.int64()),
        ("diverged_epoch", pa.int64()),
        ("diverged_step", pa.int64()),
        ("error", pa.string()),
        ("params", pa.int64()),
        ("flops_per_image", pa.int64()),
        ("seconds", pa.float64()),
        ("device", pa.string()),
        ("torch_version", pa.string()),
        ("robustres_version", pa.string()),
        ("schema_version", pa.int32()),
        ("created_at", pa.string()),  # ISO 8601, UTC
        ("updated_at", pa.string()),
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("epoch", pa.int64()),  # 1-based: the row after the first pass over the data is epoch 1
        ("train_loss", pa.float64()),
        ("train_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_acc", pa.float64()),
        ("lr", pa.float64()),
        ("seconds", pa.float64()),
    ]
)


NOISE_EVALS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("kind", pa.string()), ("level", pa.float64()), ("accuracy", pa.float64()),
    ("n_test", pa.int64()), ("created_at", pa.string()),
])
PROPAGATION_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("kind", pa.string()), ("level", pa.float64()), ("block", pa.int64()),
    ("value", pa.float64()), ("created_at", pa.string()),
])


LAYER_STATS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("step", pa.int64()), ("layer", pa.int64()), ("weight_norm", pa.float64()),
    ("grad_norm", pa.float64()),
])


def _raise(exc: OSError) -> None:
    raise exc


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def config_columns(spec: RunSpec) -> dict:
    row = spec.to_dict()
    row["milestones"] = ",".join(str(m) for m in spec.milestones)
    return row


def spec_from_row(row: dict) -> RunSpec:
    d = {k: (None if _is_missing(v) else v) for k, v in row.items() if k in _CONFIG_TYPES}
    d["milestones"] = tuple(int(m) for m in str(d.get("milestones") or "").split(",") if m)
    for k in ("depth", "seed", "epochs", "batch_size", "limit_train", "limit_test", "n_train",
              "n_test", "width", "hidden"):
        if d.get(k) is not None:
            d[k] = int(d[k])
    d["bn"] = bool(d["bn"])
    return RunSpec.from_dict(d)


def _is_missing(v) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with_keys(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("_file", pa.string())).append(pa.field("_size", pa.int64())).append(
        pa.field("_mtime", pa.int64()))


class ForeignFile(ValueError):
    """A Parquet file in the store that is not one of ours (other columns, or another run's rows)."""


# The columns a file must have to be read as one of ours; others may be missing (read as nulls).
_KEYS = {"runs": ("run_id", "dataset", "depth", "h", "seed", "status"), "epochs": ("run_id", "epoch", "test_acc"),
         "noise_evals": ("run_id", "kind", "level", "accuracy"), "propagation": ("run_id", "kind", "level", "block"),
         "layer_stats": ("run_id", "step", "layer")}


def read_run_file(path: Path, schema: pa.Schema) -> pa.Table:
    """One run's file, in `schema`; raises on damaged and foreign files (see `ForeignFile`)."""
    names = set(pq.read_schema(path).names)
    missing = [k for k in _KEYS.get(path.parent.name, ("run_id",)) if k not in names]
    if missing:
        raise ForeignFile(f"no column {missing[0]}")
    table = pq.read_table(path, schema=schema)
    stem = path.name[: -len(".parquet")]
    if any(r != stem for r in table.column("run_id").to_pylist()):
        raise ForeignFile("rows of another run")
    return table


class StoreError(Exception):
    """The store cannot be written or read as a whole."""


RUN_ID = re.compile(r"^[0-9a-f]{16}$")


def _file_name(run_id: str, suffix: str) -> str:
    """A run's file name; run ids are hashes, so anything else (say, `../x` from a foreign Parquet
    row) is refused rather than turned into a path outside the store."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise StoreError(f"not a run id: {run_id!r}")
    return run_id + suffix


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), so that a recycled pid is not
    mistaken for the process that wrote a claim. None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Claims:
    """Claim files: a run is trained by one process at a time, even when sweeps share a store.

    A claim is `claims/<run_id>.json` naming its host, pid and the process's start time. Another
    process may take a claim over only when it is stale: on this host, its process is gone (or its
    pid now belongs to a newer process); from another host (a store on a shared file system), its
    file was not refreshed for `STALE_SECONDS` (a heartbeat thread refreshes every live claim).
    Reading and taking claims happens under a short `flock` on `claims/.lock`, so two processes
    never both decide that they hold one.
    """

    HEARTBEAT_SECONDS = 30.0
    STALE_SECONDS = 300.0

    def __init__(self, store: "Store"):
        self.folder = store.root / "claims"
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _path(self, run_id: str) -> Path:
        return self.folder / _file_name(run_id, ".json")

    def _mutex(self):
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.folder}: {exc.strerror or exc}") from None
        return _Flock(self.folder / ".lock")

    def holder(self, run_id: str) -> dict | None:
        """Who holds the run's claim, or None when it is free (no claim, or a stale one)."""
        path = self._path(run_id)
        try:
            owner = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # an unreadable claim protects nothing
        if not isinstance(owner, dict):
            return None
        if owner.get("host") == self.me["host"]:
            pid = owner.get("pid")
            if not isinstance(pid, int) or not _alive(pid):
                return None
            start = _process_start(pid)
            if start is not None and owner.get("start") is not None and start != owner.get("start"):
                return None  # the pid was recycled
            return owner
        return owner if age < self.STALE_SECONDS else None

    def take(self, run_ids: list[str]) -> tuple[list[str], dict[str, dict]]:
        """Claim every run that is free; returns (claimed, {run_id: holder} for the others)."""
        mine, others = [], {}
        with self._mutex():
            for run_id in run_ids:
                owner = None if run_id in self.held else self.holder(run_id)
                if owner is not None and owner != self.me:
                    others[run_id] = owner
                    continue
                path = self._path(run_id)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    tmp.write_text(json.dumps(self.me))
                    os.replace(tmp, path)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
                self.held.add(run_id)
                mine.append(run_id)
        if self.held and self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, name="robustres-claims", daemon=True)
            self._thread.start()
        return mine, others

    def release(self, run_ids) -> None:
        run_ids = [r for r in run_ids if r in self.held]
        if not run_ids:
            return
        with self._mutex():
            for run_id in run_ids:
                self.held.discard(run_id)
                path = self._path(run_id)
                try:
                    if json.loads(path.read_text()) == self.me:
                        path.unlink()
                except (OSError, ValueError):
                    pass

    def clear_stale(self, run_ids) -> None:
        """Delete the claims on these runs that no live process holds: a process killed after it
        stored a run's results but before it released the claim leaves one behind, and once the run
        is finished nothing would take that claim over."""
        stale = [r for r in run_ids if r not in self.held and self._path(r).exists()]
        if not stale:
            return
        try:
            with self._mutex():
                for run_id in stale:
                    if self.holder(run_id) is None:
                        self._path(run_id).unlink(missing_ok=True)
        except (OSError, StoreError):
            pass  # a read-only store keeps its litter; it protects nothing

    def release_all(self) -> None:
        self.release(list(self.held))
        self._stop.set()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_SECONDS):
            for run_id in list(self.held):
                try:
                    os.utime(self._path(run_id))
                except OSError:
                    pass


class _Flock:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Store:
    def __init__(self, root: Path | str, write_cache: bool = True):
        self.root = Path(root)
        self.write_cache = write_cache  # False: reading never writes (the snapshot is only read)
        self.warnings: list[str] = []

    # -- paths ------------------------------------------------------------------------------

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def epochs_dir(self) -> Path:
        return self.root / "epochs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.checkpoints_dir / _file_name(run_id, ".pt")

    def create(self) -> None:
        try:
            for d in (self.runs_dir, self.epochs_dir, self.checkpoints_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {self.root}: {exc.strerror or exc}") from None

    # -- writing ----------------------------------------------------------------------------

    def _write(self, table: pa.Table, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_run(self, row: dict) -> None:
        row = dict(row)
        row.setdefault("schema_version", SCHEMA_VERSION)
        row["updated_at"] = now_iso()
        row.setdefault("created_at", row["updated_at"])
        unknown = set(row) - set(RUNS_SCHEMA.names)
        if unknown:
            raise ValueError(f"unknown run columns: {sorted(unknown)}")
        table = pa.Table.from_pylist([{k: row.get(k) for k in RUNS_SCHEMA.names}], schema=RUNS_SCHEMA)
        self.create()
        self._write(table, self.runs_dir / _file_name(row["run_id"], ".parquet"))

    def put_epochs(self, run_id: str, rows: list[dict]) -> None:
        table = pa.Table.from_pylist(
            [{**{k: r.get(k) for k in EPOCHS_SCHEMA.names}, "run_id": run_id} for r in rows],
            schema=EPOCHS_SCHEMA,
        )
        self.create()
        self._write(table, self.epochs_dir / _file_name(run_id, ".parquet"))

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that were killed mid-write (their pid is gone).

        Readers never look at them; this only keeps the store tidy. Returns how many went.
        """
        removed = 0
        for folder in (self.runs_dir, self.epochs_dir, self.checkpoints_dir):
            for path in folder.glob(".*.tmp") if folder.is_dir() else []:
                try:
                    pid = int(path.name.rsplit(".", 2)[-2])
                except ValueError:
                    continue
                if pid == os.getpid() or _alive(pid):
                    continue
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _put_merged(self, folder: Path, schema: pa.Schema, run_id: str, rows: list[dict], key: list[str]) -> None:
        """Add rows to a run's file in `folder`, replacing rows with the same key."""
        path = folder / _file_name(run_id, ".parquet")
        old = []
        if path.exists():
            try:
                old = read_run_file(path, schema).to_pylist()
            except Exception as exc:
                self.warn(f"replacing unreadable store file {path}: {_why(exc)}")
                old = []
        new_keys = {tuple(r[k] for k in key) for r in rows}
        merged = [r for r in old if tuple(r[k] for k in key) not in new_keys]
        stamp = now_iso()
        merged += [{**{k: r.get(k) for k in schema.names}, "run_id": run_id, "created_at": stamp} for r in rows]
        self.create()
        folder.mkdir(parents=True, exist_ok=True)
        self._write(pa.Table.from_pylist(merged, schema=schema), path)

    def put_noise_evals(self, run_id: str, rows: list[dict]) -> None:
        """Accuracy of a run on corrupted test inputs: rows of kind, level, accuracy, n_test."""
        self._put_merged(self.root / "noise_evals", NOISE_EVALS_SCHEMA, run_id, rows, ["kind", "level"])

    def put_propagation(self, run_id: str, rows: list[dict]) -> None:
        """Relative feature perturbation per block: rows of kind, level, block, value."""
        self._put_merged(self.root / "propagation", PROPAGATION_SCHEMA, run_id, rows, ["kind", "level", "block"])

    def put_layer_stats(self, run_id: str, rows: list[dict]) -> None:
        """Weight and gradient norms of tracked layers (`--track-layers`), all of a run's rows."""
        folder = self.root / "layer_stats"
        self.create()
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([{**{k: r.get(k) for k in LAYER_STATS_SCHEMA.names}, "run_id": run_id}
                                      for r in rows], schema=LAYER_STATS_SCHEMA)
        self._write(table, folder / _file_name(run_id, ".parquet"))

    def layer_stats(self) -> pd.DataFrame:
        return self._read_all(self.root / "layer_stats", LAYER_STATS_SCHEMA, None)

    def noise_evals(self) -> pd.DataFrame:
        return self._read_all(self.root / "noise_evals", NOISE_EVALS_SCHEMA, None)

    def propagation(self) -> pd.DataFrame:
        return self._read_all(self.root / "propagation", PROPAGATION_SCHEMA, None)

    def delete_run(self, run_id: str) -> None:
        for path in (self.runs_dir / _file_name(run_id, ".parquet"), self.epochs_dir / _file_name(run_id, ".parquet"),
                     self.checkpoint_path(run_id), self.root / "noise_evals" / _file_name(run_id, ".parquet"),
                     self.root / "layer_stats" / _file_name(run_id, ".parquet"),
                     self.root / "propagation" / _file_name(run_id, ".parquet")):
            path.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------

    def _read_all(self, folder: Path, schema: pa.Schema, columns: list[str] | None) -> pd.DataFrame:
        """Every row of every file in `folder`, through the snapshot (see `_snapshot`)."""
        cols = list(columns or schema.names)
        table = self._snapshot(folder, schema)
        if table is None or table.num_rows == 0:
            return schema.empty_table().select(cols).to_pandas()
        return table.select(cols).to_pandas()

    def _snapshot(self, folder: Path, schema: pa.Schema) -> pa.Table | None:
        """All of a folder's rows, read through a snapshot file that caches them.

        Reading 10,000 one-run files costs seconds; the snapshot (`.snapshot/<folder>.parquet`)
        holds every row with the file's name, size, mtime and inode, so only files that changed since are
        read again. It is only a cache: the per-run files stay the truth, and a missing, damaged or
        stale snapshot just means more files to read. It is rewritten (atomically) when it was stale
        and the store is writable.
        """
        if not folder.is_dir():
            return None
        listing = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".parquet") and not entry.name.startswith("."):
                    st = entry.stat()
                    # Every write is a new file renamed into place: a new inode as well as an mtime.
                    listing[entry.name] = ((st.st_size << 24) | (st.st_ino & 0xFFFFFF), st.st_mtime_ns)
        snap_path = self.root / ".snapshot" / f"{folder.name}.parquet"
        cached, keep = None, pa.array([], pa.bool_())
        if snap_path.exists():
            try:
                cached = pq.read_table(snap_path)
                if cached.schema.remove_metadata() != _with_keys(schema):
                    cached = None
            except Exception:
                cached = None
        fresh_files = set(listing)
        if cached is not None:
            names = cached.column("_file").to_pylist()
            sizes = cached.column("_size").to_pylist()
            mtimes = cached.column("_mtime").to_pylist()
            valid = [listing.get(n) == (sz, mt) for n, sz, mt in zip(names, sizes, mtimes)]
            keep = pa.array(valid, pa.bool_())
            fresh_files -= {n for n, ok in zip(names, valid) if ok}
            cached = cached.filter(keep)
        tables = [cached] if cached is not None and cached.num_rows else []
        for name in sorted(fresh_files):
            path = folder / name
            try:
                t = read_run_file(path, schema)
            except Exception as exc:  # damaged or foreign file: skip it, say so once
                self.warn(f"skipping unreadable store file {path}: {_why(exc)}")
                continue
            size, mtime = listing[name]
            tables.append(t.append_column("_file", pa.array([name] * t.num_rows, pa.string()))
                           .append_column("_size", pa.array([size] * t.num_rows, pa.int64()))
                           .append_column("_mtime", pa.array([mtime] * t.num_rows, pa.int64())))
        if not tables:
            return None
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        stale = bool(fresh_files) or (cached is not None and len(keep) != cached.num_rows) or not snap_path.exists()
        if stale and self.write_cache and os.access(self.root, os.W_OK):
            try:
                snap_path.parent.mkdir(exist_ok=True)
                self._write(table, snap_path)
            except StoreError:
                pass  # a cache that cannot be written is only slower next time
        return table.drop_columns(["_file", "_size", "_mtime"])

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr)

    def refresh(self) -> None:
        """Bring the read snapshots up to date (the executors do this when a sweep ends, so that
        `report` reads a 10,000-run store in a fraction of a second)."""
        self._snapshot(self.runs_dir, RUNS_SCHEMA)
        self._snapshot(self.epochs_dir, EPOCHS_SCHEMA)

    def describe(self) -> dict:
        """What `robustres doctor` shows: size, files, runs by status, unreadable files, live claims.
        Raises StoreError when the store exists but cannot be read as a whole."""
        if not self.root.exists():
            return {"path": str(self.root), "exists": False}
        try:
            if not self.root.is_dir():
                raise NotADirectoryError(20, "not a folder")
            size, files = 0, 0
            for folder, _, names in os.walk(self.root, onerror=_raise):
                for name in names:
                    size += os.stat(os.path.join(folder, name)).st_size
                    files += 1
            runs = self.runs(columns=["status"])
        except OSError as exc:
            raise StoreError(f"cannot read the store at {self.root}: {exc.strerror or exc}") from None
        claims = Claims(self)
        live = [p.stem for p in claims.folder.glob("*.json") if RUN_ID.match(p.stem) and claims.holder(p.stem)]
        return {"path": str(self.root.resolve()), "exists": True, "bytes": size, "files": files,
                "runs": len(runs), "by_status": {s: int(n) for s, n in runs.status.value_counts().items()},
                "unreadable_files": len(self.warnings), "runs_being_trained": len(live)}

    def runs(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self._read_all(self.runs_dir, RUNS_SCHEMA, columns)

    def epochs(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self._read_all(self.epochs_dir, EPOCHS_SCHEMA, None)
        path = self.epochs_dir / _file_name(run_id, ".parquet")
        if not path.exists():
            return EPOCHS_SCHEMA.empty_table().to_pandas()
        try:
            return read_run_file(path, EPOCHS_SCHEMA).to_pandas()
        except Exception as exc:
            self.warn(f"skipping unreadable store file {path}: {_why(exc)}")
            return EPOCHS_SCHEMA.empty_table().to_pandas()

    def get_run(self, run_id: str) -> dict | None:
        path = self.runs_dir / _file_name(run_id, ".parquet")
        if not path.exists():
            return None
        try:
            rows = read_run_file(path, RUNS_SCHEMA).to_pylist()
        except Exception as exc:
            self.warn(f"skipping unreadable store file {path}: {_why(exc)}")
            return None
        return rows[0] if rows else None
