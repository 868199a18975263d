import json
import math
from pathlib import Path

import pytest
import torch

from robustres import data as D
from robustres import engine
from robustres import transforms as T
from robustres.spec import make_run_spec
from robustres.store import Store


def bits_for(seeds):
    return lambda n: T.keyed_bits(torch.tensor(seeds), T.STREAM_TEST_NOISE, 0, 0, n)


def test_salt_pepper_sets_the_level_fraction_of_pixels_to_black_or_white():
    x = torch.full((2, 64, 3, 16, 16), 0.5)
    y = T.corrupt_images(x, "salt-pepper", torch.tensor([0.3, 0.0]), bits_for([1, 2]))
    hit = (y[0] != 0.5).all(dim=1)  # a hit pixel changes in every channel at once
    assert abs(hit.float().mean().item() - 0.3) < 0.02
    assert set(y[0][:, 0][hit].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y[1], x[1])


def test_mosaic_blocks_grow_with_the_level():
    assert [T.mosaic_block(v) for v in (0, 0.3, 1)] == [1, 3, 8]
    x = torch.rand(1, 2, 3, 32, 32)
    y = T.corrupt_images(x, "mosaic", torch.tensor([1.0]), None)
    assert torch.allclose(y[0, :, :, :8, :8], x[0, :, :, :8, :8].mean(dim=(2, 3), keepdim=True).expand(-1, -1, 8, 8))
    assert torch.equal(T.corrupt_images(x, "mosaic", torch.tensor([0.0]), None), x)


@pytest.mark.parametrize("kind", ["salt-pepper", "mosaic"])
def test_training_with_the_other_image_noises(kind):
    spec = make_run_spec(dataset="synthetic", n_train=64, n_test=16, depth=8, epochs=1, batch_size=32,
                         train_noise=0.3, noise_kind=kind)
    outcome = engine.train([spec], D.load(spec, "."), torch.device("cpu"))[0]
    assert outcome.status == "completed"


def test_test_noise_evaluates_checkpoints_and_fills_the_tables(cli, tmp_path):
    code, _, err = cli("train", "--depth", "8", "--h", "0.1,1", "--epochs", "10", "--json")
    assert code == 0, err
    code, out, err = cli("noise-eval", "--levels", "0,0.5,1", "--propagation", "--json")
    assert code == 0, err
    results = json.loads(out)["noise_evals"]
    assert len(results) == 2 * 3
    store = Store(tmp_path / "store")
    runs = store.runs().set_index("run_id")
    for r in results:
        if r["level"] == 0:  # clean: exactly the run's own final evaluation
            assert r["accuracy"] == pytest.approx(runs.final_test_acc[r["run_id"]])
    by = {(r["h"], r["level"]): r["accuracy"] for r in results}
    assert by[(0.1, 1.0)] < by[(0.1, 0.0)]
    evals = store.noise_evals()
    assert len(evals) == 6 and set(evals.kind) == {"gaussian"}
    prop = store.propagation()
    assert len(prop) == 2 * 2 * 9 and set(prop.block) == set(range(9))  # x_0 and 8 blocks, levels 0.5 and 1
    # Noise at levels 0.5 and 1 moves every block's state (a ratio >= 0 would pass with no noise at
    # all), and more noise moves it further.
    assert prop.value.map(math.isfinite).all() and (prop.value > 0).all()
    by_level = prop.pivot_table(index=["run_id", "block"], columns="level", values="value")
    assert (by_level[1.0] > by_level[0.5]).all(), by_level
    # For two-moons x_0 is the input itself: its perturbation is the noise's size.
    first = prop[(prop.block == 0) & (prop.level == 0.5)].value
    assert first.between(0.2, 1.0).all()
    # Evaluating again replaces, never duplicates.
    cli("noise-eval", "--levels", "0.5", "--json")
    assert len(Store(tmp_path / "store").noise_evals()) == 6


def test_train_noise_mode_is_a_sweep_over_levels(cli, tmp_path):
    code, out, err = cli("noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "0.1,1", "--levels",
                         "0,0.3", "--seeds", "2", "--epochs", "2", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert len(runs) == 8 and {r["train_noise"] for r in runs} == {0.0, 0.3}


def test_train_noise_mode_takes_the_sweeps_execution_options(cli, tmp_path):
    code, out, err = cli("noise-eval", "--mode", "train-noise", "--depth", "3", "--h", "0.1,1", "--levels", "0,0.3",
                         "--seeds", "1", "--epochs", "2", "--pack-size", "2", "--no-fuse", "--precision", "fp32",
                         "--checkpoint-every", "0", "--json")
    assert code == 0, err
    assert err.count("(in turn)") == 2 and "pack 2/2" in err  # 4 runs in packs of 2, each stepped in turn
    assert {r["status"] for r in json.loads(out)["runs"]} == {"completed"}


def test_prop2_on_moons_noisy_training_h01_as_accurate_with_smaller_perturbation(cli, tmp_path):
    # Issue 6: depth 20, training inputs with Gaussian noise 0.3, 5 seeds, lr 0.05 for 100 epochs
    # (/10 after 70: with the protocol's drop at 20, h = 0.1 stops short). See benchmarks/RESULTS.md.
    # The accuracy half is a tie to within rounding: the h = 1 runs, run in turn instead of fused,
    # end one test point higher in median (95.4 vs 95.1 %; h = 0.1: 95.3 both ways), and which way
    # the engine runs a pack is chosen by timing it. So the pack's execution is pinned: fused, as
    # the engine runs two-moons packs unless the machine is loaded while it times them.
    code, _, err = cli("noise-eval", "--mode", "train-noise", "--fuse", "--dataset", "two-moons", "--depth", "20",
                       "--h", "0.1,1", "--levels", "0.3", "--seeds", "5", "--lr", "0.05", "--epochs", "100",
                       "--milestones", "70", "--json")
    assert code == 0, err
    code, _, err = cli("noise-eval", "--levels", "0,0.3", "--propagation", "--json")
    assert code == 0, err
    store = Store(tmp_path / "store")
    runs = store.runs()
    # Every run trained: neither half may be won by the other h diverging or collapsing to chance.
    assert len(runs) == 10 and (runs.status == "completed").all() and (runs.final_test_acc > 0.9).all()
    acc = runs.groupby("h").final_test_acc.median()  # clean test data, as in the paper's Fig. 5
    prop = store.propagation().merge(runs[["run_id", "h"]], on="run_id")
    last = prop[(prop.block == 20) & (prop.level == 0.3)]
    assert len(last) == 10
    pert = last.groupby("h").value.median()
    assert acc[0.1] >= acc[1.0], acc
    assert pert[0.1] < pert[1.0], pert


SHARED_CIFAR = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="needs ../shared/data/cifar10-jpeg.tar.gz (the real CIFAR)")
def test_prop1_on_real_cifar_layer2_gradient_explodes_at_h1_not_at_h01(cli, tmp_path):
    import tarfile

    with tarfile.open(SHARED_CIFAR) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    code, out, err = cli("train", "--dataset", "imagefolder", "--data-dir", tmp_path / "data" / "cifar10-jpeg",
                         "--depth", "218", "--h", "0.1,1", "--batch-size", "64", "--lr", "0.1", "--epochs", "1",
                         "--limit-train", "128", "--limit-test", "64", "--track-layers", "2", "--json")
    assert code == 0, err
    stats = Store(tmp_path / "store").layer_stats().merge(Store(tmp_path / "store").runs(columns=["run_id", "h"]),
                                                          on="run_id")
    grad = stats.pivot_table(index="step", columns="h", values="grad_norm")
    assert list(grad.index) == [1, 2]
    assert ((grad[1.0] / grad[0.1]) >= 100).all(), grad


def test_report_draws_the_instruments(cli, tmp_path):
    code, _, err = cli("train", "--depth", "8", "--h", "0.1,1", "--epochs", "4", "--track-layers", "2,last")
    assert code == 0, err
    code, _, err = cli("noise-eval", "--levels", "0,0.3", "--propagation")
    assert code == 0, err
    code, out, err = cli("report", "--min-seeds", "1", "--plot", tmp_path / "figs")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    for stem in ("noise-acc-two-moons-depth8-gaussian", "propagation-two-moons-depth8-gaussian-0.3",
                 "layer-norms-two-moons-depth8-layer2", "layer-norms-two-moons-depth8-layer17",
                 "fig4-moons-features-depth8"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem
    assert "median gradient norm over the first 10 steps at h=0.1" in out


def test_noise_eval_into_a_read_only_store_is_one_line(cli, tmp_path, monkeypatch):
    import errno
    import os

    from robustres.store import Store

    assert cli("train", "--depth", "3", "--epochs", "1")[0] == 0
    store = str(tmp_path / "store")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == store else real_access(p, mode))
    code, out, err = cli("noise-eval", "--levels", "0.1")
    assert code == 2 and err == f"error: store {store} is read-only, and this command writes its results there\n"
    monkeypatch.setattr(os, "access", real_access)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)  # a store that became read-only while evaluating
    code, out, err = cli("noise-eval", "--levels", "0.1")
    assert code == 1 and err.startswith("error: cannot ") and "Read-only file system" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "store" / "noise_evals").exists()
    assert Store(tmp_path / "store").noise_evals().empty


def test_test_noise_takes_the_store_of_its_preset(cli, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(f"dataset: two-moons\ndepths: [3]\nh: [0.1]\nseeds: 1\nepochs: 2\nprecision: fp32\n"
                      f"store: {tmp_path / 'elsewhere'}\n")
    assert cli("sweep", "--config", preset)[0] == 0
    assert (tmp_path / "elsewhere" / "runs").is_dir() and not (tmp_path / "store").exists()
    code, out, err = cli("noise-eval", "--config", preset, "--levels", "0,0.2", "--json")
    assert code == 0, err  # read from the preset's store, not $ROBUSTRES_STORE
    assert len(json.loads(out)["noise_evals"]) == 2
    assert not (tmp_path / "store").exists()


def test_noise_eval_gives_intervals_over_seeds_and_compares_each_h_with_h1_seed_by_seed(cli, tmp_path):
    import numpy as np

    from robustres.stats import paired, seed_estimate

    code, _, err = cli("train", "--depth", "8", "--h", "0.1,1", "--seeds", "3", "--epochs", "3")
    assert code == 0, err
    code, out, err = cli("noise-eval", "--levels", "0,0.5", "--propagation", "--json")
    assert code == 0, err
    got = json.loads(out)
    raw = got["noise_evals"]
    assert len(got["accuracy"]) == 2 * 2 and {r["seeds"] for r in got["accuracy"]} == {3}
    for cell in got["accuracy"]:
        mine = [r["accuracy"] for r in raw if (r["h"], r["level"]) == (cell["h"], cell["level"])]
        expected = seed_estimate(mine, 1000)  # report's statistic: seeds and the test set's noise
        assert (cell["median"], cell["ci_low"], cell["ci_high"]) == pytest.approx(
            (expected.value, expected.low, expected.high)) and cell["n_test"] == 1000
        assert cell["ci_low"] < cell["median"] < cell["ci_high"]  # never a bare median
    assert sorted((r["h"], r["versus_h"], r["level"]) for r in got["against_plain"]) == [(0.1, 1.0, 0), (0.1, 1.0, 0.5)]
    for row in got["against_plain"]:
        acc = {(r["h"], r["seed"]): r["accuracy"] for r in raw if r["level"] == row["level"]}
        expected = paired([acc[(0.1, s)] for s in range(3)], [acc[(1.0, s)] for s in range(3)])
        assert (row["seeds"], row["median_diff"], row["p_improvement"]) == pytest.approx(
            (3, expected.median_diff, expected.p_improvement))
    prop = Store(tmp_path / "store").propagation()
    blocks = [r for r in got["propagation"] if (r["h"], r["level"], r["block"]) == (0.1, 0.5, 8)]
    assert len(blocks) == 1 and blocks[0]["seeds"] == 3
    runs = Store(tmp_path / "store").runs().set_index("run_id")
    values = prop[(prop.block == 8) & (prop.level == 0.5) & prop.run_id.map(runs.h).eq(0.1)].value
    assert blocks[0]["median"] == pytest.approx(np.median(values))
    assert blocks[0]["ci_low"] <= blocks[0]["median"] <= blocks[0]["ci_high"]
    assert any(r["ci_high"] > r["ci_low"] for r in got["propagation"])
    code, out, err = cli("noise-eval", "--levels", "0.5", "--propagation")
    assert code == 0, err
    assert "h=0.1 against h=1:" in out and "P(h=0.1 better)" in out and "] over 3 seed(s)" in out
    code, out, err = cli("report", "--plot", tmp_path / "figs")
    assert code == 0 and "two-moons depth 8 gaussian 0.5: h=0.1 against h=1:" in out, err


def test_noise_eval_never_pools_runs_of_other_protocols(cli, tmp_path):
    code, _, err = cli("train", "--depth", "3", "--h", "0.1,1", "--seeds", "2", "--lr", "0.02,0.2", "--epochs", "2")
    assert code == 0, err
    code, out, err = cli("noise-eval", "--levels", "0.3", "--propagation", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert sorted((r["protocol"], r["h"], r["seeds"]) for r in got["accuracy"]) == [
        ("lr=0.02", 0.1, 2), ("lr=0.02", 1.0, 2), ("lr=0.2", 0.1, 2), ("lr=0.2", 1.0, 2)]  # 2 seeds, not 4
    assert sorted(r["protocol"] for r in got["against_plain"]) == ["lr=0.02", "lr=0.2"]
    assert {r["seeds"] for r in got["propagation"]} == {2}
    code, out, err = cli("noise-eval", "--levels", "0.3")
    assert code == 0 and "protocol" in out and "two-moons lr=0.2 depth 3 gaussian 0.3: h=0.1 against h=1" in out, err


def test_fig4_is_drawn_per_protocol_never_mixing_runs_of_other_lrs(cli, tmp_path):
    code, _, err = cli("train", "--depth", "3", "--h", "0.1,1", "--lr", "0.02,0.2", "--epochs", "2")
    assert code == 0, err
    code, _, err = cli("report", "--min-seeds", "1", "--plot", tmp_path / "figs")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "figs").iterdir() if p.name.startswith("fig4")}
    assert names == {f"fig4-moons-features-depth3-lr={lr}.{ext}" for lr in ("0.02", "0.2") for ext in ("png", "svg")}
