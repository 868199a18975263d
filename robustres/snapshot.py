"""The store's read cache: `.snapshot/<folder>.parquet` holds every row of a folder's files with each
file's name, size key and mtime, so that a read opens only the files that changed since.

It is only a cache: the per-run files stay the truth, and a missing, damaged or stale snapshot just
means more files to read. The runs snapshot holds only rows that passed rows.py's checks, and
remembers the files it left out (so that they are warned about again without being read, and do
not make it stale at every read). A runs snapshot without this mark, or with an older version of
it, is read again from the files once: raise the version whenever rows.py's checks change. Other
folders' rows are not checked, and their snapshots carry no mark.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROWS_CHECKED = b"robustres_rows_checked"
ROWS_CHECK_VERSION = b"1"
SKIPPED_FILES = b"robustres_skipped"  # JSON: file name -> [size, inode, mtime, kind, reason]
# What a snapshot keeps of each file, to tell whether it changed since: name, size, inode, mtime
# (every write is a new file renamed into place: a new inode as well as an mtime). A snapshot with
# other key columns, such as the `_size` that once packed size and inode into one number, fails the
# schema check in `read` and is rebuilt from the files.
KEYS = [("_file", pa.string()), ("_bytes", pa.int64()), ("_inode", pa.uint64()), ("_mtime", pa.int64())]


def with_keys(schema: pa.Schema) -> pa.Schema:
    for name, kind in KEYS:
        schema = schema.append(pa.field(name, kind))
    return schema


def read(path: Path, schema: pa.Schema, checked: bool) -> tuple[pa.Table | None, dict[str, tuple]]:
    """(the snapshot's rows, the files it left out); (None, {}) when there is none to trust: missing,
    damaged, of another schema, or (`checked`, the runs) not checked by today's rules."""
    if not path.exists():
        return None, {}
    try:
        cached = pq.read_table(path)
        meta = cached.schema.metadata or {}
        if cached.schema.remove_metadata() != with_keys(schema) or \
                (checked and meta.get(ROWS_CHECKED) != ROWS_CHECK_VERSION):
            return None, {}
        skipped = {k: tuple(v) for k, v in json.loads(meta.get(SKIPPED_FILES, b"{}")).items()}
    except Exception:  # a damaged cache is no cache
        return None, {}
    return cached, skipped


def metadata(skipped: dict[str, list]) -> dict[bytes, bytes]:
    """The runs snapshot's mark: checked by today's rules, and the files left out."""
    return {ROWS_CHECKED: ROWS_CHECK_VERSION, SKIPPED_FILES: json.dumps(skipped).encode()}
