"""Claims: which live process is training a run, so that sweeps sharing a store never train the
same run twice. A claim is `claims/<run_id>.json` in the store; see `Claims`."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from .atomic import write_bytes_atomic
from .processes import alive, process_start
from .store import RUN_ID, Store, StoreError, file_name


class Claims:
    """Claim files: a run is trained by one process at a time, even when sweeps share a store.

    A claim is `claims/<run_id>.json` naming its host, pid and the process's start time. Another
    process may take a claim over only when it is stale: on this host, its process is gone (or its
    pid now belongs to a newer process); from another host (a store on a shared file system), its
    file was not refreshed for `STALE_SECONDS` (a heartbeat thread refreshes every live claim).
    Reading and taking claims happens under a short `flock` on `claims/.lock`, so two processes
    never both decide that they hold one. Used as a context manager (`with Claims(store) as
    claims:`), it releases every claim it took when the block ends.
    """

    HEARTBEAT_SECONDS = 30.0
    STALE_SECONDS = 300.0

    def __init__(self, store: Store):
        self.folder = store.root / "claims"
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc) -> None:
        """Every claim released and the heartbeat stopped, however the block ends (Ctrl-C too)."""
        self.release_all()

    def _path(self, run_id: str) -> Path:
        return self.folder / file_name(run_id, ".json")

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
            if not isinstance(pid, int) or not alive(pid):
                return None
            start = process_start(pid)
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
                try:
                    write_bytes_atomic(path, json.dumps(self.me).encode())
                except OSError as exc:
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

    def count_live(self) -> int:
        """How many runs of the store a live process is training now."""
        names = self.folder.glob("*.json") if self.folder.is_dir() else []
        return sum(1 for p in names if RUN_ID.match(p.stem) and self.holder(p.stem) is not None)

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
