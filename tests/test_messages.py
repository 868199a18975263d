"""Issue 22: messages that said the wrong thing, and what a new user meets first.

Bad input is one `error:` line, exit code 2, nothing written; every case here was answered wrongly
before (exit 1 "no runs match", a wrong reason, silence, or seconds of torch import)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustres.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Six two-moons runs (h 0.1 and 1 x seeds 0..2, depth 3, 2 epochs): enough for a recommendation."""
    root = tmp_path_factory.mktemp("messages") / "store"
    code = main(["train", "--store", str(root), "--depth", "3", "--h", "0.1,1", "--seed", "0,1,2", "--epochs", "2",
                 "--json"])
    assert code == 0
    return root


def _files(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("args, expected", [
    (["report", "--depths", "0"], "--depths: 0 is no run's depth"),
    (["report", "--depths", "-3"], "--depths: -3 is no run's depth"),
    (["report", "--dataset", "foo"], "--dataset: unknown dataset 'foo'"),
    (["report", "--train-noise", "5"], "--train-noise: 5 is no run's level"),
    (["noise-eval", "--dataset", "foo"], "--dataset: unknown dataset 'foo'"),
    (["noise-eval", "--depth", "0"], "--depth: 0 is no run's depth"),
    (["report", "--level", "1e-300"], "--level is a confidence level from 0.5 to 0.999 with at most one decimal"),
    (["report", "--level", "0.9755"], "at most one decimal in percent"),  # its label would say 97.5 or 97.6
])
def test_filters_no_run_can_match_are_bad_input(cli, store, args, expected):
    before = _files(store)
    code, out, err = cli(*args, "--store", store)
    assert code == 2, err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert _files(store) == before


def test_a_budget_below_zero_names_the_range_it_accepts(cli):
    code, _, err = cli("search", "--depths", "3", "--h", "0.01..2", "--budget", "-1")
    assert code == 2
    assert "(0 < B <= 1)" in err and "(2 to 1,000,000,000,000,000)" in err and "[0," not in err


def test_a_level_label_is_the_level_given(cli, store):
    # 0.57 * 100 is 56.99999...: the summary said "56 % CI"
    code, out, err = cli("report", "--store", store, "--level", "0.57")
    assert code == 0, err
    assert "(57 % CI" in out and "56 % CI" not in out
    code, out, err = cli("report", "--store", store, "--level", "0.995")  # accepted before issue 22: still
    assert code == 0 and "(99.5 % CI" in out and "99.5 % CI" in out.replace("\n", " "), err


def _fresh(args: list[str], env: dict) -> tuple[int, str, bool]:
    """`robustres ARGS` in a fresh interpreter: (exit code, stderr, whether torch was imported)."""
    code = ("import sys; from robustres.cli import main; code = main(sys.argv[1:]); "
            "print('torch' in sys.modules, file=sys.stderr); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    lines = done.stderr.strip().splitlines()
    return done.returncode, "\n".join(lines[:-1]), lines[-1] == "True"


def test_noise_kinds_that_do_not_apply_are_refused_before_torch_loads(store):
    code, err, torch_loaded = _fresh(["noise-eval", "--store", str(store), "--kinds", "mosaic"], {})
    assert code == 2 and "noise kind 'mosaic' does not apply to points data" in err
    assert not torch_loaded


def test_cuda_without_a_gpu_is_refused_before_torch_loads(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides every GPU, so this holds on a GPU machine too
    code, err, torch_loaded = _fresh(["train", "--device", "cuda", "--store", str(tmp_path / "s")],
                                     {"CUDA_VISIBLE_DEVICES": ""})
    assert code == 2 and "CUDA is not available" in err and not torch_loaded
    assert not (tmp_path / "s").exists()


def test_the_driver_check_only_refuses_when_sure(monkeypatch):
    from robustres.hardware import gpu_driver_present

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert not gpu_driver_present()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    import torch

    if torch.cuda.is_available():  # a GPU torch sees is never refused
        assert gpu_driver_present()


def test_a_damaged_cifar_archive_is_named_and_not_listed(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(b"1234567")
    code, _, err = cli("train", "--dataset", "cifar10", "--depth", "8", "--epochs", "1")
    assert code == 2
    assert "cifar-10-python.tar.gz is damaged: 7 bytes, not 170,498,071" in err and "download" in err
    assert not (tmp_path / "store").exists()
    code, out, _ = cli("doctor", "--json")
    assert code == 0 and "cifar10" not in json.loads(out)["data"]["datasets"]


def test_track_layers_on_a_stored_run_says_it_recorded_nothing(cli):
    args = ("train", "--depth", "3", "--epochs", "1", "--track-layers", "2,last", "--json")
    code, _, err = cli(*args)
    assert code == 0 and "--track-layers recorded nothing" not in err
    code, _, err = cli(*args)
    assert code == 0 and "warning: --track-layers recorded nothing for the 1 run(s) already in the store" in err


def _dry(cli, *args) -> dict:
    code, out, err = cli(*args, "--dry-run", "--json")
    assert code == 0, err
    return json.loads(out)


def test_sweep_and_search_default_to_the_seeds_report_needs(cli):
    plan = _dry(cli, "sweep", "--depths", "3", "--h", "0.1")
    assert plan["runs_total"] == 3 and plan["packs"][0]["seeds"] == [0, 1, 2]
    code, out, _ = cli("sweep", "--help")
    assert "Default 3 (seeds 0..2)" in " ".join(out.split())


def test_train_takes_the_grammar_of_sweep(cli):
    runs = _dry(cli, "train", "--h", "0.01..2")["runs"]
    assert [r["h"] for r in runs] == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2]
    by_count = _dry(cli, "train", "--seeds", "3")["runs"]
    by_name = _dry(cli, "train", "--seed", "0..2")["runs"]
    assert [r["seed"] for r in by_count] == [r["seed"] for r in by_name] == [0, 1, 2]
    assert [r["run_id"] for r in by_count] == [r["run_id"] for r in by_name]
    assert [r["seed"] for r in _dry(cli, "train", "--seed", "3")["runs"]] == [3]  # --seed names, never counts
    code, _, err = cli("train", "--seed", "1", "--seeds", "2")
    assert code == 2 and err.startswith("error: give --seed")


def test_dry_runs_estimate_wall_time_with_the_rate_they_assume(cli):
    plan = _dry(cli, "sweep", "--depths", "3", "--h", "0.1,1")
    wall = plan["wall_time"]
    low, high = wall["seconds"]
    assert 0 < low < high and wall["estimated"] == wall["of"] == 1
    assert "make run's two-moons sweep" in wall["rates"][0]
    rate_low, rate_high = plan["packs"][0]["estimate"]["rate_flop_per_s"]
    assert high == pytest.approx(plan["packs"][0]["tflop"] * 1e12 / rate_low)
    code, out, _ = cli("sweep", "--depths", "3", "--h", "0.1,1", "--dry-run")
    assert "estimated wall time" in out and "spread of the rates measured on" in " ".join(out.split())
    # no rate measured: said, and no number
    plan = _dry(cli, "sweep", "--dataset", "cifar10", "--depths", "8", "--h", "1", "--device", "cpu", "--precision",
                "bf16")
    assert plan["wall_time"]["seconds"] is None
    assert plan["wall_time"]["rates"] == ["no measured rate for the resnet in bf16 on cpu"]
    runs = _dry(cli, "train", "--dataset", "cifar10", "--depth", "8", "--device", "cpu", "--precision", "fp32")["runs"]
    assert runs[0]["estimate"]["seconds"][0] > 0 and "CIFAR ResNet-20" in runs[0]["estimate"]["rate"]


def test_train_counts_its_runs_before_making_them_and_names_its_own_seed_flag(cli, tmp_path):
    """`train --h 0.001..1:10000 --seeds 10000` would make 10^8 runs (it hung); sweep counts first."""
    code, _, err = cli("train", "--depth", "3", "--h", "0.001..1:10000", "--seeds", "10000", "--dry-run")
    assert code == 2 and err == "error: --h and the seeds make 100,000,000 runs, more than the 10,000 allowed " \
        "(--max-runs N allows more)\n"
    code, _, err = cli("train", "--depth", "3", "--seed", "5..3", "--dry-run")
    assert code == 2 and err == "error: --seed: range '5..3' is empty or negative\n"
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("budget", ["nan", "1e400", "inf"])
def test_a_budget_that_is_no_finite_number_says_so(cli, budget):
    code, _, err = cli("search", "--depths", "3", "--h", "0.01..2", "--budget", budget)
    assert code == 2 and err == f"error: search budget: '{budget}' is not a finite number\n"  # was "in [-inf, inf]"


def test_an_h_too_small_for_a_float_is_refused_not_trained_as_zero(cli, tmp_path):
    code, _, err = cli("train", "--depth", "3", "--h", "1e-400", "--dry-run")
    assert code == 2 and err == "error: --h: '1e-400' is too small for a float (it would be 0); write 0 for zero\n"
    code, out, err = cli("train", "--depth", "3", "--h", "0", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["runs"][0]["h"] == 0.0  # zero written as zero is fine
