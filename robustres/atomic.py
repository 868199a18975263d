"""The one way this package writes a file: atomically.

Readers see the old file or the new one, never a part of one: the bytes go to a temporary file in
the same folder (`.<name>.<host>-<pid>.tmp`, so a sweeper can tell a dead writer's litter by its
host and pid),
are flushed and fsynced, and the file is renamed over the target. The temporary file never
outlives a failure. Every file the package writes comes through here (store rows, claims,
checkpoints, data caches, search state, report's page and figures; tests/test_house.py checks it)
but two: a Ray worker's scratch copies of checkpoints, in a temporary folder no other process
reads, and claims.py's lock file, created empty and never written. torchvision downloads CIFAR-10
itself (checked against its checksum).

What is at the target decides where the bytes go: a symlink is written through (its final target
is replaced, the link stays), and anything there that is not a regular file (a device such as
/dev/null, a FIFO, a socket) is refused: a rename would replace it with a plain file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
from pathlib import Path
from typing import BinaryIO, Callable

NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems; pathconf says when it can
KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class NotRegular(OSError):
    """The target exists and is not a regular file (a device, a FIFO, a socket, a folder)."""

    def __init__(self, path, kind: str):
        super().__init__(errno.EEXIST, f"it is {kind}, not a regular file", str(path))
        self.kind = kind


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


# Which machine wrote a temporary file: a pid means something only on its own host, and a store may
# be shared by several (claims.py). A hash, since host names hold dots.
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name(path: Path) -> Path:
    """`.<name>.<host>-<pid>.tmp` beside `path`; a name too long for that keeps its head and gets a
    hash of the whole (the temporary never exceeds the file system's limit where the target fits it)."""
    suffix = f".{HOST}-{os.getpid()}.tmp"
    name = os.fsencode(path.name)
    room = _name_max(path.parent) - 1 - len(suffix)
    if len(name) > room:
        digest = hashlib.sha256(name).hexdigest()[:12]
        cut = room - 13
        while cut > 0 and name[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        name = name[:cut] + b"~" + digest.encode()
    return path.with_name("." + os.fsdecode(name) + suffix)


def writer_of(path: Path) -> tuple[str | None, int] | None:
    """(host, pid) of the writer of a temporary file of ours; host None for names written before
    hosts were named (`.<name>.<pid>.tmp`); None for any other file."""
    if not (path.name.startswith(".") and path.name.endswith(".tmp")):
        return None
    tag = path.name[:-4].rsplit(".", 1)[-1]
    host, _, pid = tag.rpartition("-")
    if not pid.isdigit() or (host and len(host) != len(HOST)):
        return None
    return host or None, int(pid)


def kind_of(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def final_target(path: Path) -> Path:
    """Where writing `path` lands: symlinks followed (one that dangles names the file it would
    create); NotRegular when something other than a regular file is there."""
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise NotRegular(path, kind_of(mode))
    return path


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temporary file, then rename it to `path`; OSErrors propagate."""
    linked = os.path.islink(path)
    path = final_target(Path(path))
    if not linked:  # a link's target folder must be there: no folders made wherever a link points
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:  # through a file object, a full disk is an OSError (ENOSPC)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename in (None, str(tmp)):
            exc.filename = str(path)  # the error names the file the caller asked for, not our temporary
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, blob: bytes) -> None:
    write_atomic(path, lambda f: f.write(blob))
