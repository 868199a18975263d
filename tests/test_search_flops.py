"""robustres search with its budget in training FLOPs (halving.check_budget, search.cost_of, --budget ...flop)."""

import json
from pathlib import Path

import pytest

from robustres import halving as H
from robustres.errors import SpecError
from robustres.spec import make_run_spec
from robustres.store import Store

# One depth: test_search.py's grid (6 h, 5 seeds, 8 epochs, 300 examples); --budget 0.5 is 120 model-epochs.
ONE = ["--dataset", "two-moons", "--depths", "12", "--h", "0.01,0.03,0.1,0.3,1,3", "--seeds", "5", "--epochs", "8",
       "--milestones", "", "--n-train", "300", "--n-test", "300"]
# Two depths of different cost, smaller: 4 h, 5 seeds, 4 epochs (rungs 1, 2, 4), 200 examples.
TWO = ["--dataset", "two-moons", "--depths", "4,16", "--h", "0.03,0.1,0.3,1", "--seeds", "5", "--epochs", "4",
       "--milestones", "", "--n-train", "200", "--n-test", "200"]


def _fpi(depth: int) -> int:
    """The engine's forward multiply-adds per two-moons point of an MLP ResNet of this depth."""
    from robustres.execution.plan import flops_per_image

    return flops_per_image(make_run_spec(dataset="two-moons", depth=depth), (2,), 2)


def _spent_epochs(store: Path) -> dict:
    """Model-epochs the store's rows say each depth trained (a diverged run up to its divergence)."""
    out: dict = {}
    for r in Store(store).runs().to_dict(orient="records"):
        done = int(r["diverged_epoch"]) if r["status"] == "diverged" else int(r["epochs_done"])
        out[r["depth"]] = out.get(r["depth"], 0) + done
    return out


@pytest.mark.parametrize("text, flops", [("2e15flop", 2e15), ("500Tflop", 5e14), ("2PFLOP", 2e15),
                                         ("1.5kflop", 1500), ("83.376Mflop", 83_376_000), (" 7 Gflop ", 7e9)])
def test_a_flop_budget_reads_a_number_an_si_prefix_and_flop(text, flops):
    options = H.make_options({"budget": text})
    assert options.budget == flops and options.budget_unit == H.FLOP
    assert options.to_dict()["budget_unit"] == "flop"
    # A model-epoch budget's options (hence its search id and state file) are what they were.
    assert "budget_unit" not in H.make_options({"budget": "0.3"}).to_dict()


@pytest.mark.parametrize("text", ["5flops?", "-1flop", "nanflop", "infflop", "0flop", "0.5flop", "2mflop", "flop",
                                  "1e40flop", "2 P flop", "1e15 flops"])
def test_a_bad_flop_budget_is_refused_naming_the_grammar(text):
    with pytest.raises(SpecError, match="not a budget in FLOPs"):
        H.make_options({"budget": text})


def _grid(depths, hs=(0.03, 0.1, 0.3, 1.0), epochs=4):
    return [make_run_spec(dataset="two-moons", depth=d, h=h, seed=s, epochs=epochs, milestones=(), n_train=200)
            for d in depths for h in hs for s in range(5)]


def test_a_flop_budget_is_shared_by_what_each_depth_costs_and_a_too_small_one_names_the_least_in_flops():
    runs = _grid((4, 16))
    keys = list(H.grid_blocks(runs))
    weights = {keys[0]: 1000, keys[1]: 5000}  # a model-epoch at depth 16 costs 5x one at depth 4
    grid_flops = 80 * 1000 + 80 * 5000
    options = H.make_options({"budget": f"{grid_flops * 6 // 10}flop"})
    grid_epochs, budget, shares = H.check_budget(runs, options, weights)
    assert (grid_epochs, budget) == (160, 288_000)
    # Each depth gets the same share (60 %) of its own grid's FLOPs: 5x more at depth 16 than at
    # depth 4, where an even split would give each 144,000.
    assert shares == {keys[0]: 48_000, keys[1]: 240_000}
    # A model-epoch budget is split evenly in model-epochs: the same 60 % of each depth's grid.
    assert H.check_budget(runs, H.make_options({"budget": "0.6"}))[2] == {keys[0]: 48, keys[1]: 48}
    # The least: coarse {0.03, 0.3, 1} (3 h) x 5 seeds to rung 1, then 2 of them to epoch 4:
    # 5 * (3 + 2 * 3) = 45 model-epochs per depth: 45,000 FLOPs at depth 4, its 1/6 share of
    # 270,000 in all. The refusal names it in FLOPs, and that budget passes where one FLOP less fails.
    with pytest.raises(SpecError, match=r"give at least --budget 2\.700e\+05flop") as refused:
        H.check_budget(runs, H.make_options({"budget": "200kflop"}), weights)
    assert "33,333 FLOPs for depth 4" in str(refused.value) and "(45,000 FLOPs)" in str(refused.value)
    assert H.check_budget(runs, H.make_options({"budget": "270kflop"}), weights)[2][keys[1]] == 225_000
    with pytest.raises(SpecError, match="give at least"):
        H.check_budget(runs, H.make_options({"budget": "269999flop"}), weights)


def test_a_flop_budget_equal_to_a_model_epoch_budget_gives_its_answer_and_costs_in_both_units(cli, tmp_path):
    code, out, err = cli("search", *ONE, "--budget", "0.5", "--json")
    assert code == 0, err
    epochs = json.loads(out)
    per_epoch = 3 * _fpi(12) * 300  # one model-epoch of depth 12: 3x the forward pass, 300 points
    # The same budget in FLOPs: 120 model-epochs of depth 12. (FLOPs are model-epochs times a
    # constant at one depth, so every decision and the answer are the same.)
    code, out, err = cli("search", *ONE, "--budget", f"{120 * per_epoch}flop", "--json")
    assert code == 0, err
    flops = json.loads(out)
    assert flops["search_id"] != epochs["search_id"]  # its own state file, recording the unit
    state = json.loads((tmp_path / "store" / "searches" / f"{flops['search_id']}.json").read_text())
    assert state["options"]["budget_unit"] == "flop" and state["options"]["budget"] == 120 * per_epoch
    assert flops["recommendations"] == epochs["recommendations"]
    strip = [{k: v for k, v in d.items() if k != "why"} for d in epochs["decisions"]]
    assert [{k: v for k, v in d.items() if k != "why"} for d in flops["decisions"]] == strip
    assert any(d["action"] in ("pause", "skip") for d in flops["decisions"])  # the budget did bind
    skip = next(d["why"] for d in flops["decisions"] if d["action"] == "skip")
    assert f"cannot pay its {40 * per_epoch:,}" in skip  # charged in FLOPs: 5 seeds x 8 epochs
    # Both units, spent against the grid's and the budget, checked against the store's rows.
    spent = _spent_epochs(tmp_path / "store")[12]
    cost = flops["cost"]
    assert cost["unit"] == "flop" and epochs["cost"]["unit"] == "model_epochs"
    assert cost["model_epochs"] == {"spent": spent, "grid": 240, "budget": 120} == epochs["cost"]["model_epochs"]
    assert cost["flops"] == {"spent": spent * per_epoch, "grid": 240 * per_epoch, "budget": 120 * per_epoch}
    assert epochs["cost"]["flops"] == cost["flops"]
    assert cost["per_block"][0]["flops_per_model_epoch"] == per_epoch and cost["per_block"][0]["depth"] == 12
    assert flops["model_epochs"] == spent and flops["budget_model_epochs"] == 120  # the keys it had


def test_with_two_depths_a_flop_budget_pays_each_depth_its_cost_never_more_and_a_rerun_replays_it(cli, tmp_path):
    per_epoch = {d: 3 * _fpi(d) * 200 for d in (4, 16)}
    assert per_epoch[16] > 2 * per_epoch[4]
    grid = {d: 4 * 5 * 4 * per_epoch[d] for d in (4, 16)}  # 4 h x 5 seeds x 4 epochs
    budget = (grid[4] + grid[16]) * 6 // 10
    code, out, err = cli("search", *TWO, "--budget", f"{budget}flop", "--json")
    assert code == 0, err
    result = json.loads(out)
    blocks = {b["depth"]: b for b in result["cost"]["per_block"]}
    # Depth 16's share is what its grid costs: more FLOPs than an even split of the budget.
    for d in (4, 16):
        assert blocks[d]["flops"]["budget"] == budget * grid[d] // (grid[4] + grid[16])
        assert blocks[d]["flops"]["grid"] == grid[d] and blocks[d]["model_epochs"]["grid"] == 80
    assert blocks[16]["flops"]["budget"] > budget // 2 > blocks[4]["flops"]["budget"]
    # Never more than its budget in FLOPs, per depth (the budget is checked before each rung is
    # trained, so not even a rung's worth more), and the FLOPs are the rows' model-epochs x the cost.
    spent = _spent_epochs(tmp_path / "store")
    for d in (4, 16):
        assert blocks[d]["flops"]["spent"] == spent[d] * per_epoch[d] <= blocks[d]["flops"]["budget"]
        assert blocks[d]["model_epochs"]["spent"] == spent[d]
    assert result["cost"]["flops"]["spent"] == sum(spent[d] * per_epoch[d] for d in (4, 16)) <= budget
    assert any(d["action"] in ("pause", "skip") for d in result["decisions"])
    # The same command again: the same decisions from the state file's rounds, nothing trained.
    def facts():
        return {r["run_id"]: (r["status"], r["epochs_done"], r["updated_at"])
                for r in Store(tmp_path / "store").runs().to_dict(orient="records")}

    rows = facts()
    code, out, err = cli("search", *TWO, "--budget", f"{budget}flop", "--json")
    assert code == 0 and not [w for w in json.loads(out)["warnings"] if "differ" in w], err
    again = json.loads(out)
    assert again["decisions"] == result["decisions"] and again["cost"] == result["cost"]
    assert facts() == rows


def test_a_flop_budget_too_small_or_malformed_is_refused_on_one_line_and_writes_nothing(cli, tmp_path):
    for budget, message in (("1Mflop", "give at least --budget"), ("5flops?", "not a budget in FLOPs"),
                            ("-3flop", "not a budget in FLOPs"), ("nanflop", "not a budget in FLOPs"),
                            ("0flop", "not a budget in FLOPs")):
        code, out, err = cli("search", *ONE, "--budget", budget, "--json")
        assert code == 2 and message in err and err.startswith("error:") and err.count("\n") == 1, err
        assert not (tmp_path / "store").exists() and not out
    preset = tmp_path / "p.yaml"  # a preset's search: section takes the same budget
    preset.write_text("dataset: two-moons\ndepths: [12]\nh: 0.01,0.03,0.1,0.3,1,3\nseeds: 5\nepochs: 8\n"
                      "milestones: []\nn_train: 300\nn_test: 300\nsearch:\n  budget: 1Mflop\n")
    code, _, err = cli("search", "--config", preset)
    assert code == 2 and "1,000,000 FLOPs for depth 12" in err and not (tmp_path / "store").exists(), err
    code, _, err = cli("search", *ONE, "--budget", "1Mflop")
    least = err.split("--budget ")[-1].split("flop")[0]
    # The least named is in FLOPs, and it is enough: the check passes with it.
    from robustres.search import block_flops
    runs = [make_run_spec(dataset="two-moons", depth=12, h=h, seed=s, epochs=8, milestones=(), n_train=300,
                          n_test=300) for h in (0.01, 0.03, 0.1, 0.3, 1, 3) for s in range(5)]
    H.check_budget(runs, H.make_options({"budget": f"{least}flop"}), block_flops(runs))


def _flop_search(store: Path, budget: int):
    import os
    import subprocess
    import sys

    env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "robustres", "search", *TWO, "--budget", f"{budget}flop", "--json",
                             "--checkpoint-every", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_a_flop_budget_search_killed_with_sigkill_resumes_with_the_same_decisions_and_cost(tmp_path):
    import signal
    import time

    budget = sum(4 * 5 * 4 * 3 * _fpi(d) * 200 for d in (4, 16)) * 6 // 10
    clean = _flop_search(tmp_path / "clean", budget)
    expected, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err
    store = tmp_path / "killed"
    proc = _flop_search(store, budget)
    deadline = time.time() + 120
    while time.time() < deadline and not list((store / "searches").glob("*.json")) and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    resumed = _flop_search(store, budget)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert json.loads(out) == json.loads(expected)  # decisions, answer and cost in both units
