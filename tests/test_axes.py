"""The protocol fields as sweep axes (issue 24): lr, optimizer, bn, momentum, weight decay and batch
size take lists (and lr and weight decay h's ranges) from flags and YAML, in train, sweep, search and
noise-eval's train-noise mode; runs that differ in them never share a pack (until packs fuse
per-model hyperparameters), so each trains as it would in a sweep of its value alone."""

import json

import pytest

from robustres.axes import axis_values
from robustres.errors import SpecError
from robustres.execution.plan import make_packs
from robustres.grid import load_sweep_file, make_sweep_spec, merge_preset, sweep_runs
from robustres.spec import AXES, RunSpec
from robustres.store import Store

FIELD = {f.name: f for f in AXES}
SMALL = ["--dataset", "two-moons", "--n-train", "200", "--n-test", "200", "--epochs", "2"]
GRID = ["--depths", "4", "--h", "0.1,1", "--seeds", "2", *SMALL]
PRESET = "dataset: two-moons\nn_train: 200\nn_test: 200\nepochs: 2\ndepths: [4]\nh: [0.1, 1]\nseeds: 2\n"


def _rows(store) -> dict[str, dict]:
    return {r["run_id"]: r for r in Store(store).runs().to_dict("records")}


# ---------------------------------------------------------------------------------------------
# The grammar, one for flags and YAML
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,given,expected", [
    ("lr", "0.05,0.5", (0.05, 0.5)),
    ("lr", "0.01..1", (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)),  # h's 1-2-5 range
    ("lr", "0.01..1:3", (0.01, 0.1, 1.0)),
    ("lr", [0.02, "2e-1"], (0.02, 0.2)),
    ("lr", 0.1, (0.1,)),  # one YAML value
    ("weight_decay", "0,5e-4", (0.0, 5e-4)),
    ("weight_decay", "1e-5..1e-3:3", (1e-5, 1e-4, 1e-3)),
    ("momentum", "0,0.9,0.9", (0.0, 0.9)),  # distinct, in order
    ("batch_size", "64,128", (64, 128)),
    ("batch_size", [32, "64"], (32, 64)),
    ("optimizer", "sgd, adam", ("sgd", "adam")),
    ("optimizer", ["adam"], ("adam",)),
    ("bn", "on,off", (True, False)),
    ("bn", "True,FALSE", (True, False)),
    ("bn", [True, False], (True, False)),  # YAML's booleans
    ("bn", ["off"], (False,)),
    ("bn", True, (True,)),
])
def test_each_axis_reads_lists_of_its_type_and_ranges_where_its_syntax_says(name, given, expected):
    assert axis_values(FIELD[name], given, "--x") == expected


@pytest.mark.parametrize("name,given,message", [
    ("bn", "maybe", "'maybe' is neither on nor off"),
    ("bn", [1], "1 is neither on nor off"),
    ("bn", "on,,off", "comma-separated"),
    ("optimizer", "sgd,", "comma-separated"),
    ("optimizer", [3], "3 is not a name"),
    ("batch_size", "64.5", "'64.5' is not a whole number"),
    ("batch_size", [True], "True is not a whole number"),
    ("lr", "fast", "'fast' is not a number"),
    ("lr", "1..0.1", "empty or reversed"),
    ("weight_decay", "-1", "weight decay must be >= 0"),
    ("momentum", "0.9,x", "'x' is not a number"),
])
def test_a_bad_axis_value_is_one_line_naming_the_flag(name, given, message):
    with pytest.raises(SpecError) as err:
        axis_values(FIELD[name], given, "--" + name.replace("_", "-"))
    assert message in str(err.value) and str(err.value).startswith("--") and "\n" not in str(err.value)


def test_a_yaml_preset_lists_the_new_axes_by_their_field_names(tmp_path):
    preset = tmp_path / "axes.yaml"
    preset.write_text(PRESET + "lr: 0.01..1:3\noptimizer: [sgd, adam]\nbn: [true, false]\nmomentum: [0, 0.9]\n"
                      "weight_decay: [0, 5.0e-4]\nbatch_size: [64, 128]\n")
    runs = make_sweep_spec(load_sweep_file(preset)).runs()
    assert len(runs) == len({r.run_id for r in runs}) == 3 * 2 * 2 * 2 * 2 * 2 * 2 * 2  # x h 2 x seeds 2
    assert {(r.lr, r.optimizer, r.bn, r.momentum, r.weight_decay, r.batch_size) for r in runs} == {
        (lr, o, bn, m, wd, b) for lr in (0.01, 0.1, 1.0) for o in ("sgd", "adam") for bn in (True, False)
        for m in (0.0, 0.9) for wd in (0.0, 5e-4) for b in (64, 128)}
    # A single value is what it was before: the same runs as the option of one value.
    one = tmp_path / "one.yaml"
    one.write_text(PRESET + "lr: 0.05\nbn: true\noptimizer: adam\n")
    alone = make_sweep_spec(load_sweep_file(one)).runs()
    assert {(r.lr, r.bn, r.optimizer) for r in alone} == {(0.05, True, "adam")} and len(alone) == 4


# ---------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------


def test_a_sweep_over_two_lrs_trains_every_combination_from_flags_and_from_yaml_alike(cli, tmp_path):
    code, _, err = cli("sweep", "--depths", "4", "--h", "0.1,1", "--seeds", "1", *SMALL, "--lr", "0.02,0.2",
                       "--store", tmp_path / "flags")
    assert code == 0, err
    flags = _rows(tmp_path / "flags")
    assert sorted((r["h"], r["lr"], r["status"]) for r in flags.values()) == [
        (0.1, 0.02, "completed"), (0.1, 0.2, "completed"), (1.0, 0.02, "completed"), (1.0, 0.2, "completed")]
    preset = tmp_path / "lr.yaml"
    preset.write_text(PRESET.replace("seeds: 2", "seeds: 1") + "lr: [0.02, 0.2]\n")
    code, _, err = cli("sweep", "--config", preset, "--store", tmp_path / "yaml")
    assert code == 0, err
    from_yaml = _rows(tmp_path / "yaml")
    assert {k: r["final_test_acc"] for k, r in from_yaml.items()} == {k: r["final_test_acc"] for k, r in flags.items()}


def test_two_lrs_share_a_pack_two_optimizers_do_not_and_each_run_trains_as_in_a_sweep_of_its_lr_alone(cli, tmp_path):
    # lr is per model in a fused pack (optimizers.py); an optimizer is not: it splits packs.
    runs = sweep_runs(merge_preset(None, {"depths": "4", "h": "0.1,1", "seeds": "2", "lr": "0.02,0.2",
                                          "dataset": "two-moons", "epochs": 2}), "flags", "fp32")
    packs = make_packs(runs, None)
    assert len(packs) == 1 and {s.lr for s in packs[0].runs} == {0.02, 0.2}
    split = make_packs([s.with_(optimizer=o) for s in runs for o in ("sgd", "adam")], None)
    assert [({s.optimizer for s in p.runs}, p.k) for p in split] == [({"sgd"}, 8), ({"adam"}, 8)]
    code, out, _ = cli("sweep", *GRID, "--lr", "0.02,0.2", "--dry-run", "--json")
    assert code == 0 and [p["k"] for p in json.loads(out)["packs"]] == [8]

    code, _, err = cli("sweep", *GRID, "--lr", "0.02,0.2", "--store", tmp_path / "both")
    assert code == 0, err
    both = _rows(tmp_path / "both")
    alone = {}
    for lr in ("0.02", "0.2"):
        code, _, err = cli("sweep", *GRID, "--lr", lr, "--store", tmp_path / lr)
        assert code == 0, err
        alone |= _rows(tmp_path / lr)
    assert len(both) == 8 and set(both) == set(alone)  # the same run ids
    for run_id, row in both.items():  # the same numbers, to float rounding (tests/test_hyper.py: weights)
        assert row["status"] == alone[run_id]["status"] == "completed"
        assert (row["final_test_acc"], row["best_test_acc"]) == pytest.approx(
            (alone[run_id]["final_test_acc"], alone[run_id]["best_test_acc"]), abs=0.002), RunSpec.from_dict(row)
    by_lr = {r["lr"]: r["final_test_acc"] for r in both.values() if r["h"] == 1.0 and r["seed"] == 0}
    assert len(by_lr) == 2 and by_lr[0.02] != by_lr[0.2]  # the lr matters: a pack-mate's lr would show


def test_train_takes_each_axis_as_a_list_and_bn_bare_negated_or_listed(cli, tmp_path):
    def planned(*args):
        code, out, err = cli("train", "--depth", "3", *SMALL, *args, "--dry-run", "--json")
        assert code == 0, err
        return [(r["h"], r["bn"], r["optimizer"], r["batch_size"]) for r in json.loads(out)["runs"]]

    assert planned() == [(0.1, False, "sgd", 64)]  # two-moons: no BN by default
    assert planned("--bn") == [(0.1, True, "sgd", 64)]
    assert planned("--no-bn", "--optimizer", "adam") == [(0.1, False, "adam", 64)]
    assert planned("--bn", "--h", "0.5") == [(0.5, True, "sgd", 64)]  # bare, followed by another flag
    for args, bn in (((), [True]), (("--no-bn",), [False]), (("--bn", "off"), [False]),
                     (("--bn=on,off",), [True, False])):
        code, out, err = cli("train", "--dataset", "synthetic", "--depth", "8", *args, "--dry-run", "--json")
        assert code == 0 and [r["bn"] for r in json.loads(out)["runs"]] == bn, (args, err)  # CIFAR-like: BN by default
    assert sorted(planned("--bn", "on,off", "--optimizer", "sgd,adam", "--batch-size", "32,64", "--h", "0.1,1")) \
        == sorted((h, bn, o, b) for h in (0.1, 1.0) for bn in (True, False) for o in ("sgd", "adam") for b in (32, 64))
    code, _, err = cli("train", "--depth", "3", *SMALL, "--momentum", "0,0.9", "--weight-decay", "0,5e-4",
                       "--store", tmp_path / "s")
    assert code == 0, err
    rows = _rows(tmp_path / "s").values()
    assert sorted((r["momentum"], r["weight_decay"]) for r in rows) == [(0, 0), (0, 5e-4), (0.9, 0), (0.9, 5e-4)]


def test_search_and_noise_eval_take_the_axes_and_pass_them_to_their_runs(cli, tmp_path):
    code, out, err = cli("search", "--depths", "3", "--h", "0.1,1", "--seeds", "3", *SMALL, "--milestones", "",
                         "--lr", "0.02,0.2", "--budget", "1", "--json", "--store", tmp_path / "search")
    assert code == 0, err
    assert sorted(r["protocol"] for r in json.loads(out)["recommendations"]) == ["lr=0.02", "lr=0.2"]
    # each combination is searched on its own, and its decisions say which it is
    decisions = json.loads(out)["decisions"]
    assert {d["axes"]["lr"] for d in decisions} == {0.02, 0.2} and all(set(d["axes"]) == {"lr"} for d in decisions)
    code, out, err = cli("search", "--depths", "3", "--h", "0.1,1", "--seeds", "3", *SMALL, "--milestones", "",
                         "--lr", "0.02,0.2", "--budget", "1", "--store", tmp_path / "text")
    assert code == 0 and "depth 3, lr 0.02, rung epoch 1: " in out and "depth 3, lr 0.2, rung epoch 1: " in out, err
    assert sorted({r["lr"] for r in _rows(tmp_path / "search").values()}) == [0.02, 0.2]
    code, _, err = cli("noise-eval", "--mode", "train-noise", "--depth", "3", "--h", "0.1", "--seeds", "1",
                       "--levels", "0,0.1", "--epochs", "1", "--lr", "0.02,0.2", "--bn", "on,off",
                       "--store", tmp_path / "noise")
    assert code == 0, err
    assert sorted((r["train_noise"], r["lr"], r["bn"]) for r in _rows(tmp_path / "noise").values()) == sorted(
        (level, lr, bn) for level in (0.0, 0.1) for lr in (0.02, 0.2) for bn in (False, True))


def test_help_gives_an_example_of_each_new_axis(cli):
    for command in ("sweep", "train", "search", "noise-eval"):
        code, out, _ = cli(command, "--help")
        text = " ".join(out.split())
        assert code == 0
        for example in ("--lr GRID", "0.05,0.5", "0.01..1", "--optimizer LIST", "sgd,adam", "--bn on,off",
                        "--no-bn", "--momentum LIST", "0,0.9", "--weight-decay GRID", "0,5e-4",
                        "--batch-size LIST", "64,128"):
            assert example in text, (command, example)


def test_the_dry_runs_table_shows_the_lrs_of_each_pack_and_why_packs_split(cli):
    code, out, err = cli("sweep", *GRID, "--lr", "0.02,0.2", "--optimizer", "sgd,adam", "--dry-run")
    assert code == 0, err
    rows = [line for line in out.splitlines() if "two-moons" in line and "│" in line]
    assert len(rows) == 2 and all("0.02,0.2" in r for r in rows) and "sgd" in rows[0] and "adam" in rows[1]
    assert "runs that differ in optimizer (adam, sgd) train in separate packs" in " ".join(out.split())


def test_json_runs_name_the_axes_that_vary(cli, tmp_path):
    code, out, err = cli("train", "--depth", "3", *SMALL, "--h", "0.1", "--lr", "0.02,0.2", "--json",
                         "--store", tmp_path / "a")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert sorted(r["lr"] for r in runs) == [0.02, 0.2] and all("optimizer" not in r for r in runs)
    code, out, err = cli("train", "--depth", "3", *SMALL, "--h", "0.1", "--json", "--store", tmp_path / "b")
    assert code == 0 and "lr" not in json.loads(out)["runs"][0], err
