"""Paths the user names, checked before anything is computed or written: report's --html file and
--plot folder, the store, the data folder, a preset. What is there decides: nothing (fine, it is
made), a regular file or folder (fine), a symlink (written through to its target), a device, FIFO
or socket (refused: an atomic rename would replace it with a plain file), a place this user may not
look into or write (refused, naming the reason)."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..atomic import NotRegular, final_target, kind_of
from ..spec import SpecError, StoreError

STDOUT = "-"  # --html -: the page on stdout
FIGURE_SUFFIXES = (".png", ".svg")


def stat_of(path: Path, what: str) -> os.stat_result | None:
    """`path`'s status, None when nothing is there; SpecError when it cannot be looked at (permission
    denied on a folder above it, a name too long, a symlink loop)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SpecError(f"{what}: {_where(exc, path, 'cannot look at')}{exc.strerror or exc}") from None


def _where(exc: OSError, path: Path, doing: str) -> str:
    """The place an error names, when it is not the path itself (a folder above it, a link's target)."""
    return "" if exc.filename in (None, str(path)) else f"{doing} {exc.filename}: "


def check_listable(folder: Path, what: str) -> None:
    """An existing folder whose entries can be read."""
    try:
        with os.scandir(folder):
            pass
    except OSError as exc:
        raise SpecError(f"{what}: {_where(exc, folder, 'cannot read')}{exc.strerror or exc}") from None


def check_takes_files(folder: Path, what: str) -> None:
    """A file can be made in `folder` (made and removed now, so a read-only place fails early)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SpecError(f"{what}: cannot write into {folder}: {exc.strerror or exc}") from None


def check_page_path(path: str) -> None:
    """--html names a file to write (or `-`, stdout): not a folder, not a device or FIFO, in a folder
    that exists and takes files. A symlink is written through, so its target is what is checked."""
    if path == STDOUT:
        return
    if not path.strip():
        raise SpecError("--html is empty; name a file")
    page = Path(path)
    found = stat_of(page, f"--html {path}")
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise SpecError(f"--html {path} is a folder; name a file, e.g. {page / 'report.html'}")
    if path.endswith(("/", os.sep)):  # Path() drops the slash: x.html/ would write x.html
        raise SpecError(f"--html {path} ends with a slash, as a folder does; name a file ({path.rstrip('/' + os.sep)})")
    try:
        target = final_target(page)
    except NotRegular as exc:
        raise SpecError(f"--html {path} is {exc.kind}, not a regular file; "
                        "name a file, or - for stdout") from None
    except OSError as exc:
        raise SpecError(f"--html {path}: {exc.strerror or exc}") from None
    folder = target.parent
    found = stat_of(folder, f"--html {path}")
    if found is None or not stat.S_ISDIR(found.st_mode):
        raise SpecError(f"--html {path}: the folder {folder} does not exist")
    check_takes_files(folder, f"--html {path}")
    stat_of(target, f"--html {path}")  # a name longer than the file system takes fails here, not after the report


def check_plot_folder(folder: str) -> None:
    """--plot names a folder that is, or can be made, writable, holding no figure name that is a
    device or FIFO; anything else is bad input."""
    if not str(folder).strip():
        raise SpecError("--plot is empty; name a folder")
    if str(folder) == STDOUT:  # as --html - means stdout, a folder named "-" would surprise
        raise SpecError("--plot - : figures are several files and need a folder (--html - writes the page to "
                        "stdout)")
    path = Path(folder)
    if os.path.islink(path) and not path.exists():
        raise SpecError(f"--plot {folder} is a symlink to {os.readlink(path)}, which does not exist; name a folder")
    found = stat_of(path, f"--plot {folder}")
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise SpecError(f"--plot {folder} is {'a file' if stat.S_ISREG(found.st_mode) else kind_of(found.st_mode)}, "
                        "not a folder")
    try:  # made now, and a file written into it, so that a place that takes none fails before the store is read
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        names = [entry.path for entry in os.scandir(path) if entry.name.endswith(FIGURE_SUFFIXES)]
    except OSError as exc:
        raise SpecError(f"--plot {folder}: cannot write {exc.filename or folder}: {exc.strerror or exc}") from None
    for name in names:
        try:
            final_target(Path(name))
        except OSError as exc:  # a figure's name taken by a FIFO or device (or a symlink to one)
            raise SpecError(f"--plot {folder}: {name} is there and {exc.strerror or exc}; figures are written "
                            "under such names") from None


@contextmanager
def page_target(html: str | None):
    """Where report writes its page: the path given; for `-`, a temporary file whose text goes to
    stdout once written (it is not when no run matched)."""
    if html != STDOUT:
        yield html
        return
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        yield str(page)
        if page.exists():
            sys.stdout.write(page.read_text(encoding="utf-8"))
            sys.stdout.flush()


def write_failed(exc: OSError) -> StoreError:
    """A page or figure that could not be written once the checks passed (a full disk, a FIFO made
    since): the environment failed, exit 1, as a store that cannot be written."""
    return StoreError(f"cannot write {exc.filename or 'the report'}: {exc.strerror or exc}")
