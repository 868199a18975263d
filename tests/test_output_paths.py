"""Output paths and OS errors (issue 22): what is at an output path decides where the bytes go
(symlinks written through, devices and FIFOs refused, `-` is stdout), temporary names fit the
file system, long error lines keep their reason, dangling image symlinks, and Ctrl-C in the first
instant of a command."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from robustres import atomic
from robustres.spec import make_run_spec
from robustres.store import Store, config_columns

PACKAGE_ROOT = Path(__import__("robustres").__file__).resolve().parents[1]  # the code under test, also in subprocesses


def robustres_env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1", **extra)


def small_store(root: Path) -> Path:
    """Six finished two-moons runs, written directly (no training): enough for a report."""
    store = Store(root)
    for h in (0.1, 1.0):
        for seed in range(3):
            spec = make_run_spec(dataset="two-moons", depth=3, h=h, seed=seed, epochs=2)
            store.put_run({"run_id": spec.run_id, **config_columns(spec), "status": "completed",
                           "final_test_acc": 0.9 + 0.01 * seed, "best_test_acc": 0.95, "epochs_done": 2})
    return root


@pytest.fixture
def store(tmp_path):
    return small_store(tmp_path / "store")


def _one_error(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


# ------------------------------------------------------------------ what is at the target


def _char_device(path: Path) -> Path:
    """A copy of /dev/null made with mknod (the real one is never touched)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"mknod is not allowed here: {exc}")
    return path


def test_html_at_a_character_device_is_refused_and_the_device_stays(cli, store, tmp_path):
    device = _char_device(tmp_path / "null")
    code, out, err = cli("report", "--html", device)
    assert code == 2 and out == "", err
    _one_error(err)
    assert "is a character device, not a regular file" in err and "- for stdout" in err
    assert stat.S_ISCHR(os.lstat(device).st_mode)  # once replaced by a plain file of ~40 KB


def test_html_at_a_fifo_is_refused_and_the_fifo_stays(cli, store, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = cli("report", "--html", fifo)
    assert code == 2 and "is a FIFO, not a regular file" in err
    _one_error(err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_html_through_a_symlink_replaces_its_target_and_keeps_the_link(cli, store, tmp_path):
    (tmp_path / "pages").mkdir()
    target = tmp_path / "pages" / "report.html"
    target.write_text("old")
    link = tmp_path / "latest.html"
    link.symlink_to(target)
    dangling = tmp_path / "new.html"
    dangling.symlink_to(tmp_path / "pages" / "made.html")
    assert cli("report", "--html", link)[0] == 0
    assert cli("report", "--html", dangling)[0] == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert dangling.is_symlink() and (tmp_path / "pages" / "made.html").read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.rglob("*.tmp"))


def test_html_with_a_trailing_slash_is_refused_and_writes_no_file(cli, store, tmp_path):
    code, _, err = cli("report", "--html", "x.html/")
    assert code == 2 and "--html x.html/ ends with a slash" in err
    _one_error(err)
    assert not (tmp_path / "x.html").exists()


def test_html_dash_writes_the_page_to_stdout_and_no_file(cli, store, tmp_path):
    code, out, err = cli("report", "--html", "-")
    assert code == 0, err
    assert out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>") and out.count("<svg") >= 1
    assert "robustres report:" not in out  # the page alone: the table does not go with it
    assert not (tmp_path / "-").exists()
    code, out, err = cli("report", "--html", "-", "--format", "json")
    assert code == 2 and out == "" and "both write to stdout" in err


def test_a_figure_name_taken_by_a_fifo_is_refused_before_the_report(cli, store, tmp_path):
    figures = tmp_path / "figs"
    figures.mkdir()
    fifo = figures / "fig6-acc-vs-h-two-moons.png"
    os.mkfifo(fifo)  # savefig would have blocked on it for ever
    code, _, err = cli("report", "--plot", figures)
    assert code == 2 and str(fifo) in err and "FIFO" in err
    _one_error(err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not list(figures.glob("*.svg"))


def test_figures_are_written_atomically_and_through_symlinks(cli, store, tmp_path):
    figures, elsewhere = tmp_path / "figs", tmp_path / "elsewhere.png"
    figures.mkdir()
    elsewhere.write_bytes(b"an older figure")
    before = os.stat(elsewhere).st_ino
    (figures / "fig6-acc-vs-h-two-moons.png").symlink_to(elsewhere)
    assert cli("report", "--plot", figures)[0] == 0
    assert (figures / "fig6-acc-vs-h-two-moons.png").is_symlink()
    assert elsewhere.read_bytes().startswith(b"\x89PNG")
    # A new file renamed over the old one (savefig rewrote it in place: a reader could see half of it).
    assert os.stat(elsewhere).st_ino != before
    assert not list(tmp_path.rglob(".*.tmp"))


def test_write_atomic_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(atomic.NotRegular, match="a FIFO"):
        atomic.write_bytes_atomic(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]


# ------------------------------------------------------------------ names near NAME_MAX


def test_a_temporary_name_never_exceeds_name_max_and_keeps_the_pid(tmp_path):
    name = "é" * 120 + ".html"  # 245 bytes: legal, and too long for `.<name>.<pid>.tmp`
    tmp = atomic.temporary_name(tmp_path / name)
    assert len(tmp.name.encode()) <= 255 and tmp.parent == tmp_path
    assert tmp.name.startswith(".é") and tmp.name.endswith(f".{atomic.HOST}-{os.getpid()}.tmp")
    assert atomic.temporary_name(tmp_path / "a.parquet").name == f".a.parquet.{atomic.HOST}-{os.getpid()}.tmp"
    assert atomic.writer_of(tmp) == (atomic.HOST, os.getpid())


def test_a_long_legal_html_name_is_written(cli, store, tmp_path):
    name = "r" * 250 + ".html"  # 255 bytes, the most a name may have
    code, _, err = cli("report", "--html", name)
    assert code == 0, err
    assert (tmp_path / name).read_text().startswith("<!DOCTYPE html>")
    code, _, err = cli("report", "--html", "r" + name)  # 256: refused before the report, with the reason
    assert code == 2 and "File name too long" in err


def test_the_sweeper_still_tells_a_dead_writers_long_temporary_by_its_pid(tmp_path):
    store = Store(tmp_path / "store")
    store.create()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    litter = atomic.temporary_name(store.runs_dir / ("x" * 250)).name.replace(f"-{os.getpid()}.tmp", f"-{pid}.tmp")
    litter = litter.replace("x", "", max(0, len(litter.encode()) - 255))  # the dead pid may have more digits
    (store.runs_dir / litter).write_bytes(b"half")
    assert len(litter.encode()) <= 255 and store.remove_stale_temporaries() == 1


# ------------------------------------------------------------------ error lines


def test_an_error_line_keeps_its_reason_however_long_the_path(cli, tmp_path):
    long_store = tmp_path / ("x" * 4000)
    code, _, err = cli("train", "--depth", "3", "--epochs", "1", "--store", long_store)
    assert code == 2
    _one_error(err)
    assert len(err.strip()) <= len("error: ") + 300 and err.strip().endswith("File name too long")


@pytest.mark.parametrize("variable,command", [("ROBUSTRES_STORE", ["report"]),
                                              ("ROBUSTRES_DATA", ["train", "--depth", "3", "--epochs", "1"])])
def test_a_whitespace_only_variable_is_named_not_a_flag(cli, tmp_path, monkeypatch, variable, command):
    monkeypatch.setenv(variable, "   ")
    code, _, err = cli(*command)
    assert code == 2 and f"${variable} holds only whitespace" in err and "--" not in err
    _one_error(err)
    assert sorted(os.listdir(tmp_path)) == []  # no store, no folder named by spaces


# ------------------------------------------------------------------ dangling image symlinks


def image_folder(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("command", [["train", "--depth", "8", "--epochs", "1"],
                                     ["search", "--depths", "8", "--h", "0.1,1", "--seeds", "3", "--epochs", "8",
                                      "--budget", "1"]])
def test_a_dangling_symlink_in_an_image_folder_is_bad_input(cli, tmp_path, command):
    data = image_folder(tmp_path / "pets")
    link = data / "train" / "a" / "gone.png"
    link.symlink_to(tmp_path / "deleted.png")
    code, _, err = cli(*command, "--dataset", "imagefolder", "--data-dir", data)
    assert code == 2
    _one_error(err)
    assert f"{link} is a symlink to {tmp_path / 'deleted.png'}, which does not exist" in err
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------ Ctrl-C at once

EARLY = ("import os, signal, sys, threading\n"
         "import robustres\n"  # the package's 3 lines; what follows is the command's start, as its script has it
         "threading.Timer(float(sys.argv[1]), os.kill, (os.getpid(), signal.SIGINT)).start()\n"
         "sys.argv = ['robustres'] + sys.argv[2:]\n"
         "from robustres.cli import run\n"
         "run()\n")


@pytest.mark.parametrize("command", [["report", "--format", "json"],
                                     ["search", "--dataset", "two-moons", "--depths", "3", "--h", "0.1,1", "--seeds",
                                      "3", "--epochs", "400", "--budget", "1"]])
def test_ctrl_c_in_the_first_instant_is_the_interrupt_line_and_130(tmp_path, command):
    # SIGINT from 10 ms to 0.3 s after the command's start: during the imports, the parsing and the
    # first work of the command; each time the one line and 130, never a traceback.
    small_store(tmp_path / "store")
    for delay in (0.01, 0.015, 0.02, 0.04, 0.08, 0.15, 0.3):
        done = subprocess.run([sys.executable, "-c", EARLY, str(delay), *command], env=robustres_env(
            ROBUSTRES_STORE=str(tmp_path / "store")), capture_output=True, text=True, timeout=120)
        assert done.returncode == 130, (delay, done.returncode, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("interrupted"), (delay, done.stderr)
        trains = command[0] == "search"
        assert ("checkpoint" in done.stderr) == trains, done.stderr  # report trains nothing: no resume to promise


# ------------------------------------------------------------------ a full disk under --html

UNSHARE = "/usr/bin/unshare"


def test_a_full_disk_under_html_is_one_line_exit_one_and_no_temporary(tmp_path, store):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=16k tmpfs {mnt} && {sys.executable} -m robustres report --store {store} "
              f"--html {mnt}/report.html; echo EXIT $?; ls -A {mnt}")
    done = subprocess.run([UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c", script], env=robustres_env(),
                          capture_output=True, text=True, timeout=120)
    if "EXIT" not in done.stdout:
        pytest.skip(f"needs unshare with user and mount namespaces: {done.stderr.strip()[-200:]}")
    lines = done.stdout.split("EXIT ")[-1].split()
    assert lines == ["1"], done.stdout + done.stderr  # exit 1, and nothing left in the folder
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {mnt}/report.html: No space left on device"], done.stderr
    assert "Traceback" not in done.stderr


def test_plot_dash_and_a_plot_link_to_nothing_are_refused_naming_why(cli, store, tmp_path):
    code, out, err = cli("report", "--store", store, "--plot", "-")
    assert code == 2 and not (tmp_path / "-").exists()  # it made a folder named "-"
    _one_error(err)
    assert "figures are several files and need a folder" in err
    (tmp_path / "figs").symlink_to(tmp_path / "newplots")
    code, out, err = cli("report", "--store", store, "--plot", "figs")
    assert code == 2  # it said "cannot write figs: File exists"
    _one_error(err)
    assert f"is a symlink to {tmp_path / 'newplots'}, which does not exist" in err
