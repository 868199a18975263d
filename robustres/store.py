"""The results store: the only code that reads or writes Parquet files.

Layout under the store root:

    runs/<run_id>.parquet         one row: the run's full config, status and results
    epochs/<run_id>.parquet       one row per finished epoch
    checkpoints/<run_id>.pt       the latest end-of-epoch training state (written by the engine)
    claims/<run_id>.json          which live process is training the run now (claims.py)
    searches/<id>.json            a search's decisions, round by round (written by search.py)
    learned_scales/<run_id>.parquet   h rule learned: each block's final scale (one row a block)

One file per run keeps writers independent (no shared file to rewrite), and every write goes to a
temporary name in the same folder followed by an atomic rename, so a reader sees the old file or the
new one, never a partial one. Readers only look at `*.parquet`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute: the snapshot's sort)
import pyarrow.parquet as pq

from . import snapshot
from .atomic import HOST, write_atomic, writer_of
from .errors import first_time
from .processes import alive
from .rows import latest, row_problem
from .spec import FIELD_TYPES, RUN_FIELDS, RunSpec, StoreError, meta

SCHEMA_VERSION = 1
FINAL_STATUSES = ("completed", "diverged")  # results: re-running them reports, not retrains

# The config columns, one per RunSpec field (milestones as text, e.g. "40,60").
_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string(), tuple: pa.string()}
_CONFIG_TYPES = {name: _ARROW[t] for name, t in FIELD_TYPES.items()}
# A field added after stores existed, with a value that means "as before" (h_rule: fixed): its column
# in an older file reads as that value, so that old and new runs of one protocol are grouped together.
ABSENT_MEANS = {f.name: meta(f).default for f in RUN_FIELDS if meta(f).hash_if_set and meta(f).default is not None}

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
        ("execution", pa.string()),  # "fused" or "in turn" (see tuning.FUSE_RULES); null in older stores
        ("threads", pa.int64()),  # torch's CPU threads (CPU runs); null in older stores
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
# h rule learned: each residual block's scale (block 0-based, in forward order) at the run's end
LEARNED_SCALES_SCHEMA = pa.schema([("run_id", pa.string()), ("block", pa.int64()), ("scale", pa.float64())])
RUN_TABLES = ("noise_evals", "layer_stats", "propagation", "learned_scales")


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


class ForeignFile(ValueError):
    """A Parquet file in the store that is not one of ours (other columns, or another run's rows)."""


# The columns a file must have to be read as one of ours; others may be missing (read as nulls).
_KEYS = {"runs": ("run_id", "dataset", "depth", "h", "seed", "status"), "epochs": ("run_id", "epoch", "test_acc"),
         "noise_evals": ("run_id", "kind", "level", "accuracy"), "propagation": ("run_id", "kind", "level", "block"),
         "layer_stats": ("run_id", "step", "layer"), "learned_scales": ("run_id", "block", "scale")}


def read_run_file(path: Path, schema: pa.Schema) -> pa.Table:
    """One run's file, in `schema`; raises on damaged and foreign files (see `ForeignFile`)."""
    names = set(pq.read_schema(path).names)
    missing = [k for k in _KEYS.get(path.parent.name, ("run_id",)) if k not in names]
    if missing:
        raise ForeignFile(f"no column {missing[0]}")
    table = pq.read_table(path, schema=schema)
    for name, value in ABSENT_MEANS.items():
        if name in schema.names:
            index = schema.get_field_index(name)
            table = table.set_column(index, name, pa.compute.fill_null(table.column(index), value))
    stem = path.name[: -len(".parquet")]
    if any(r != stem for r in table.column("run_id").to_pylist()):
        raise ForeignFile("rows of another run")
    return table


RUN_ID = re.compile(r"^[0-9a-f]{16}$")


def file_name(run_id: str, suffix: str) -> str:
    """A run's file name; run ids are hashes, so anything else (say, `../x` from a foreign Parquet
    row) is refused rather than turned into a path outside the store."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise StoreError(f"not a run id: {run_id!r}")
    return run_id + suffix


def stale_temporary(path: Path) -> bool:
    """A temporary file of ours (atomic.py) whose writer is gone: a killed write's litter. Only this
    host's writers can be known gone; another host's file is left to its own host."""
    writer = writer_of(path)
    if writer is None or writer[0] not in (None, HOST):
        return False
    return writer[1] != os.getpid() and not alive(writer[1])


class Store:
    def __init__(self, root: Path | str, write_cache: bool = True):
        self.root = Path(root)
        self.write_cache = write_cache  # False: reading never writes (the snapshot is only read)
        self.warnings: list[str] = []
        self.skipped: dict[str, set[str]] = {}  # kind ("unreadable", "duplicate", a kind of rows.CHECKS) -> its files
        self.reasons: dict[str, str] = {}  # file -> why it was left out

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
        return self.checkpoints_dir / file_name(run_id, ".pt")

    def create(self) -> None:
        try:
            for d in (self.runs_dir, self.epochs_dir, self.checkpoints_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {self.root}: {exc.strerror or exc}") from None

    def make_folder(self, folder: Path) -> None:
        """The store, and one of its folders beyond the three that `create` makes."""
        self.create()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write {folder}: {exc.strerror or exc}") from None

    # -- writing ----------------------------------------------------------------------------

    def _write(self, table: pa.Table, path: Path) -> None:
        try:
            write_atomic(path, lambda f: pq.write_table(table, f))
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None

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
        self._write(table, self.runs_dir / file_name(row["run_id"], ".parquet"))

    def put_epochs(self, run_id: str, rows: list[dict]) -> None:
        table = pa.Table.from_pylist(
            [{**{k: r.get(k) for k in EPOCHS_SCHEMA.names}, "run_id": run_id} for r in rows],
            schema=EPOCHS_SCHEMA,
        )
        self.create()
        self._write(table, self.epochs_dir / file_name(run_id, ".parquet"))

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that were killed mid-write (their pid is gone).

        Readers never look at them; this only keeps the store tidy. Returns how many went.
        """
        removed = 0
        # Every folder of the store: claims and search states are written atomically too.
        folders = [p for p in self.root.iterdir() if p.is_dir()] if self.root.is_dir() else []
        for folder in folders:
            for path in folder.glob(".*.tmp"):
                if stale_temporary(path):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _put_merged(self, folder: Path, schema: pa.Schema, run_id: str, rows: list[dict], key: list[str]) -> None:
        """Add rows to a run's file in `folder`, replacing rows with the same key."""
        path = folder / file_name(run_id, ".parquet")
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
        self.make_folder(folder)
        self._write(pa.Table.from_pylist(merged, schema=schema), path)

    def put_noise_evals(self, run_id: str, rows: list[dict]) -> None:
        """Accuracy of a run on corrupted test inputs: rows of kind, level, accuracy, n_test."""
        self._put_merged(self.root / "noise_evals", NOISE_EVALS_SCHEMA, run_id, rows, ["kind", "level"])

    def put_propagation(self, run_id: str, rows: list[dict]) -> None:
        """Relative feature perturbation per block: rows of kind, level, block, value."""
        self._put_merged(self.root / "propagation", PROPAGATION_SCHEMA, run_id, rows, ["kind", "level", "block"])

    def _put_all(self, name: str, schema: pa.Schema, run_id: str, rows: list[dict]) -> None:
        """All of a run's rows of one table, replacing its file there."""
        folder = self.root / name
        self.make_folder(folder)
        table = pa.Table.from_pylist([{**{k: r.get(k) for k in schema.names}, "run_id": run_id} for r in rows],
                                     schema=schema)
        self._write(table, folder / file_name(run_id, ".parquet"))

    def put_layer_stats(self, run_id: str, rows: list[dict]) -> None:
        """Weight and gradient norms of tracked layers (`--track-layers`), all of a run's rows."""
        self._put_all("layer_stats", LAYER_STATS_SCHEMA, run_id, rows)

    def put_learned_scales(self, run_id: str, scales: list[float]) -> None:
        """A learned run's final step scales, block by block (h rule learned)."""
        self._put_all("learned_scales", LEARNED_SCALES_SCHEMA, run_id,
                      [{"block": b, "scale": v} for b, v in enumerate(scales)])

    def learned_scales(self) -> pd.DataFrame:
        return self._read_all(self.root / "learned_scales", LEARNED_SCALES_SCHEMA, None)

    def layer_stats(self) -> pd.DataFrame:
        return self._read_all(self.root / "layer_stats", LAYER_STATS_SCHEMA, None)

    def noise_evals(self) -> pd.DataFrame:
        return self._read_all(self.root / "noise_evals", NOISE_EVALS_SCHEMA, None)

    def propagation(self) -> pd.DataFrame:
        return self._read_all(self.root / "propagation", PROPAGATION_SCHEMA, None)

    def delete_run(self, run_id: str) -> None:
        for path in (self.runs_dir / file_name(run_id, ".parquet"), self.epochs_dir / file_name(run_id, ".parquet"),
                     self.checkpoint_path(run_id), self.checkpoints_dir / file_name(run_id, ".pt.prev"),  # a cut save's
                     *(self.root / name / file_name(run_id, ".parquet") for name in RUN_TABLES)):
            path.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------

    def _read_all(self, folder: Path, schema: pa.Schema, columns: list[str] | None) -> pd.DataFrame:
        """Every row of every file in `folder`, through the snapshot (see `_snapshot`)."""
        cols = list(columns or schema.names)
        try:
            table = self._snapshot(folder, schema)
        except OSError as exc:  # a folder this user may not list (files in it are warned about one by one)
            raise StoreError(f"cannot read {exc.filename or folder}: {exc.strerror or exc}") from None
        if table is None or table.num_rows == 0:
            return schema.empty_table().select(cols).to_pandas()
        return table.select(cols).to_pandas()

    def _snapshot(self, folder: Path, schema: pa.Schema) -> pa.Table | None:
        """All of a folder's rows, read through a snapshot file that caches them.

        Reading 10,000 one-run files costs seconds; the snapshot (`.snapshot/<folder>.parquet`)
        holds every row with its file's name, size, inode and mtime (KEYS), so only files that
        changed since are read again. It is only a cache: the per-run files stay the truth, and a
        missing, damaged or stale snapshot just means more files to read. It is rewritten
        (atomically) when it was stale and the store is writable.
        """
        if not folder.is_dir():
            return None
        listing = self._listing(folder)
        snap_path = self.root / ".snapshot" / f"{folder.name}.parquet"
        cached, skipped = snapshot.read(snap_path, schema, checked=folder == self.runs_dir)
        keep = pa.array([], pa.bool_())
        fresh_files = set(listing)
        for name, (*stat, kind, reason) in skipped.items():  # left out (or a duplicate) before, unchanged
            if listing.get(name) == tuple(stat):
                if kind != "duplicate":  # a duplicate's kept row is in the cache itself
                    fresh_files.discard(name)
                self.skip(kind, folder / name, reason)
        if cached is not None:
            names = cached.column("_file").to_pylist()
            stats = zip(*(cached.column(name).to_pylist() for name, _ in snapshot.KEYS[1:]))
            valid = [listing.get(n) == stat for n, stat in zip(names, stats)]
            keep = pa.array(valid, pa.bool_())
            fresh_files -= {n for n, ok in zip(names, valid) if ok}
            cached = cached.filter(keep)
        tables = [cached] if cached is not None and cached.num_rows else []
        for name in sorted(fresh_files):
            path = folder / name
            try:
                t = read_run_file(path, schema)
            except Exception as exc:  # damaged or foreign file: skip it, say so once
                self.skip("unreadable", path, _why(exc))
                continue
            if folder == self.runs_dir:
                t = self.checked(path, t)
                if t is None:
                    continue
            size, inode, mtime = listing[name]
            for (column, kind), value in zip(snapshot.KEYS, (name, size, inode, mtime)):
                t = t.append_column(column, pa.array([value] * t.num_rows, kind))
            tables.append(t)
        if not tables:
            return None
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        # One order whatever the cache held: rows in file-name order, so that every sum over them
        # (a median's interval, a std) is the same bits on every read.
        table = table.take(pa.compute.sort_indices(table, [("_file", "ascending")]))
        stale = bool(fresh_files) or (cached is not None and len(keep) != cached.num_rows) or not snap_path.exists()
        if stale and self.write_cache and os.access(self.root, os.W_OK):
            self._write_snapshot(table, snap_path, folder, listing)
        return table.drop_columns([name for name, _ in snapshot.KEYS])

    def _write_snapshot(self, table: pa.Table, snap_path: Path, folder: Path, listing: dict) -> None:
        skipped = {}
        for kind, paths in self.skipped.items():
            for path in paths:
                name = Path(path).name
                if Path(path).parent == folder and name in listing:
                    skipped[name] = [*listing[name], kind, self.reasons.get(path, "")]
        meta = snapshot.metadata(skipped) if folder == self.runs_dir else None
        try:
            snap_path.parent.mkdir(exist_ok=True)
            self._write(table.replace_schema_metadata(meta), snap_path)
        except StoreError:
            pass  # a cache that cannot be written is only slower next time

    def _listing(self, folder: Path) -> dict[str, tuple[int, int, int]]:
        """The folder's `*.parquet` files: name -> (size, inode, mtime), KEYS' order."""
        listing = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".parquet") and not entry.name.startswith("."):
                    try:
                        st = entry.stat()
                    except OSError as exc:  # a link to nothing, say: it is not one of our files
                        self.skip("unreadable", folder / entry.name, f"{_why(exc)} (a dangling link?)")
                        continue
                    # Every write is a new file renamed into place: a new inode as well as an mtime.
                    listing[entry.name] = (st.st_size, st.st_ino, st.st_mtime_ns)
        return listing

    def skip(self, kind: str, path: Path, reason: str) -> None:
        """Leave a file (or its row) out of every read: one warning, counted by kind for doctor."""
        self.skipped.setdefault(kind, set()).add(str(path))
        self.reasons[str(path)] = reason
        if kind == "duplicate":  # not left out: its run counts once
            self.warn(f"{path} {reason}")
            return
        what = "unreadable store file" if kind == "unreadable" else "damaged run row in"
        self.warn(f"skipping {what} {path}: {reason}")

    def checked(self, path: Path, table: pa.Table) -> pa.Table | None:
        """A runs file's row if it passes rows.py's checks, else None (and a warning). A file holding
        several rows of its run counts it once."""
        rows = table.to_pylist()
        if len(rows) > 1:
            keep = latest(rows)
            self.skip("duplicate", path, f"holds {len(rows)} rows of run {rows[keep]['run_id']}: counted once "
                                         "(the row updated last)")
            table, rows = table.slice(keep, 1), [rows[keep]]
        problem = row_problem(rows[0]) if rows else None
        if problem is not None:
            self.skip(problem[0], path, problem[1])
            return None
        return table

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            if first_time(message):  # once a command, however many Store objects read the file
                print(f"warning: {message}", file=sys.stderr)

    def refresh(self) -> None:
        """Bring the read snapshots up to date (the executors do this when a sweep ends, so that
        `report` reads a 10,000-run store in a fraction of a second)."""
        self._snapshot(self.runs_dir, RUNS_SCHEMA)
        self._snapshot(self.epochs_dir, EPOCHS_SCHEMA)

    def describe(self) -> dict:
        """What `robustres doctor` shows: size, files, runs by status, unreadable files.
        Raises StoreError when the store exists but cannot be read as a whole."""
        if not self.root.exists():
            return {"path": str(self.root), "exists": False}
        try:
            if not self.root.is_dir():
                raise NotADirectoryError(20, "not a folder")
            size, files = 0, 0
            for folder, _, names in os.walk(self.root, onerror=_raise):
                for name in names:
                    # lstat: a link to nothing is a file of the store too (doctor names it), not an error
                    size += os.lstat(os.path.join(folder, name)).st_size
                    files += 1
            runs = self.runs(columns=["status"])
        except OSError as exc:
            raise StoreError(f"cannot read the store at {self.root}: {exc.strerror or exc}") from None
        damaged = {kind: len(paths) for kind, paths in sorted(self.skipped.items())
                   if kind not in ("unreadable", "duplicate")}
        return {"path": str(self.root.resolve()), "exists": True, "bytes": size, "files": files,
                "runs": len(runs), "by_status": {s: int(n) for s, n in runs.status.value_counts().items()},
                "unreadable_files": len(self.skipped.get("unreadable", ())), "damaged_rows": damaged,
                "files_with_duplicate_rows": len(self.skipped.get("duplicate", ()))}

    def runs(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self._read_all(self.runs_dir, RUNS_SCHEMA, columns)

    def epochs(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self._read_all(self.epochs_dir, EPOCHS_SCHEMA, None)
        path = self.epochs_dir / file_name(run_id, ".parquet")
        if not path.exists():
            return EPOCHS_SCHEMA.empty_table().to_pandas()
        try:
            return read_run_file(path, EPOCHS_SCHEMA).to_pandas()
        except Exception as exc:
            self.skip("unreadable", path, _why(exc))
            return EPOCHS_SCHEMA.empty_table().to_pandas()

    def has_run(self, run_id: str) -> bool:
        return (self.runs_dir / file_name(run_id, ".parquet")).exists()

    def get_run(self, run_id: str) -> dict | None:
        path = self.runs_dir / file_name(run_id, ".parquet")
        if not path.exists():
            return None
        try:
            table = self.checked(path, read_run_file(path, RUNS_SCHEMA))
        except Exception as exc:
            self.skip("unreadable", path, _why(exc))
            return None
        rows = [] if table is None else table.to_pylist()
        return rows[0] if rows else None
