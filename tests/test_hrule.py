"""h as a law of depth (issue 25): the h_rule axis. fixed is today's runs (their ids unchanged);
sqrt and linear divide the grid's value c by sqrt(L) or L, L the network's residual blocks; runs of
these rules share a pack (each model's h is its own)."""

import json

import pyarrow.parquet as pq
import pytest

from robustres.datasets import residual_blocks
from robustres.execution.plan import make_packs
from robustres.grid import merge_preset, sweep_runs
from robustres.spec import RunSpec, make_run_spec
from robustres.store import Store

SMALL = ["--dataset", "two-moons", "--n-train", "200", "--n-test", "200", "--epochs", "2"]


def _rows(store) -> dict[str, dict]:
    return {r["run_id"]: r for r in Store(store).runs().to_dict("records")}


@pytest.mark.parametrize("model,depth,blocks", [("resnet", 20, 9), ("resnet", 110, 54), ("resnet", 218, 108),
                                                ("vdcnn", 9, 4), ("vdcnn", 17, 8), ("vdcnn", 49, 24),
                                                ("mlp", 16, 16)])
def test_the_residual_blocks_of_each_network(model, depth, blocks):
    assert residual_blocks(model, depth) == blocks


def test_the_effective_h_of_each_rule_and_the_ids_of_fixed_runs():
    fixed = make_run_spec(dataset="cifar10", depth=110, h=5.4)
    assert fixed.h_rule == "fixed" and fixed.effective_h == 5.4
    assert make_run_spec(dataset="cifar10", depth=110, h=5.4, h_rule="linear").effective_h == pytest.approx(0.1)
    assert make_run_spec(dataset="cifar10", depth=20, h=0.9, h_rule="sqrt").effective_h == pytest.approx(0.3)
    assert make_run_spec(dataset="two-moons", depth=16, h=2.0, h_rule="sqrt").effective_h == pytest.approx(0.5)
    # fixed is not hashed: a run of today has the id it always had (tests/test_spec.py pins those ids)
    assert make_run_spec(dataset="cifar10", depth=110, h=5.4, h_rule="fixed").run_id == fixed.run_id
    assert make_run_spec(dataset="cifar10", depth=110, h=5.4, h_rule="sqrt").run_id != fixed.run_id
    # a row stored before the field existed reads as fixed
    row = {k: v for k, v in fixed.to_dict().items() if k != "h_rule"}
    assert RunSpec.from_dict(row) == fixed


@pytest.mark.parametrize("args,message", [
    (["--h", "0.1", "--h-rule", "cubic"], "unknown h rule 'cubic'; choose one of: fixed, sqrt, linear, learned"),
    (["--h", "0.1", "--h-rule", "fixed,cubic"], "cubic"),
    (["--h", "0,1", "--h-rule", "sqrt"], "h = 0 with --h-rule sqrt is h = 0 at every depth"),
])
def test_bad_h_rules_are_one_line_and_write_nothing(cli, tmp_path, args, message):
    code, out, err = cli("sweep", "--depths", "4", *SMALL, *args, "--store", tmp_path / "s")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_rules_share_a_pack_and_sqrt_at_c_trains_as_fixed_at_c_over_sqrt_l(cli, tmp_path):
    runs = sweep_runs(merge_preset(None, {"depths": "4", "h": "0.4,2", "seeds": "2", "h_rule": "fixed,sqrt,linear",
                                          "dataset": "two-moons", "epochs": 2}), "flags", "fp32")
    assert len(runs) == 12 and len(make_packs(runs, None)) == 1
    code, out, err = cli("sweep", "--depths", "4", "--h", "0.4", "--seeds", "1", *SMALL, "--h-rule", "fixed,sqrt",
                         "--dry-run", "--json")
    assert code == 0 and [p["k"] for p in json.loads(out)["packs"]] == [2], err
    code, _, err = cli("sweep", "--depths", "4", "--h", "0.4", "--seeds", "1", *SMALL, "--h-rule", "sqrt",
                       "--store", tmp_path / "sqrt")
    assert code == 0, err
    code, _, err = cli("sweep", "--depths", "4", "--h", "0.2", "--seeds", "1", *SMALL, "--store", tmp_path / "fixed")
    assert code == 0, err
    (sqrt,), (fixed,) = _rows(tmp_path / "sqrt").values(), _rows(tmp_path / "fixed").values()
    assert (sqrt["h_rule"], sqrt["h"], fixed["h_rule"], fixed["h"]) == ("sqrt", 0.4, "fixed", 0.2)
    assert sqrt["run_id"] != fixed["run_id"]
    assert sqrt["final_test_acc"] == fixed["final_test_acc"]  # 0.4 / sqrt(4 blocks) is h = 0.2


def test_a_store_written_before_h_rules_reads_its_runs_as_fixed(cli, tmp_path):
    code, _, err = cli("train", "--depth", "3", "--h", "0.1,1", *SMALL, "--store", tmp_path / "s")
    assert code == 0, err
    for path in (tmp_path / "s" / "runs").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop(["h_rule"]), path)  # as a store of before this field
    runs = Store(tmp_path / "s").runs()
    assert len(runs) == 2 and list(runs.h_rule) == ["fixed", "fixed"]
    code, out, err = cli("train", "--depth", "3", "--h", "0.1,1", *SMALL, "--store", tmp_path / "s", "--json")
    assert code == 0 and err.count("completed in the store, not retrained") == 2, err
    assert {r["run_id"] for r in json.loads(out)["runs"]} == set(runs.run_id)


def test_the_dry_run_names_the_h_rules_a_pack_fuses(cli, tmp_path):
    args = ["sweep", "--dataset", "two-moons", "--depths", "4", "--h", "1", "--seeds", "3", "--h-rule", "fixed,sqrt",
            "--dry-run", "--store", str(tmp_path / "s")]
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    assert [p["h_rule"] for p in json.loads(out)["packs"]] == [["fixed", "sqrt"]]
    code, out, _ = cli(*args)
    assert code == 0 and "h_rule" in out and "fixed,sqrt" in out
