"""Faults: kill -9 at random moments, two sweeps sharing a store, a damaged store, a full or
read-only disk. Everything here runs real `robustres` processes on two-moons."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustres.checkpoints import load_checkpoint
from robustres.claims import Claims
from robustres.processes import process_start as _process_start
from robustres.store import Store

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "ci-smoke.yaml"
ROBUSTRES = [sys.executable, "-m", "robustres"]


def _env(store: Path) -> dict:
    return dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1",
                PYTHONUNBUFFERED="1")


def _load_kill_suite():
    spec = importlib.util.spec_from_file_location("kill_suite", ROOT / "benchmarks" / "kill_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_suite"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ kill -9 at random moments


def _three_trials(suite_name: str, seed: int, workdir):
    """Three trials of one of the kill suites (sweeps or searches); their counts, with no failure."""
    counts = getattr(_load_kill_suite(), suite_name)(trials=3, seed=seed, workdir=workdir)
    print(counts)
    assert counts.failures == []
    return counts


@pytest.mark.slow
def test_kill_suite_three_random_kills_lose_nothing(tmp_path):
    counts = _three_trials("run_suite", 11, tmp_path)
    assert counts.trials == 3 and counts.kills >= 3
    # The checks above looked at something: some kill found runs finished that then stayed untouched.
    assert counts.finished_at_kill + counts.resumed_mid_run > 0


@pytest.mark.slow
def test_kill_suite_searches_killed_at_random_and_at_a_runs_final_checkpoint_answer_the_same(tmp_path):
    counts = _three_trials("run_search_suite", 7, tmp_path)
    # Kills that landed (a random one may come after the search ended: the faster machine, the more).
    assert counts.trials == 3 and counts.kills >= counts.kills_at_final_checkpoint
    # Seed 7 draws a kill at a run's final checkpoint and a resume with other options: both were looked at.
    assert counts.kills_at_final_checkpoint >= 1 and counts.left_at_the_end >= 1
    assert counts.resumed_with_other_options >= 1


# ------------------------------------------------------------------ two sweeps, one store


@pytest.mark.slow
def test_two_overlapping_sweeps_at_once_train_each_run_once(tmp_path):
    common = ["--depths", "3", "--seeds", "2", "--epochs", "150", "--pack-size", "2", "--checkpoint-every", "0",
              "--json"]
    first = [*ROBUSTRES, "sweep", "--h", "0.1,0.5,1", *common]
    second = [*ROBUSTRES, "sweep", "--h", "0.5,1,2", *common]
    store = tmp_path / "store"
    a = subprocess.Popen(first, env=_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((store / "claims").glob("*.json")):
        time.sleep(0.02)  # the first sweep holds its claims
    b = subprocess.Popen(second, env=_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    rows_a = {r["run_id"]: r for r in json.loads(out_a)["runs"]}
    rows_b = {r["run_id"]: r for r in json.loads(out_b)["runs"]}
    union = rows_a.keys() | rows_b.keys()
    assert len(rows_a) == len(rows_b) == 6 and len(union) == 8
    trained = (6 - err_a.count("not retrained")) + (6 - err_b.count("not retrained"))
    assert trained == 8  # every run trained once, by one of the two
    assert "waiting for" in err_b  # the second found runs the first was training
    for run_id in rows_a.keys() & rows_b.keys():
        assert rows_a[run_id]["final_test_acc"] == rows_b[run_id]["final_test_acc"]
    check = Store(store)
    runs, epochs = check.runs(), check.epochs()
    assert sorted(runs.run_id) == sorted(union) and set(runs.status) <= {"completed", "diverged"}
    assert epochs.groupby("run_id").epoch.apply(lambda e: sorted(e) == list(range(1, len(e) + 1))).all()
    assert not check.warnings and not list(store.rglob("*.tmp")) and not list((store / "claims").glob("*.json"))


def _dry_run_ids(tmp_path, args) -> list[str]:
    done = subprocess.run([*ROBUSTRES, "sweep", *args, "--dry-run", "--json"], env=_env(tmp_path / "store"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [r for p in json.loads(done.stdout)["packs"] for r in p["run_ids"]]


def _claim(store: Path, run_id: str, owner: dict) -> Path:
    path = store / "claims" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))
    return path


@pytest.mark.slow
def test_a_dead_processs_claim_is_taken_over_a_live_ones_waited_for(tmp_path):
    args = ["--depths", "3", "--h", "0.1", "--seeds", "1", "--epochs", "5"]
    (run_id,) = _dry_run_ids(tmp_path, args)
    store = tmp_path / "store"
    here = socket.gethostname()

    gone = subprocess.Popen(["true"])
    gone.wait()
    _claim(store, run_id, {"host": here, "pid": gone.pid, "start": "1"})  # its process is dead: stale
    done = subprocess.run([*ROBUSTRES, "sweep", *args], env=_env(store), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "waiting" not in done.stderr, done.stderr
    assert Store(store).get_run(run_id)["status"] == "completed"

    args[-1] = "6"  # another run
    (run_id,) = _dry_run_ids(tmp_path, args)
    holder = subprocess.Popen(["sleep", "60"])
    _claim(store, run_id, {"host": here, "pid": holder.pid, "start": _process_start(holder.pid)})
    err = tmp_path / "err.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([*ROBUSTRES, "sweep", *args], env=_env(store), stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.time() + 60
    while time.time() < deadline and "waiting for 1 run" not in err.read_text():
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None and Store(store).get_run(run_id) is None  # waits, trains nothing
    holder.kill()
    holder.wait()
    assert proc.wait(timeout=120) == 0
    assert Store(store).get_run(run_id)["status"] == "completed"
    assert not list((store / "claims").glob("*.json"))


def test_a_claim_left_on_a_finished_run_by_a_dead_process_is_cleared(tmp_path):
    """Killed after storing a run's results but before releasing its claim: nothing would ever take
    that claim over (the run is finished), so the next sweep over the run deletes it; a live
    process's claim on a finished run is left alone."""
    args = ["--depths", "3", "--h", "0.1,0.2", "--seeds", "1", "--epochs", "2"]
    dead_run, live_run = _dry_run_ids(tmp_path, args)
    store = tmp_path / "store"
    done = subprocess.run([*ROBUSTRES, "sweep", *args], env=_env(store), capture_output=True, timeout=120)
    assert done.returncode == 0
    here = socket.gethostname()
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = _claim(store, dead_run, {"host": here, "pid": gone.pid, "start": "1"})
    holder = subprocess.Popen(["sleep", "60"])
    try:
        live = _claim(store, live_run, {"host": here, "pid": holder.pid, "start": _process_start(holder.pid)})
        done = subprocess.run([*ROBUSTRES, "sweep", *args], env=_env(store), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "not retrained" in done.stdout, done.stderr
        assert not dead.exists() and live.exists()
    finally:
        holder.kill()
        holder.wait()


def test_claims_from_another_host_go_stale_without_a_heartbeat(tmp_path):
    store = Store(tmp_path / "store")
    claims = Claims(store)
    path = _claim(store.root, "0123456789abcdef", {"host": "elsewhere", "pid": 1, "start": "1"})
    assert claims.holder("0123456789abcdef")["host"] == "elsewhere"
    assert claims.take(["0123456789abcdef"]) == ([], {"0123456789abcdef": {"host": "elsewhere", "pid": 1,
                                                                             "start": "1"}})
    old = time.time() - Claims.STALE_SECONDS - 1
    os.utime(path, (old, old))
    assert claims.holder("0123456789abcdef") is None
    assert claims.take(["0123456789abcdef"])[0] == ["0123456789abcdef"]
    assert json.loads(path.read_text())["pid"] == os.getpid()
    claims.release_all()
    assert not path.exists()


# ------------------------------------------------------------------ a damaged store


def test_a_damaged_store_is_read_around_and_repaired_by_the_next_sweep(tmp_path):
    store = tmp_path / "store"
    sweep = [*ROBUSTRES, "sweep", "--config", str(SMOKE), "--checkpoint-every", "0", "--json"]
    done = subprocess.run(sweep, env=_env(store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = {r["run_id"]: r["final_test_acc"] for r in json.loads(done.stdout)["runs"]}
    ids = sorted(expected)
    runs_dir, epochs_dir, ckpt_dir = store / "runs", store / "epochs", store / "checkpoints"

    truncated = runs_dir / f"{ids[0]}.parquet"
    truncated.write_bytes(truncated.read_bytes()[:100])
    garbage = epochs_dir / f"{ids[1]}.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    foreign = runs_dir / "fedcba9876543210.parquet"
    pq.write_table(pa.table({"colour": ["blue"], "size": [3]}), foreign)
    impostor = runs_dir / "00000000000000ff.parquet"  # another run's rows under this name
    shutil.copy(runs_dir / f"{ids[2]}.parquet", impostor)
    (ckpt_dir / f"{ids[3]}.pt").unlink()  # a finished run without its checkpoint
    # A run in the middle of training whose checkpoint was damaged: it must start over.
    row = Store(store).get_run(ids[4])
    Store(store).put_run({**row, "status": "running", "final_test_acc": None})
    (ckpt_dir / f"{ids[4]}.pt").write_bytes(b"\x80garbage")

    report = subprocess.run([*ROBUSTRES, "report", "--format", "json", "--plot", str(tmp_path / "figures")],
                            env=_env(store), capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    warnings = [line for line in report.stderr.splitlines() if line.startswith("warning:")]
    for path in (truncated, garbage, foreign, impostor):
        assert sum(str(path) in line for line in warnings) == 1, report.stderr
    assert json.loads(report.stdout)["groups"] and list((tmp_path / "figures").glob("*.png"))  # the rest is reported

    noise = subprocess.run([*ROBUSTRES, "noise-eval", "--config", str(SMOKE), "--levels", "0,0.2"],
                           env=_env(store), capture_output=True, text=True, timeout=120)
    assert noise.returncode == 0, noise.stderr
    assert f"skipping run {ids[3]}" in noise.stderr and str(ckpt_dir / f"{ids[3]}.pt") in noise.stderr

    again = subprocess.run(sweep, env=_env(store), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"unreadable checkpoint {ckpt_dir / f'{ids[4]}.pt'}" in again.stderr
    result = {r["run_id"]: r for r in json.loads(again.stdout)["runs"]}
    assert {r: v["final_test_acc"] for r, v in result.items()} == expected  # retrained from scratch, same result
    assert again.stderr.count("not retrained") == len(ids) - 2  # all but the truncated row and the running run
    assert len(Store(store).epochs(ids[4])) == 3


# ------------------------------------------------------------------ a full or read-only disk

UNSHARE = shutil.which("unshare")


def _in_own_mount(tmp_path, mount_options: str, script: str) -> subprocess.CompletedProcess:
    """Run `script` (sh) with a fresh tmpfs at $MNT, in a user and mount namespace of its own."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    wrapped = f"mount -t tmpfs -o {mount_options} tmpfs {mnt} && MNT={mnt} && {script}"
    return subprocess.run([UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c", wrapped],
                          env=_env(mnt / "store"), capture_output=True, text=True, timeout=300)


def _namespaces_work(tmp_path) -> bool:
    if UNSHARE is None:
        return False
    (tmp_path / "probe").mkdir()
    probe = subprocess.run([UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {tmp_path / 'probe'}"], capture_output=True)
    return probe.returncode == 0


CHECK = ("import sys; from benchmarks.kill_suite import unreadable_files; from pathlib import Path; "
         "root = Path(sys.argv[1]); bad = unreadable_files(root) if root.exists() else []; "
         "tmp = [str(p) for p in root.rglob('*.tmp')] if root.exists() else []; print('CHECK', len(bad), len(tmp))")


@pytest.mark.parametrize("size", ["48k", "160k"])
def test_a_full_disk_is_a_clear_error_exit_one_and_no_partial_file(tmp_path, size):
    if not _namespaces_work(tmp_path):
        pytest.skip("needs unshare with user and mount namespaces")
    result = _in_own_mount(tmp_path, f"size={size}", (
        f"{sys.executable} -m robustres sweep --config {SMOKE} --checkpoint-every 0; echo EXIT $?; "
        f"cd {ROOT} && {sys.executable} -c \"{CHECK}\" $MNT/store"))
    lines = result.stdout.splitlines()
    assert "EXIT 1" in lines, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "CHECK 0 0" in lines  # every file there is whole, no temporary left


def test_a_read_only_store_is_a_clear_error_exit_one(tmp_path):
    if not _namespaces_work(tmp_path):
        pytest.skip("needs unshare with user and mount namespaces")
    result = _in_own_mount(tmp_path, "ro,size=1m", (
        f"{sys.executable} -m robustres sweep --config {SMOKE}; echo EXIT $?; ls -A $MNT | wc -l"))
    assert result.stdout.split() == ["EXIT", "1", "0"], result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Read-only file system" in errors[0], result.stderr


def test_a_store_path_that_is_a_file_is_a_clear_error_exit_one(tmp_path):
    (tmp_path / "store").write_text("not a folder")
    done = subprocess.run([*ROBUSTRES, "sweep", "--config", str(SMOKE)], env=_env(tmp_path / "store"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert (tmp_path / "store").read_text() == "not a folder"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # what unpickling would run


def test_a_checkpoint_holding_code_is_never_unpickled(tmp_path):
    import torch


    path, marker = tmp_path / "0123456789abcdef.pt", tmp_path / "pwned"
    torch.save({"run_id": "0123456789abcdef", "payload": _Exploit(marker)}, path)
    assert load_checkpoint(path, "0123456789abcdef") is None  # refused, read as damaged
    assert not marker.exists()
