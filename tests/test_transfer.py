"""robustres search --transfer (issue 26): its rules (transfer.py), its budget (halving.py) and its
loop over a store whose truth is known (a synthetic trainer), then the command end to end."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robustres import halving as H
from robustres import search as S
from robustres import transfer as T
from robustres.errors import SpecError
from robustres.spec import make_execution, make_run_spec
from robustres.store import Store, config_columns

ROOT = Path(__file__).resolve().parents[1]
GRID = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def test_one_settled_depth_predicts_from_the_prior_and_two_from_the_law_within_it():
    # Depth 4 (L = 4): optimum 1. At L = 16 the prior spans 1 * 4^-1 to 1 * 4^0, its point 4^-0.5.
    one = T.Settled(4, 4, (0.5, 1.0), np.array([[0.90, 0.91, 0.92], [0.93, 0.94, 0.95]]))
    p = T.predict([one], 16, "fixed", 0.95)
    assert p["source"] == "prior" and p["h"] == pytest.approx(0.5) and p["interval"] == pytest.approx([0.25, 1.0])
    # Under sqrt the grid's c carries L^(1/2) already: the prior shifts by it.
    assert T.predict([one], 16, "sqrt", 0.95)["interval"] == pytest.approx([0.5, 2.0])
    # Two depths whose optima halve as L doubles (alpha = 1): the law predicts 0.25 at L = 16.
    two = T.Settled(8, 8, (0.5,), np.array([[0.95, 0.96, 0.97]]))
    p = T.predict([T.Settled(4, 4, (1.0,), np.array([[0.95, 0.96, 0.97]])), two], 16, "fixed", 0.95)
    assert p["source"] == "law" and p["alpha"] == pytest.approx(1.0) and p["h"] == pytest.approx(0.25)
    assert p["interval"][0] >= 0.25 - 1e-9 and p["interval"][1] <= 0.5 + 1e-9  # inside the prior from depth 8


def test_a_band_holds_the_widened_interval_and_at_least_three_values_nearest_the_prediction():
    band = T.band(GRID, {"h": 0.3, "interval": [0.25, 0.4]}, 1.5)
    assert band == [0.1, 0.2, 0.5]  # [0.167, 0.6] holds 0.2 and 0.5; 0.1 is nearer 0.3 than 1 on a log scale
    assert T.band(GRID, {"h": 0.3, "interval": [0.25, 0.4]}, 3) == [0.1, 0.2, 0.5, 1.0]
    assert T.band(GRID, {"h": 0.001, "interval": [0.001, 0.001]}, 1.5) == [0.01, 0.02, 0.05]
    assert T.band([0.0, 0.1, 1.0], {"h": 0.1, "interval": [0.1, 0.1]}, 1) == [0.1, 1.0]  # c = 0 never: no log


def test_a_band_widens_beyond_the_edge_its_best_lands_on_and_downward_when_all_of_it_diverged():
    assert T.widening(GRID, [0.1, 0.2, 0.5], 0.1, False) == [0.05]
    assert T.widening(GRID, [0.1, 0.2, 0.5], 0.5, False) == [1.0]
    assert T.widening(GRID, [0.1, 0.2, 0.5], 0.2, False) == []  # interior: refinement's business
    assert T.widening(GRID, [0.1, 0.2, 0.5], None, True) == [0.05]
    assert T.widening(GRID, [0.01, 0.02], 0.01, False) == []  # the grid ends


def test_transfer_options_are_named_only_when_on_and_bad_ones_are_refused():
    assert "transfer" not in H.SearchOptions().to_dict()  # ids of searches without it do not move
    options = H.make_options({"transfer": True})
    assert options.budget == H.TRANSFER_BUDGET and not options.budget_given
    assert options.to_dict()["transfer"] is True and options.to_dict()["anchors"] == 1
    for values, message in [({"anchors": 2}, "only with transfer"), ({"transfer": True, "anchors": 3}, "anchors"),
                            ({"transfer": True, "widen": 0.5}, "widen"), ({"transfer": "yes"}, "true or false")]:
        with pytest.raises(SpecError, match=message):
            H.make_options(values)


# ---------------------------------------------------------------------------------------------
# The loop, on a synthetic problem whose optimum per depth is known
# ---------------------------------------------------------------------------------------------

OPTIMUM = {4: 1.0, 8: 0.5, 16: 0.2, 64: 0.01}  # 64: far below the law of 4-16 (about 0.05), inside the grid


def _accuracy(spec, epoch: int) -> float:
    """Peaked at the depth's optimum on a log scale, rising with the epoch, a little seed noise."""
    distance = abs(math.log(spec.h) - math.log(OPTIMUM[spec.depth]))
    return 0.95 - 0.04 * distance - 0.2 / epoch + 0.001 * (spec.seed % 3)


class _Trainer:
    """train(specs, execution) as search calls it: every run to execution.stop_at (or the end),
    its epoch rows and its run row in the store."""

    def __init__(self):
        self.trained: list[tuple[float, int, int]] = []

    def __call__(self, specs, execution):
        store, rows = Store(execution.store), []
        for spec in specs:
            stop = min(execution.stop_at or spec.epochs, spec.epochs)
            store.put_epochs(spec.run_id, [{"epoch": e, "test_acc": _accuracy(spec, e)} for e in range(1, stop + 1)])
            done = stop == spec.epochs
            row = {"run_id": spec.run_id, **config_columns(spec), "status": "completed" if done else "running",
                   "final_test_acc": _accuracy(spec, stop) if done else None, "epochs_done": stop,
                   "best_test_acc": _accuracy(spec, stop) if done else None}
            store.put_run(row)
            rows.append(store.get_run(spec.run_id))
            self.trained.append((spec.h, spec.depth, stop))
        return rows


def _grid(depths=(4, 8, 16, 64)):
    return [make_run_spec(dataset="two-moons", depth=d, h=h, seed=s, epochs=8, milestones=(), n_test=20000)
            for d in depths for h in GRID for s in range(5)]


def test_a_deep_optimum_outside_the_predicted_band_makes_it_widen_and_is_still_found(tmp_path):
    runs, trainer = _grid(), _Trainer()
    options = H.make_options({"transfer": True, "budget": 0.4})
    result = S.run_search(runs, options, make_execution({"store": str(tmp_path)}), trainer)
    answer = {r["depth"]: r["h"] for r in result.recommendations}
    assert answer == OPTIMUM
    bands = {d["depth"]: d["band"] for d in result.decisions if "band" in d}
    assert 0.01 not in bands[64] and 4 not in bands  # 64's band missed its optimum; depth 4 was searched whole
    widened = [d["h"] for d in result.decisions if d["origin"] == "widen" and d["action"] == "add" and d["depth"] == 64]
    assert widened and widened[-1] == 0.01 and all(h < min(bands[64]) for h in widened)
    # Depth 8's optimum was its band's lower edge: one look beyond it (0.2, worse) settles it.
    assert [d["h"] for d in result.decisions if d["origin"] == "widen" and d["action"] == "add" and d["depth"] == 8] \
        == [0.2]
    assert result.model_epochs <= result.budget_model_epochs
    # Without --transfer the same budget cannot even start (the coarse start at every depth).
    with pytest.raises(SpecError, match="--budget"):
        H.check_budget(runs, H.make_options({"budget": 0.2}))


def test_a_deeper_depth_starts_only_once_every_shallower_one_has_settled(tmp_path):
    runs, trainer = _grid((4, 8, 16)), _Trainer()
    options = H.make_options({"transfer": True, "budget": 0.4})
    S.run_search(runs, options, make_execution({"store": str(tmp_path)}), trainer)
    first = {}
    for i, (_, depth, _) in enumerate(trainer.trained):
        first.setdefault(depth, i)
    last = {d: max(i for i, (_, depth, _) in enumerate(trainer.trained) if depth == d) for d in (4, 8, 16)}
    assert last[4] < first[8] and last[8] < first[16]


def test_early_seeds_compare_the_first_seeds_at_rungs_and_answer_only_on_all_of_them(tmp_path):
    runs, trainer = _grid((4, 8)), _Trainer()
    options = H.make_options({"early_seeds": 3, "budget": 0.4})
    result = S.run_search(runs, options, make_execution({"store": str(tmp_path)}), trainer)
    assert all(r["h"] is not None for r in result.recommendations) and len(result.recommendations) == 2
    rungs = [d for d in result.decisions if d["epoch"] < 8 and d["action"] in ("keep", "cut")]
    assert rungs and {d["seeds"] for d in rungs} == {3}
    # Every h that reached the end got its other two seeds first, and was judged there on all five.
    more = {(d["depth"], d["h"]) for d in result.decisions if d["action"] == "more"}
    ends = {(d["depth"], d["h"]): d["seeds"] for d in result.decisions if d["action"] == "end"}
    assert more and set(ends) == more and set(ends.values()) == {5}
    # An answer never rests on fewer seeds than asked; the h stopped early trained only the first 3.
    store = Store(tmp_path)
    for rec in result.recommendations:
        rows = [store.get_run(s.run_id) for s in runs if (s.depth, s.h) == (rec["depth"], rec["h"])]
        assert [r["status"] for r in rows] == ["completed"] * 5
    stopped = [d for d in result.decisions if d["action"] in ("pause", "cut")]
    assert stopped
    for d in stopped:
        rows = [store.get_run(s.run_id) for s in runs if (s.depth, s.h) == (d["depth"], d["h"])]
        assert sum(r is not None for r in rows) == 3
    # What it spent is what it trained: every run's last epoch, summed.
    assert result.model_epochs == sum(int(store.get_run(s.run_id)["epochs_done"]) for s in runs
                                      if store.get_run(s.run_id) is not None)
    with pytest.raises(SpecError, match="fewer than the grid's 5 seeds"):
        H.check_budget(runs, H.make_options({"early_seeds": 5}))
    with pytest.raises(SpecError, match="early_seeds"):
        H.make_options({"early_seeds": 2})


# ---------------------------------------------------------------------------------------------
# The command: kill -9 mid-transfer, and its resume
# ---------------------------------------------------------------------------------------------

COMMAND = [sys.executable, "-m", "robustres", "search", "--dataset", "two-moons", "--depths", "4,8,16",
           "--h", "0.05,0.1,0.2,0.5,1,2", "--seeds", "5", "--epochs", "6", "--milestones", "", "--n-train", "200",
           "--n-test", "300", "--transfer", "--early-seeds", "3", "--json"]


def _decisions(store: Path) -> list[dict]:
    (state,) = (store / "searches").glob("*.json")
    return json.loads(state.read_text())["decisions"]


@pytest.mark.slow
def test_a_transfer_search_on_early_seeds_killed_mid_band_resumes_with_the_same_decisions_and_answer(tmp_path):
    whole = subprocess.run(COMMAND + ["--store", str(tmp_path / "whole")], capture_output=True, text=True,
                           cwd=ROOT, timeout=600)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)
    assert any(d.get("origin") == "band" for d in expected["decisions"])
    store = tmp_path / "cut"
    proc = subprocess.Popen(COMMAND + ["--store", str(store)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # until a band has started: the kill lands in the transfer phase
        try:
            if any(d.get("origin") == "band" for d in _decisions(store)):
                break
        except (ValueError, OSError):
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = subprocess.run(COMMAND + ["--store", str(store)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["decisions"] == expected["decisions"]
    assert [(r["depth"], r["h"]) for r in resumed["recommendations"]] == \
        [(r["depth"], r["h"]) for r in expected["recommendations"]]


# ---------------------------------------------------------------------------------------------
# The command: its plan (--dry-run) from a preset's search section, and its bands on a terminal
# ---------------------------------------------------------------------------------------------


def test_a_presets_transfer_section_plans_a_band_per_deeper_depth_and_writes_nothing(cli, tmp_path):
    config = tmp_path / "law.yaml"
    config.write_text("dataset: two-moons\ndepths: [4, 8, 16, 32]\nh: 0.01..10\nseeds: 5\nepochs: 8\n"
                      "milestones: []\nsearch:\n  transfer: true\n  early_seeds: 3\n")
    store = tmp_path / "store"
    code, out, err = cli("search", "--config", str(config), "--dry-run", "--json", "--store", str(store))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["transfer"] and plan["options"]["early_seeds"] == 3
    assert [(d["depth"], d["start"]) for d in plan["depths"]] == [(4, "coarse"), (8, "band"), (16, "band"),
                                                                   (32, "band")]
    # A band's least: 3 values x 3 seeds to the first rung (epoch 1), one h to the end on all 5 seeds.
    assert {d["model_epochs"]["low"] for d in plan["depths"][1:]} == {3 * 3 * 1 + 3 * 7 + 2 * 8}
    assert plan["model_epochs"]["high"] <= plan["budget"] and not store.exists()
    code, out, _ = cli("search", "--config", str(config), "--dry-run", "--store", str(store))
    assert code == 0 and "band" in out and "projected:" in out and not store.exists()


def test_a_bands_decisions_show_as_one_table_naming_the_prediction():
    from rich.console import Console

    from robustres.cli.render_search import print_rung_tables

    prediction = {"h": 0.2, "interval": [0.1, 0.5], "source": "law", "alpha": 0.8, "alpha_ci": [0.5, 1.1],
                  "depths": [4, 8]}
    why = T.band_text(prediction, [0.1, 0.2, 0.5], 1.5)
    decisions = [{"depth": 16, "train_noise": 0.0, "epoch": 0, "h": h, "action": "add", "origin": "band",
                  "why": why, "band": [0.1, 0.2, 0.5], "prediction": prediction} for h in (0.1, 0.2, 0.5)]
    out = Console(record=True, width=200)
    print_rung_tables(out, decisions)
    shown = out.export_text()
    assert "depth 16, transfer band" in shown and "the law of depths 4, 8 (alpha 0.80" in shown
    assert shown.count("added") == 3
