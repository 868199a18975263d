import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustres.store import Store

ROBUSTRES = [sys.executable, "-m", "robustres"]


def test_train_json_reports_every_run_and_stores_them(cli, tmp_path):
    code, out, err = cli("train", "--dataset", "two-moons", "--depth", "4", "--epochs", "5",
                         "--h", "0.1,1", "--seed", "0,1", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert len(runs) == 4 and {(r["h"], r["seed"]) for r in runs} == {(0.1, 0), (1.0, 0), (0.1, 1), (1.0, 1)}
    assert set(runs[0]) == {"run_id", "dataset", "depth", "h", "seed", "status", "final_test_acc",
                            "best_test_acc", "epochs_done", "params", "seconds"}
    assert all(r["status"] == "completed" and r["epochs_done"] == 5 and 0.5 < r["final_test_acc"] <= 1 for r in runs)
    assert "epoch 5/5" in err  # progress lines go to stderr with --json

    store = Store(tmp_path / "store")
    assert sorted(store.runs().run_id) == sorted(r["run_id"] for r in runs)
    assert len(store.epochs()) == 4 * 5
    assert all(store.checkpoint_path(r["run_id"]).exists() for r in runs)


def test_a_finished_run_is_reported_from_the_store_not_retrained(cli, tmp_path):
    args = ("train", "--depth", "4", "--epochs", "3", "--json")
    code, out, _ = cli(*args)
    first = json.loads(out)["runs"][0]
    store = Store(tmp_path / "store")
    stamp = store.get_run(first["run_id"])["updated_at"]
    time.sleep(1.1)
    code, out, err = cli(*args)
    assert code == 0 and json.loads(out)["runs"][0] == first
    assert "not retrained" in err and store.get_run(first["run_id"])["updated_at"] == stamp
    code, out, err = cli(*args, "--force")
    assert code == 0 and "not retrained" not in err
    assert store.get_run(first["run_id"])["updated_at"] != stamp


def test_diverged_runs_exit_zero_and_are_recorded(cli, tmp_path):
    code, out, err = cli("train", "--depth", "30", "--h", "20", "--epochs", "3", "--json")
    assert code == 0, err
    run = json.loads(out)["runs"][0]
    assert run["status"] == "diverged" and run["final_test_acc"] is None
    row = Store(tmp_path / "store").get_run(run["run_id"])
    assert row["diverged_epoch"] == 1 and row["diverged_step"] >= 1


def test_plain_output_ends_with_a_summary_table(cli):
    code, out, _ = cli("train", "--depth", "30", "--h", "1,0.1", "--epochs", "4")
    assert code == 0
    assert "epoch 4/4" in out and "robustres train: 2 run(s)" in out
    assert "diverged" in out and "completed" in out


def test_dry_run_json_resolves_the_config_and_writes_nothing(cli, tmp_path):
    code, out, err = cli("train", "--dataset", "cifar10", "--depth", "110", "--h", "0.1,1", "--dry-run", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert [r["h"] for r in runs] == [0.1, 1.0]
    r = runs[0]
    assert r["params"] == 1_730_714 and 250e6 < r["flops_per_image"] < 256e6
    assert (r["epochs"], r["batch_size"], r["lr"], r["milestones"]) == (80, 128, 0.1, [40, 60])
    assert r["device"] == "cpu" and len(r["run_id"]) == 16
    assert not (tmp_path / "store").exists() and not (tmp_path / "data").exists()
    code, out, _ = cli("train", "--dataset", "cifar10", "--dry-run")
    assert code == 0 and "nothing trained" in out


def test_a_failing_pack_exits_one_is_recorded_and_the_next_pack_goes_on(cli, tmp_path, monkeypatch):
    from robustres import engine

    real = engine.train

    def flaky(specs, *args, **kwargs):
        if any(spec.h == 1.0 for spec in specs):
            raise RuntimeError("simulated CUDA error")
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(engine, "train", flaky)
    code, out, _ = cli("train", "--depth", "4", "--epochs", "2", "--h", "1,0.1", "--pack-size", "1", "--json")
    assert code == 1
    status = {r["h"]: r["status"] for r in json.loads(out)["runs"]}
    assert status == {1.0: "failed", 0.1: "completed"}
    failed = [r for _, r in Store(tmp_path / "store").runs().iterrows() if r.status == "failed"]
    assert "simulated CUDA error" in failed[0].error
    # Re-running retries the failed run only.
    monkeypatch.setattr(engine, "train", real)
    code, out, err = cli("train", "--depth", "4", "--epochs", "2", "--h", "1,0.1", "--json")
    assert code == 0 and {r["status"] for r in json.loads(out)["runs"]} == {"completed"}
    assert err.count("not retrained") == 1


def test_version_and_help(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("robustres ")
    code, out, _ = cli("train", "--help")
    assert code == 0 and "--h" in out and "--dry-run" in out


def _env(tmp_path: Path, store: str) -> dict:
    env = dict(os.environ, ROBUSTRES_STORE=str(tmp_path / store), ROBUSTRES_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_finishes_like_an_uninterrupted_run(tmp_path):
    args = ROBUSTRES + ["train", "--depth", "10", "--epochs", "60", "--n-train", "2000", "--json",
                        "--checkpoint-every", "0"]
    whole = subprocess.run(args, env=_env(tmp_path, "whole"), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)["runs"][0]

    store = Store(tmp_path / "cut")
    proc = subprocess.Popen(args, env=_env(tmp_path, "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = expected["run_id"]
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some, not all, epochs are done
        if len(store.epochs(run_id)) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    row = store.get_run(run_id)
    # (the runs row may lag the epochs file by one write when the kill lands between them)
    assert row["status"] == "running" and 4 <= row["epochs_done"] < 60, "the kill came too late to test anything"

    again = subprocess.run(args, env=_env(tmp_path, "cut"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stderr
    resumed = json.loads(again.stdout)["runs"][0]
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 60
    assert resumed["final_test_acc"] == expected["final_test_acc"]
    assert resumed["best_test_acc"] == expected["best_test_acc"]
    a, b = Store(tmp_path / "whole").epochs(run_id), store.epochs(run_id)
    assert b.epoch.tolist() == list(range(1, 61))
    assert a.test_acc.tolist() == b.test_acc.tolist() and a.train_loss.tolist() == b.train_loss.tolist()
    assert not list((tmp_path / "cut").rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_release_the_runs_and_print_the_message(tmp_path, sig, code):
    args = ROBUSTRES + ["train", "--depth", "10", "--epochs", "400", "--n-train", "2000", "--checkpoint-every", "0"]
    store = Store(tmp_path / "cut")
    proc = subprocess.Popen(args, env=_env(tmp_path, "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (store.runs_dir.exists() and len(store.epochs()) >= 3):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith("interrupted: each run's last checkpoint is in the store"), err
    assert not list((tmp_path / "cut" / "claims").glob("*.json"))  # released, as after Ctrl-C
    assert not list((tmp_path / "cut").rglob("*.tmp"))
    (row,) = store.runs().to_dict("records")
    assert row["status"] == "running" and 3 <= row["epochs_done"] < 400  # what its checkpoint holds


def test_h_and_seed_lists_train_as_one_pack_stored_as_separate_runs(cli, tmp_path):
    code, out, err = cli("train", "--depth", "5", "--epochs", "3", "--h", "0.1,1", "--seed", "1,2,3", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert len(runs) == 6 and len({r["run_id"] for r in runs}) == 6
    assert "pack 1/1: 6 run(s)" in err
    store = Store(tmp_path / "store")
    assert len(store.runs()) == 6 and len(store.epochs()) == 18
    assert all(store.checkpoint_path(r["run_id"]).exists() for r in runs)
    # Each run's result is its own: the same config trained alone gives the same run and numbers.
    code, out, _ = cli("train", "--depth", "5", "--epochs", "3", "--h", "1", "--seed", "2", "--json",
                       "--store", tmp_path / "alone")
    alone = json.loads(out)["runs"][0]
    packed = next(r for r in runs if r["h"] == 1.0 and r["seed"] == 2)
    assert alone["run_id"] == packed["run_id"]
    assert alone["final_test_acc"] == pytest.approx(packed["final_test_acc"], abs=0.01)


def test_pack_size_caps_the_pack(cli):
    code, out, err = cli("train", "--depth", "3", "--epochs", "1", "--h", "0.1,0.5,1", "--seed", "0,1",
                         "--pack-size", "4", "--no-fuse", "--json")
    assert code == 0, err
    assert "pack 1/2: 3 run(s) (in turn)" in err and "pack 2/2: 3 run(s) (in turn)" in err


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "--lr", "0"],
                                  ["sweep", "--depths", "3", "--h", "0.1", "--seeds", "0..10000000"],
                                  ["report", "--store", "missing"], ["noise-eval", "--levels", "2"]])
def test_help_and_bad_input_are_answered_before_torch_is_imported(tmp_path, argv):
    # The start-up targets (benchmarks/startup.py) hold only while these never import torch or pandas.
    probe = ("import sys\nfrom robustres.cli import main\ncode = main(sys.argv[1:])\n"
             "heavy = sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules)\n"
             "print(code, ','.join(heavy) or '-', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    code, heavy = done.stderr.strip().splitlines()[-1].split()
    assert heavy == "-", done.stderr
    assert int(code) == (0 if "--help" in argv else 2), done.stderr


def test_a_command_started_with_sigint_ignored_keeps_ignoring_it(tmp_path):
    """`cmd &` in a script and nohup start a process with SIGINT ignored: Ctrl-C at the terminal is
    not for it, and robustres must not take it back (it exited 130 there)."""
    env = dict(os.environ, ROBUSTRES_STORE=str(tmp_path / "store"), ROBUSTRES_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "robustres", "train", "--depth", "3", "--epochs", "40", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "store" / "runs").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "interrupted" not in err, err
    assert json.loads(out)["runs"][0]["status"] == "completed"
