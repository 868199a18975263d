"""robustres search: its rules (halving.py), its loop over the store (search.py) and its command."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robustres import halving as H
from robustres.errors import SpecError
from robustres.store import Store

ROOT = Path(__file__).resolve().parents[1]
# A small search: two-moons, 12 blocks, 6 values of h (h = 3 diverges), 5 seeds, 8 epochs, rungs 1, 2, 4, 8.
GRID = ["--dataset", "two-moons", "--depths", "12", "--h", "0.01,0.03,0.1,0.3,1,3", "--seeds", "5", "--epochs", "8",
        "--milestones", "", "--n-train", "300", "--n-test", "300"]
SEARCH = ["search", *GRID, "--budget", "0.5", "--json"]


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def test_a_rung_cuts_a_diverged_h_and_one_worse_with_confidence_beyond_the_margin_only():
    rule = H.SearchOptions(margin=0.01)
    leader = np.array([0.90, 0.91, 0.92, 0.93, 0.94])
    pool = {0.1: leader, 1.0: leader - 0.05, 0.5: leader - 0.005, 2.0: np.array([0.9, np.nan, 0.9, 0.9, 0.9])}
    verdicts = {h: H.judge(h, pool, rule) for h in pool}
    assert {h: (v["action"], v["why"]) for h, v in verdicts.items()} == {
        0.1: ("keep", "leader"), 1.0: ("cut", "worse"), 0.5: ("keep", "not shown worse"), 2.0: ("cut", "diverged")}
    assert verdicts[1.0]["p"] == pytest.approx(1 / 32)  # all 5 seeds worse: the least p 5 seeds allow
    # One seed better: not worse with confidence, however far behind the others are.
    pool[1.0] = np.array([0.85, 0.86, 0.87, 0.88, 0.99])
    assert H.judge(1.0, pool, rule)["action"] == "keep"
    # Three seeds can never reach p <= 0.05 (1/8 at best): only a divergence cuts.
    three = {0.1: leader[:3], 1.0: leader[:3] - 0.3}
    assert H.judge(1.0, three, rule)["why"] == "not shown worse"


def test_the_least_bad_cut_values_come_back_to_keep_the_minimum_alive():
    verdicts = [{"h": 0.01, "action": "cut", "why": "worse", "median": 0.80},
                {"h": 0.05, "action": "cut", "why": "worse", "median": 0.85},
                {"h": 5.0, "action": "cut", "why": "diverged", "median": float("nan")},
                {"h": 0.2, "action": "keep", "why": "leader", "median": 0.95}]
    kept = {v["h"]: v["why"] for v in H.keep_least(verdicts, alive_elsewhere=0, least=2)}
    assert kept == {0.01: "worse", 0.05: "minimum kept", 5.0: "diverged", 0.2: "leader"}
    assert H.least_kept(5, 0.25) == 2 and H.least_kept(13, 0.25) == 4 and H.least_kept(1, 0.25) == 1


def test_the_budget_carries_candidates_rung_by_rung_and_always_holds_the_way_to_the_end_for_the_least():
    ranked = [(0.2, 5, 20), (1.0, 5, 20), (0.05, 5, 20), (0.01, 5, 20)]  # best first: (h, to next rung, rest)
    # 56 spare: the best two need 25 each (next rung and the rest of the way), a third only 5 more.
    assert H.pause_for_budget(ranked, 56, least=2) == ([0.2, 1.0, 0.05], [0.01])
    assert H.pause_for_budget(ranked, 49, least=2) == ([0.2], [1.0, 0.05, 0.01])
    assert H.pause_for_budget(ranked, 20, least=1) == ([], [0.2, 1.0, 0.05, 0.01])


def test_coarse_start_refinement_at_log_midpoints_and_rungs_of_the_schedule():
    grid = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert H.coarse(grid, 2) == [0.001, 0.005, 0.02, 0.1, 0.5, 1.0]
    assert H.coarse(grid, 3) == [0.001, 0.01, 0.1, 1.0]
    # Between 0.1 and its tried neighbours 0.01 and 1: the grid values closest to sqrt(0.1 * 0.01)
    # = 0.032 (0.02 and 0.05 are as far in log: the smaller) and to sqrt(0.1) = 0.32 (0.2 and 0.5: 0.2).
    assert H.refinements(grid, [0.001, 0.01, 0.1, 1.0], 0.1) == [0.02, 0.2]
    assert H.refinements(grid, [0.02, 0.05, 0.1], 0.05) == []  # grid neighbours: nothing in between
    # A value proposed once and skipped (no budget) is not proposed again, nor is it a neighbour.
    assert H.refinements(grid, [0.001, 0.01, 0.1, 1.0], 0.1, skipped=(0.2,)) == [0.02]
    # h values are compared exactly, however small.
    tiny = {1e-14: np.array([0.9] * 5), 5e-14: np.array([0.8] * 5)}
    assert [H.judge(h, tiny, H.SearchOptions())["why"] for h in tiny] == ["leader", "worse"]
    assert H.make_options({"rungs": "4.0,8"}).rungs == (4, 8) and H.make_options({"stride": 2.0}).stride == 2
    assert H.rungs_for(H.SearchOptions(), 30, (20,)) == (4, 8, 15, 20, 30)
    assert H.rungs_for(H.SearchOptions(), 80, (40, 60)) == (10, 20, 40, 60, 80)
    assert H.rungs_for(H.SearchOptions(rungs=(3, 5)), 8, ()) == (3, 5, 8)
    assert H.budget_epochs(H.SearchOptions(budget=0.3), 2400) == 720
    assert H.budget_epochs(H.SearchOptions(budget=500), 2400) == 500
    from robustres.stats import LEVEL

    assert H.SearchOptions().level == LEVEL


@pytest.mark.parametrize("values, message", [
    ({"budget": 0}, "budget"), ({"budget": "x"}, "budget"), ({"rungs": "5,3"}, "strictly increasing"),
    ({"rungs": "2.5"}, "whole"), ({"rungs": ""}, "empty item"), ({"rungs": "1,,4"}, "empty item"),
    ({"stride": 0}, "stride"), ({"margin": 2}, "margin"), ({"keep": -1}, "keep"),
    ({"bogus": 1}, "unknown key"),
])
def test_bad_search_options_name_the_option(values, message):
    with pytest.raises(SpecError, match=message):
        H.make_options(values)


# ---------------------------------------------------------------------------------------------
# The search over a store
# ---------------------------------------------------------------------------------------------


def _rows(store: Path) -> dict:
    return {r["run_id"]: r for r in Store(store).runs().to_dict(orient="records")}


def _facts(rows: dict) -> dict:
    """What a run's row says happened (NaN spelled None, so that equal rows compare equal)."""
    keys = ("status", "epochs_done", "final_test_acc", "best_test_acc", "diverged_epoch", "updated_at")
    return {k: tuple(None if r.get(c) != r.get(c) else r.get(c) for c in keys) for k, r in rows.items()}


def test_a_search_cuts_and_pauses_as_stopped_spends_within_its_budget_and_its_runs_are_the_grids(cli, tmp_path):
    code, out, err = cli(*SEARCH)
    assert code == 0, err
    result = json.loads(out)
    assert {"recommendations", "model_epochs", "grid_model_epochs", "decisions"} <= set(result)
    assert result["grid_model_epochs"] == 6 * 5 * 8 and result["budget_model_epochs"] == 120
    rows = _rows(tmp_path / "store")
    # The cost is what the store's rows say was trained: a diverged run up to its divergence.
    spent = sum(int(r["diverged_epoch"]) if r["status"] == "diverged" else int(r["epochs_done"]) for r in rows.values())
    assert result["model_epochs"] == spent <= result["budget_model_epochs"]
    cut = {d["h"] for d in result["decisions"] if d["action"] in ("cut", "pause")}
    assert 3.0 in cut and any(d["why"] == "diverged" for d in result["decisions"])
    for r in rows.values():  # cut or paused: stopped (or diverged) at a rung, never completed
        assert r["status"] in (("stopped", "diverged") if r["h"] in cut else ("completed",)), r
        if r["status"] == "stopped":
            assert int(r["epochs_done"]) in (1, 2, 4) and r["final_test_acc"] != r["final_test_acc"]
    (rec,) = result["recommendations"]
    assert rec["h"] not in cut and rec["h"] in rec["indistinguishable"] and rec["ci"][0] <= rec["median"]
    state = json.loads(next((tmp_path / "store" / "searches").glob("*.json")).read_text())
    assert state["finished"] and state["decisions"] == result["decisions"]

    # report reads the store like any other, stopped runs labelled and never counted as completed.
    code, out, _ = cli("report", "--format", "json")
    groups = {g["h"]: g for g in json.loads(out)["groups"]}
    for h in cut - {3.0}:
        assert groups[h]["label"] == "stopped" and groups[h]["completed"] == 0 and groups[h]["stopped"] == 5
    assert json.loads(out)["recommendations"][0]["h"] == rec["h"]
    # Its gates: an h the search cut is not "too few seeds" (its runs are stopped), and stopped runs
    # are not finished grid points.
    code, _, err = cli("report", "--min-seeds", "5")
    assert code == 0, err
    code, _, err = cli("report", "--min-seeds", "6")
    assert code == 1 and "groups have fewer than 6 completed runs" in err and "cut by a search" in err
    preset = tmp_path / "grid.yaml"
    preset.write_text("dataset: two-moons\ndepths: [12]\nh: [0.01, 0.03, 0.1, 0.3, 1, 3]\nseeds: 5\nepochs: 8\n"
                      "milestones: []\nn_train: 300\nn_test: 300\n")
    unfinished = 30 - sum(r["status"] in ("completed", "diverged") for r in rows.values())
    assert unfinished > sum(r["status"] == "stopped" for r in rows.values()) > 0
    code, _, err = cli("report", "--config", preset, "--require-complete")
    assert code == 1 and f"{unfinished} of 30 runs" in err  # stopped runs are not finished grid points

    # Run again: every decision is read back from the store, nothing trains, nothing is written
    # (not even the state file: a finished search reads back from a read-only store), the same answer.
    state_file = next((tmp_path / "store" / "searches").glob("*.json"))
    written = state_file.stat().st_mtime_ns
    code, again, _ = cli(*SEARCH)
    assert code == 0 and json.loads(again) == result
    assert _facts(_rows(tmp_path / "store")) == _facts(rows) and state_file.stat().st_mtime_ns == written

    # The grid in a fresh store: the search's finished runs are the grid's, result for result; and a
    # sweep over the search's store takes its stopped runs on from their rungs to the same results.
    code, _, err = cli("sweep", *GRID, "--store", tmp_path / "grid", "--json")
    assert code == 0, err
    grid = _rows(tmp_path / "grid")
    for run_id, r in rows.items():
        if r["status"] in ("completed", "diverged"):
            assert grid[run_id]["final_test_acc"] == r["final_test_acc"] or r["status"] == "diverged"
    code, _, err = cli("sweep", *GRID, "--json")
    assert code == 0, err
    resumed = _rows(tmp_path / "store")
    assert {k: r["final_test_acc"] for k, r in resumed.items() if r["status"] == "completed"} == \
        {k: r["final_test_acc"] for k, r in grid.items() if r["status"] == "completed"}
    # The search over that store still answers from its own decisions, and says that runs moved on.
    code, after, _ = cli(*SEARCH)
    after = json.loads(after)
    assert code == 0 and after["recommendations"] == result["recommendations"]
    assert after["decisions"] == result["decisions"] and any("were trained to the end" in w for w in after["warnings"])


def test_a_preset_search_section_sets_the_options_and_flags_override_it(cli, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("dataset: two-moons\ndepths: [12]\nh: 0.01,0.03,0.1,0.3,1,3\nseeds: 5\nepochs: 8\n"
                      "milestones: []\nn_train: 300\nn_test: 300\nsearch:\n  budget: 0.75\n  rungs: [2, 4]\n")
    code, out, err = cli("search", "--config", preset, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["budget_model_epochs"] == 180 and {d["epoch"] for d in result["decisions"]} <= {0, 2, 4, 8}
    code, _, err = cli("search", "--config", preset, "--budget", "0.01", "--json")
    assert code == 2 and "--budget" in err and err.count("\n") == 1
    preset.write_text(preset.read_text() + "  stride: zero\n")
    code, _, err = cli("sweep", "--config", preset, "--dry-run")
    assert code == 2 and "stride" in err


def test_a_budget_too_small_or_a_bad_option_is_refused_before_anything_is_written(cli, tmp_path):
    for extra, message in ((["--budget", "0.1"], "give at least --budget"), (["--rungs", "9"], "past the schedule"),
                           (["--stride", "0"], "stride"), (["--margin", "nan"], "margin")):
        code, out, err = cli(*SEARCH[:-3], *extra)
        assert code == 2 and message in err and err.startswith("error:") and err.count("\n") == 1, err
        assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------------------------
# kill -9 at any moment: the same command resumes with the same decisions
# ---------------------------------------------------------------------------------------------


def _search(store: Path) -> subprocess.Popen:
    env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "robustres", *SEARCH, "--checkpoint-every", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_with_the_same_decisions_and_answer(tmp_path):
    clean = _search(tmp_path / "clean")
    expected, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err
    store = tmp_path / "killed"
    for moment in (0.0, 1.0):  # mid-round, in the first round and in a later one
        proc = _search(store)
        deadline = time.time() + 120
        while time.time() < deadline and not list((store / "searches").glob("*.json")) and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    resumed = _search(store)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert json.loads(out) == json.loads(expected)
    rows, clean_rows = _rows(store), _rows(tmp_path / "clean")
    assert {k: f[:5] for k, f in _facts(rows).items()} == {k: f[:5] for k, f in _facts(clean_rows).items()}
    columns = ["run_id", "epoch", "train_loss", "test_loss", "test_acc"]
    epochs, clean_epochs = (Store(s).epochs()[columns].sort_values(columns[:2]).reset_index(drop=True)
                            for s in (store, tmp_path / "clean"))
    assert epochs.equals(clean_epochs)  # every epoch, bit for bit: each run resumed beside its own mates


@pytest.mark.slow
def test_a_search_killed_between_a_runs_last_checkpoint_and_its_final_row_resumes_to_the_same_answer(tmp_path):
    """The kill that leaves a run `running` at epochs_done == epochs (issue 22): made exactly, by the
    executor's kill switch. The resumed search must finish those runs, not count them as done."""
    from robustres.execution.runner import KILL_SWITCH

    clean = _search(tmp_path / "clean")
    expected, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err
    store = tmp_path / "killed"
    env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1",
               **{KILL_SWITCH: "final-checkpoint"})
    killed = subprocess.run([sys.executable, "-m", "robustres", *SEARCH, "--checkpoint-every", "0"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    at_the_end = [r for r in _rows(store).values() if r["status"] == "running" and r["epochs_done"] == r["epochs"]]
    assert at_the_end  # the moment the kill was meant for
    resumed = _search(store)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert json.loads(out)["recommendations"] == json.loads(expected)["recommendations"]
    assert json.loads(out) == json.loads(expected)
    rows = _rows(store)
    assert not [r for r in rows.values() if r["status"] == "running" and r["epochs_done"] == r["epochs"]]
    assert {k: f[:5] for k, f in _facts(rows).items()} == \
        {k: f[:5] for k, f in _facts(_rows(tmp_path / "clean")).items()}


@pytest.mark.slow
def test_a_run_a_killed_train_left_at_its_last_epoch_gets_its_final_row_from_a_search_that_stops_earlier(tmp_path):
    """`train` killed between a run's last checkpoint and its final row, then a search whose rungs stop
    before the end: the run is not 'at its rung' but unfinished, and the search writes its final row."""
    from robustres.execution.runner import KILL_SWITCH

    store = tmp_path / "store"
    env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1")
    grid = dict(zip(GRID[::2], GRID[1::2]))
    train = ["train", "--dataset", "two-moons", "--depth", grid["--depths"], "--h", "1", "--seeds", "5",
             *[a for k in ("--epochs", "--milestones", "--n-train", "--n-test") for a in (k, grid[k])],
             "--checkpoint-every", "0"]
    killed = subprocess.run([sys.executable, "-m", "robustres", *train], env={**env, KILL_SWITCH: "final-checkpoint"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ended = [r for r in _rows(store).values() if r["status"] == "running" and r["epochs_done"] == r["epochs"]]
    assert len(ended) == 1
    done = subprocess.run([sys.executable, "-m", "robustres", *SEARCH], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    after = _rows(store)[ended[0]["run_id"]]
    assert after["status"] == "completed" and after["epochs_done"] == after["epochs"]
    assert after["final_test_acc"] is not None and after["final_test_acc"] == after["final_test_acc"]


def _freeze_outside_the_claims_lock(proc: subprocess.Popen, store: Path) -> None:
    """SIGSTOP `proc` at a moment when it holds claims but not the claims folder's flock (frozen
    inside that short lock, it would block every other process, not just make it wait)."""
    import fcntl

    for _ in range(1000):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.01)  # let the stop land
        with (store / "claims" / ".lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                fcntl.flock(lock, fcntl.LOCK_UN)
                if list((store / "claims").glob("*.json")):
                    return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("never caught the first search holding claims outside the lock")


@pytest.mark.slow
def test_two_searches_sharing_a_store_wait_for_each_others_runs_and_agree(tmp_path):
    store = tmp_path / "store"
    first = _search(store)
    deadline = time.time() + 120
    while time.time() < deadline and not list((store / "claims").glob("*.json")) and first.poll() is None:
        time.sleep(0.02)
    _freeze_outside_the_claims_lock(first, store)  # it holds claims, alive, so they are not stale
    try:
        log = tmp_path / "second.err"
        with log.open("w") as err_file:
            env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1")
            second = subprocess.Popen([sys.executable, "-m", "robustres", *SEARCH, "--checkpoint-every", "0"],
                                      env=env, stdout=subprocess.PIPE, stderr=err_file, text=True)
            until = time.time() + 300
            while time.time() < until and "waiting for" not in log.read_text() and second.poll() is None:
                time.sleep(0.05)
            waited = "waiting for" in log.read_text()  # it found the first's runs and waited, not trained them
    finally:
        first.send_signal(signal.SIGCONT)
    out_a, err_a = first.communicate(timeout=600)
    out_b, _ = second.communicate(timeout=600)
    err_b = log.read_text()
    assert first.returncode == 0 and second.returncode == 0, (err_a, err_b)
    assert waited, err_b
    assert json.loads(out_a) == json.loads(out_b)
    epochs = Store(store).epochs()
    assert not epochs.duplicated(["run_id", "epoch"]).any()
    assert epochs.groupby("run_id").epoch.apply(lambda e: sorted(e) == list(range(1, len(e) + 1))).all()


@pytest.mark.slow
def test_on_a_terminal_each_rungs_table_shows_while_the_search_still_runs(tmp_path):
    import pty

    leader, follower = pty.openpty()
    env = dict(os.environ, ROBUSTRES_STORE=str(tmp_path / "store"), ROBUSTRES_OFFLINE="1", COLUMNS="150")
    proc = subprocess.Popen([sys.executable, "-m", "robustres", *SEARCH[:-1]], env=env, stdout=follower,
                            stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    seen, running_at_first_rung = b"", None
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if running_at_first_rung is None and b"rung epoch 1" in seen:
            running_at_first_rung = proc.poll() is None
    proc.wait(timeout=120)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert running_at_first_rung  # the first rung's decisions were on the screen before the search ended
    assert "to epoch 1" in text  # the round's progress bar runs to its rung
    for rung in ("rung epoch 1", "rung epoch 2", "rung epoch 4", "rung epoch 8", "robustres search "):
        assert rung in text
    assert text.index("rung epoch 1") < text.index("rung epoch 2") < text.index("robustres report")


class _Epochs:
    """A store's epoch rows for search.judge, from {run_id: [test accuracy per epoch]}."""

    def __init__(self, accuracies: dict):
        self.accuracies = accuracies

    def epochs(self, run_id):
        import pandas as pd

        acc = self.accuracies[run_id]
        return pd.DataFrame({"epoch": range(1, len(acc) + 1), "test_acc": acc})

    def get_run(self, run_id):
        return None


def _block(candidates: dict, rows: dict, epochs: int = 8):
    from robustres import search as S
    from robustres.spec import make_run_spec

    runs = {h: [make_run_spec(dataset="two-moons", depth=4, h=h, seed=s, epochs=epochs) for s in range(5)]
            for h in candidates}
    block = S.Block(4, 0.0, runs, epochs, (2, 4, epochs), 10**6, 1)
    block.candidates = {h: S.Candidate(h, "coarse", epoch=e, state=st) for h, (e, st) in candidates.items()}
    for h, specs in runs.items():
        for spec in specs:
            block.rows[(h, spec.seed)] = {"run_id": f"{h}-{spec.seed}", **rows.get(h, {"status": "completed"})}
    return block


def test_nothing_is_cut_at_the_last_rung_and_a_candidate_known_to_diverge_never_leads():
    from robustres import search as S

    good, bad = [0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.9, 0.95], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    # At the end: h=1 is worse with confidence, but its runs are finished; it ends, report judges it.
    block = _block({0.1: (8, "live"), 1.0: (8, "live")}, {})
    store = _Epochs({f"{h}-{s}": (good if h == 0.1 else bad) for h in (0.1, 1.0) for s in range(5)})
    made = S.judge(block, store, H.SearchOptions(), list(block.candidates.values()))
    assert [(d["h"], d["action"], d["why"]) for d in made] == [(0.1, "end", "leader"), (1.0, "end", "worse")]
    assert {c.state for c in block.candidates.values()} == {"done"}
    # h=2 led at epoch 4 but diverged at epoch 6 (the search took it to rung 8): a refinement
    # judged at epoch 4 is compared with the best h that never diverged, not with h=2.
    block = _block({2.0: (8, "cut"), 0.1: (4, "done"), 0.3: (4, "live")},
                   {2.0: {"status": "diverged", "diverged_epoch": 6}})
    store = _Epochs({**{f"2.0-{s}": [0.9] * 5 for s in range(5)}, **{f"0.1-{s}": [0.6] * 8 for s in range(5)},
                     **{f"0.3-{s}": [0.7] * 8 for s in range(5)}})
    (made,) = S.judge(block, store, H.SearchOptions(), [block.candidates[0.3]])
    assert made["leader"] == 0.3 and made["why"] == "leader"
