import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustres.axes import decade_grid, parse_h_grid, parse_seeds
from robustres.grid import load_sweep_file, make_sweep_spec
from robustres.spec import SpecError, make_run_spec
from robustres.store import Store

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"


# ------------------------------------------------------------------ grids


def test_the_papers_grids():
    assert parse_h_grid("0.001..20") == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20]
    assert parse_h_grid("0.001..1") == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]
    assert parse_h_grid("0.03..0.7") == [0.03, 0.05, 0.1, 0.2, 0.5, 0.7]  # the ends are always in
    assert parse_h_grid("0.1,0.5,1") == [0.1, 0.5, 1.0]
    grid = parse_h_grid("0.001..1:4")
    assert grid[0] == 0.001 and grid[-1] == 1 and len(grid) == 4 and grid[1] == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("text,message", [
    ("20..0.001", "empty or reversed"), ("1..1", "empty or reversed"), ("0..1", "A and B > 0"),
    ("-1..2", "A and B > 0"), ("0.1..1:1", "at least 2 points"), ("0.1..1:x", "not a whole number"),
    ("nan..1", "not finite"), ("0.1..inf", "not finite"), ("a..1", "not a number"), ("0.1,,1", "comma-separated"),
    ("-0.5", "h must be >= 0"),
])
def test_bad_h_grids_are_one_line_errors(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_h_grid(text)


@given(st.floats(1e-4, 10), st.floats(1.01, 1e3))
def test_decade_grid_is_sorted_bounded_and_keeps_its_ends(a, factor):
    b = a * factor
    grid = decade_grid(a, b)
    assert grid[0] == a and grid[-1] == b and grid == sorted(set(grid))
    inner = grid[1:-1]
    assert all(a < v < b for v in inner)
    assert all(f"{v:.0e}"[0] in "125" for v in inner)  # 1-2-5 steps


@given(st.floats(1e-4, 10), st.floats(1.5, 1e3), st.integers(2, 30))
def test_log_grid_has_n_increasing_points(a, factor, n):
    grid = parse_h_grid(f"{a!r}..{a * factor!r}:{n}")
    assert len(grid) == n and grid == sorted(grid) and grid[0] == a


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=20))
def test_seed_lists_round_trip(seeds):
    text = ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else "")
    if len(seeds) == 1:
        text = f"{seeds[0]}..{seeds[0]}"
    assert parse_seeds(text) == list(dict.fromkeys(seeds))


def test_seed_forms():
    assert parse_seeds("5") == parse_seeds(5) == [0, 1, 2, 3, 4]
    assert parse_seeds("7,8,9") == [7, 8, 9] and parse_seeds("3..6") == [3, 4, 5, 6]
    for bad in ("0", "x", "5..2", -1):
        with pytest.raises(SpecError):
            parse_seeds(bad)


def test_a_dense_log_grid_keeps_all_its_points_and_says_when_rounding_merges(capsys):
    dense = parse_h_grid("1..1.001:50")  # 4 significant digits would merge these into 2
    assert len(dense) == len(set(dense)) == 50 and dense == sorted(dense)
    assert capsys.readouterr().err == ""
    merged = parse_h_grid("1..1.000000000001:100")  # closer than 12 digits: they must merge
    assert len(merged) < 100
    assert f"of the 100 points coincide at 12 significant digits and merge; the grid has {len(merged)}" in \
        capsys.readouterr().err


def test_the_run_count_is_checked_before_the_grid_is_expanded():
    values = {"depths": [3], "h": [0.1, 0.2], "seeds": 3}
    assert len(make_sweep_spec(values, max_runs=6).runs()) == 6
    with pytest.raises(SpecError, match="the grid has 6 runs, more than the 5 allowed"):
        make_sweep_spec(values, max_runs=5)
    with pytest.raises(SpecError, match="seeds is more than a grid may hold"):
        parse_seeds(10**18)  # refused at once: the list is never built


def test_yaml_reads_numeric_strings_as_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("depths: ['3']\nh: ['1e-2', 0.5]\nlr: 1e-3\nepochs: '2'\nseeds: 1\n")
    values = load_sweep_file(path)
    assert values["epochs"] == 2  # PyYAML reads 1e-3 as the string '1e-3'; lr, an axis, keeps it for its grammar
    runs = make_sweep_spec(values).runs()
    assert [(r.depth, r.h, r.lr, r.epochs) for r in runs] == [(3, 0.01, 0.001, 2), (3, 0.5, 0.001, 2)]


def test_a_yaml_file_with_a_bom_is_read(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes("depths: [3]\nh: 0.1\n".encode("utf-8-sig"))
    assert load_sweep_file(path) == {"depths": [3], "h": 0.1}


# ------------------------------------------------------------------ presets and YAML


@pytest.mark.parametrize("preset", sorted(p.name for p in SWEEPS.glob("*.yaml")))
def test_every_preset_is_valid(preset):
    values = load_sweep_file(SWEEPS / preset)
    grid = make_sweep_spec({k: v for k, v in values.items()}, preset)
    assert len(grid.runs()) >= 2


def test_fig6_presets_are_the_papers_grids():
    cifar = make_sweep_spec(load_sweep_file(SWEEPS / "fig6-cifar10.yaml"))
    assert cifar.values("depth") == (20, 110, 218) and len(cifar.values("h")) == 14 and len(cifar.values("seed")) == 5
    assert len(cifar.runs()) == 3 * 14 * 5
    text = make_sweep_spec(load_sweep_file(SWEEPS / "fig6-agnews.yaml"))
    hs = text.values("h")
    assert text.values("depth") == (17, 49) and hs[0] == 0.001 and hs[-1] == 1 and len(text.runs()) == 100


# ------------------------------------------------------------------ the command


def test_dry_run_plans_and_writes_nothing(cli, tmp_path):
    code, out, err = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["runs_total"], plan["runs_done"], plan["runs_todo"]) == (8, 0, 8)
    assert sorted(p["depth"] for p in plan["packs"]) == [3, 5] and all(p["k"] == 4 for p in plan["packs"])
    assert plan["packs"][0]["depth"] == 5  # the most expensive pack first
    assert not (tmp_path / "store").exists()
    code, out, _ = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--dry-run")
    assert code == 0 and "8 runs, 0 done, 8 to do, in 2 pack(s)" in out


def test_sweep_trains_the_grid_then_reuses_it(cli, tmp_path):
    code, out, err = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["counts"]["completed"] + result["counts"]["diverged"] == 8
    store = Store(tmp_path / "store")
    assert len(store.runs()) == 8 and set(store.runs().depth) == {3, 5}
    stamps = dict(zip(store.runs().run_id, store.runs().updated_at))
    # Flags override the file; an existing grid is reported from the store.
    code, out, err = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--dry-run", "--json")
    assert json.loads(out)["runs_done"] == 8 and json.loads(out)["packs"] == []
    code, out, err = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--seeds", "3", "--json")
    assert code == 0 and len(json.loads(out)["runs"]) == 12
    assert err.count("not retrained") == 8
    again = Store(tmp_path / "store").runs()
    assert len(again) == 12
    assert all(again.set_index("run_id").updated_at[r] == t for r, t in stamps.items())


def test_sweep_and_train_give_a_config_the_same_run_id(cli):
    code, out, _ = cli("sweep", "--depths", "3", "--h", "0.5", "--seeds", "0..0", "--epochs", "2", "--json")
    swept = json.loads(out)["runs"][0]
    assert swept["run_id"] == make_run_spec(dataset="two-moons", depth=3, h=0.5, seed=0, epochs=2).run_id
    code, out, err = cli("train", "--depth", "3", "--h", "0.5", "--epochs", "2", "--json")
    assert code == 0 and json.loads(out)["runs"][0]["run_id"] == swept["run_id"] and "not retrained" in err


def test_plain_output_and_summary_table(cli):
    code, out, _ = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml")
    assert code == 0
    assert "[8/8]" in out and "robustres sweep: 8 runs" in out
    assert "two-moons depth 3" in out and "two-moons depth 5" in out
    # Two seeds are fewer than report's 3 (the one rule for the best h): the summary says so.
    assert "<- best" not in out and out.count("no best h: no h has 3 completed runs") == 2


def test_a_failing_pack_makes_exit_code_one_and_the_sweep_goes_on(cli, monkeypatch):
    from robustres import engine

    real = engine.train

    def flaky(specs, *args, **kwargs):
        if specs[0].depth == 5:
            raise RuntimeError("simulated out-of-range error")
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(engine, "train", flaky)
    code, out, _ = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--json")
    assert code == 1
    counts = json.loads(out)["counts"]
    assert counts["failed"] == 4 and counts["completed"] + counts["diverged"] == 4


# ------------------------------------------------------------------ kill -9 and resume


def _env(tmp_path, store):
    return dict(os.environ, ROBUSTRES_STORE=str(tmp_path / store), ROBUSTRES_OFFLINE="1",
                OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_completes_every_run_exactly_once(tmp_path):
    # --fuse: both processes run the packs alike (a timed choice could flip on a loaded machine)
    args = [sys.executable, "-m", "robustres", "sweep", "--depths", "3,6", "--h", "0.1,0.5,1", "--seeds", "2",
            "--epochs", "40", "--pack-size", "3", "--checkpoint-every", "0", "--fuse", "--json"]
    whole = subprocess.run(args, env=_env(tmp_path, "whole"), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    expected = {r["run_id"]: r for r in json.loads(whole.stdout)["runs"]}
    assert len(expected) == 12

    store = Store(tmp_path / "cut")
    proc = subprocess.Popen(args, env=_env(tmp_path, "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some packs finished and another is mid-way
        runs = store.runs(columns=["status"]) if store.runs_dir.exists() else None
        if runs is not None and (runs.status != "running").sum() >= 3 and (runs.status == "running").any():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = store.runs()
    finished = before[before.status.isin(["completed", "diverged"])]
    assert 3 <= len(finished) < 12, "the kill came too late (or too early) to test anything"
    stamps = dict(zip(finished.run_id, finished.updated_at))

    again = subprocess.run(args, env=_env(tmp_path, "cut"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    result = {r["run_id"]: r for r in json.loads(again.stdout)["runs"]}
    after = store.runs()
    assert sorted(after.run_id) == sorted(expected) and after.run_id.is_unique  # each run exactly once
    assert all(after.set_index("run_id").updated_at[r] == t for r, t in stamps.items())  # not retrained
    for run_id, row in expected.items():
        assert result[run_id]["status"] == row["status"]
        assert result[run_id]["final_test_acc"] == row["final_test_acc"]  # as if never interrupted
    assert not list((tmp_path / "cut").rglob("*.tmp"))


@pytest.mark.slow
def test_a_sweep_through_a_real_local_ray_matches_the_local_executor(cli, tmp_path):
    pytest.importorskip("ray")
    preset = SWEEPS / "ci-smoke.yaml"
    # In turn (--no-fuse): each run computes exactly as alone, whichever process trains it.
    code, out, err = cli("sweep", "--config", preset, "--no-fuse", "--executor", "ray", "--json",
                         "--store", tmp_path / "ray")
    assert code == 0, err
    via_ray = {r["run_id"]: r for r in json.loads(out)["runs"]}
    code, out, err = cli("sweep", "--config", preset, "--no-fuse", "--json", "--store", tmp_path / "local")
    local = {r["run_id"]: r for r in json.loads(out)["runs"]}
    assert via_ray.keys() == local.keys() and len(local) == 8
    for run_id, row in local.items():
        assert via_ray[run_id]["status"] == row["status"]
        assert via_ray[run_id]["final_test_acc"] == row["final_test_acc"]
    store = Store(tmp_path / "ray")  # the driver wrote everything: rows, epochs, checkpoints
    assert set(store.runs().device) == {"ray:cpu"} and len(store.epochs()) == 8 * 3
    assert all(store.checkpoint_path(r).exists() for r in via_ray)
    code, out, err = cli("sweep", "--config", preset, "--no-fuse", "--executor", "ray", "--json",
                         "--store", tmp_path / "ray")
    assert code == 0 and err.count("not retrained") == 8


@pytest.mark.slow
def test_worker_processes_share_out_the_packs_like_one_process(cli, tmp_path):
    preset = SWEEPS / "ci-smoke.yaml"
    code, out, err = cli("sweep", "--config", preset, "--workers", "2", "--pack-size", "2", "--no-fuse", "--json",
                         "--store", tmp_path / "two")
    assert code == 0, err
    two = {r["run_id"]: r["final_test_acc"] for r in json.loads(out)["runs"]}
    code, out, _ = cli("sweep", "--config", preset, "--no-fuse", "--json", "--store", tmp_path / "one")
    assert two == {r["run_id"]: r["final_test_acc"] for r in json.loads(out)["runs"]}
    assert err.count("pack ") >= 4 and "4/4" in err


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
@pytest.mark.slow
def test_a_killed_worker_fails_its_pack_and_the_sweep_goes_on(tmp_path):
    args = [sys.executable, "-m", "robustres", "sweep", "--depths", "3", "--h", "0.1,0.5,1,2", "--seeds", "1",
            "--epochs", "400", "--workers", "2", "--pack-size", "2", "--no-fuse", "--json"]
    proc = subprocess.Popen(args, env=_env(tmp_path, "store"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    store = Store(tmp_path / "store")
    deadline = time.time() + 60
    while time.time() < deadline:  # both workers training
        workers = _children(proc.pid)
        if len(workers) == 2 and store.runs_dir.exists() and len(list(store.runs_dir.glob("*.parquet"))) == 4:
            break
        time.sleep(0.1)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    runs = json.loads(out)["runs"]
    failed = [r for r in runs if r["status"] == "failed"]
    assert len(failed) == 2 and {r["status"] for r in runs if r not in failed} <= {"completed", "diverged"}
    assert "died (exit code -9)" in Store(tmp_path / "store").get_run(failed[0]["run_id"])["error"]


# ------------------------------------------------------------------ presets by name


def test_a_preset_is_found_by_name_from_any_folder(cli, tmp_path):
    code, out, err = cli("sweep", "--config", "fig6-cifar10", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["runs_total"] == 210
    code, out, err = cli("sweep", "--config", "quick-moons.yaml", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["runs_total"] == 72, err


def test_an_explicit_path_wins_over_a_packaged_preset(cli, tmp_path):
    (tmp_path / "quick-moons.yaml").write_text("dataset: two-moons\ndepths: [3]\nh: [0.1, 1]\nseeds: 1\n")
    code, out, err = cli("sweep", "--config", "quick-moons.yaml", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["runs_total"] == 2, err


def test_list_presets_names_every_preset_with_its_description(cli):
    code, out, err = cli("sweep", "--list-presets")
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert set(lines) == {p.stem for p in SWEEPS.glob("*.yaml")}
    assert lines["fig6-cifar10"].startswith("Fig. 6 of the paper, CIFAR-10")
