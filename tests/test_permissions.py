"""Permission denied, in every command (issue 22): a path under a folder this user may not enter
is one line, never a traceback; bad input (exit 2, nothing written) where the user named it,
exit 1 where doctor reports or the store fails under a command.

Real denials: as root, each command runs without the two capabilities that let root past
permission bits (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a folder of mode 000 stops it as it
stops any other user; as another user, mode 000 is enough."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_output_paths import image_folder, robustres_env, small_store

SETPRIV = shutil.which("setpriv")
WITHOUT_OVERRIDE = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def _denied(command: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([*WITHOUT_OVERRIDE, sys.executable, "-m", "robustres", *map(str, command)],
                          env=robustres_env(**env), capture_output=True, text=True, timeout=120)


@pytest.fixture
def locked(tmp_path):
    """A folder holding a store, an image folder, a data folder and a preset, that no one may enter."""
    if os.geteuid() == 0 and SETPRIV is None:
        pytest.skip("needs setpriv to run as root without CAP_DAC_OVERRIDE")
    folder = tmp_path / "locked"
    small_store(folder / "store")
    image_folder(folder / "img")
    (folder / "data").mkdir()
    (folder / "s.yaml").write_text("dataset: two-moons\ndepths: [3]\nh: [0.1]\nseeds: 1\nepochs: 1\n")
    folder.chmod(0)
    probe = subprocess.run([*WITHOUT_OVERRIDE, "ls", str(folder)], capture_output=True)
    if probe.returncode == 0:
        folder.chmod(0o755)
        pytest.skip("a folder of mode 000 does not stop this user")
    yield folder
    folder.chmod(0o755)


SEARCH = ["--dataset", "two-moons", "--depths", "3", "--h", "0.1,1", "--seeds", "3", "--epochs", "8", "--budget", "1"]
CASES = [
    (["report", "--store", "{L}/store"], {}, "store {L}/store: Permission denied"),
    (["train", "--depth", "3", "--epochs", "1", "--store", "{L}/store"], {}, "--store {L}/store: Permission denied"),
    (["train", "--dataset", "imagefolder", "--data-dir", "{L}/img", "--depth", "8", "--epochs", "1"], {},
     "--data-dir {L}/img: Permission denied"),
    (["train", "--dataset", "imagefolder", "--data-dir", "{L}/img", "--depth", "8", "--dry-run"], {},
     "--data-dir {L}/img: Permission denied"),
    (["train", "--dataset", "cifar10", "--depth", "8", "--dry-run"], {"ROBUSTRES_DATA": "{L}/data"},
     "$ROBUSTRES_DATA {L}/data: Permission denied"),
    (["sweep", "--config", "{L}/s.yaml"], {}, "sweep config {L}/s.yaml: cannot read {L}/s.yaml: Permission denied"),
    (["report", "--html", "{L}/report.html"], {}, "--html {L}/report.html: Permission denied"),
    (["report", "--plot", "{L}/figures"], {}, "--plot {L}/figures: Permission denied"),
    (["noise-eval", "--store", "{L}/store"], {}, "--store {L}/store: Permission denied"),
    (["search", "--store", "{L}/store", *SEARCH], {}, "--store {L}/store: Permission denied"),
]


@pytest.mark.parametrize("command,env,message", CASES, ids=lambda c: " ".join(c) if isinstance(c, list) else None)
def test_permission_denied_is_one_line_exit_two_and_writes_nothing(locked, tmp_path, command, env, message):
    fill = {"{L}": str(locked)}

    def filled(text):
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    store = tmp_path / "fresh-store"  # where a command that does not name one would write
    if command[0] == "report" and "--store" not in command:
        store = small_store(tmp_path / "readable")  # --html and --plot: a store to report on
    done = _denied([filled(c) for c in command], ROBUSTRES_STORE=str(store), **{k: filled(v) for k, v in env.items()})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert filled(message) in done.stderr and done.stdout == ""
    assert store.name == "readable" or not store.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_doctor_answers_a_data_folder_it_may_not_read(locked):
    done = _denied(["doctor", "--data-dir", locked / "data", "--store", locked / "store"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), done.stderr
    assert f"cannot read the data folder {locked / 'data'}" in errors[1] and "Permission denied" in errors[1]
    assert f"data {locked / 'data'}" in done.stdout  # the rest of the report is printed


def test_a_store_file_it_may_not_read_is_one_line_exit_one(tmp_path):
    if os.geteuid() == 0 and SETPRIV is None:
        pytest.skip("needs setpriv to run as root without CAP_DAC_OVERRIDE")
    store = small_store(tmp_path / "store")
    runs = Path(store) / "runs"
    runs.chmod(0)  # the store opens, its runs do not
    try:
        done = _denied(["train", "--depth", "3", "--epochs", "1", "--store", store])
    finally:
        runs.chmod(0o755)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Permission denied" in done.stderr


def test_a_store_folder_it_may_not_list_says_read_not_write(tmp_path):
    if os.geteuid() == 0 and SETPRIV is None:
        pytest.skip("needs setpriv to run as root without CAP_DAC_OVERRIDE")
    store = small_store(tmp_path / "store")
    runs = Path(store) / "runs"
    runs.chmod(0)
    try:
        done = _denied(["report", "--store", store])
    finally:
        runs.chmod(0o755)
    assert done.returncode == 1 and done.stderr == f"error: cannot read {runs}: Permission denied\n", done.stderr
