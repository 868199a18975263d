"""The one way this package writes a file: atomically.

Readers see the old file or the new one, never a part of one: the bytes go to a temporary file in
the same folder (`.<name>.<pid>.tmp`, so a sweeper can tell a dead writer's litter by its pid),
are flushed and fsynced, and the file is renamed over the target. The temporary file never
outlives a failure. Every writer in the package (store rows, claims, checkpoints, data caches)
comes through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temporary file, then rename it to `path`; OSErrors propagate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:  # through a file object, a full disk is an OSError (ENOSPC)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, blob: bytes) -> None:
    write_atomic(path, lambda f: f.write(blob))
