"""h as a law of depth (issue 25, law.py): on stores whose truth is known, the law's alpha is
recovered with an interval that covers it at about the stated rate, a rule whose best c is the
same at every depth transfers and one whose best c moves does not, predictions say when they
extrapolate; then the whole way through the CLI on a tiny two-moons store."""

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustres import law
from robustres.report import RUN_COLUMNS, Filters, aggregate, recommend, select
from robustres.spec import make_run_spec
from robustres.store import RUNS_SCHEMA, config_columns

BLOCKS = (4, 8, 16, 32, 64)
GRID = 10 ** np.linspace(-2.5, 0.5, 31)  # a fine grid of h: its spacing (a factor 1.26) is below the noise


def _synthetic_depth(blocks: int, rng, seeds: int = 9) -> np.ndarray:
    """Scores (h x seeds) at one depth whose true best h is 0.8 * L^-0.5: each seed's own optimum
    scatters around it (log-normal), its curve a parabola in log h, plus a little noise per run."""
    true = math.log10(0.8 * blocks ** -0.5)
    own = true + rng.normal(0, 0.15, size=seeds)
    curve = 0.95 - 0.05 * (np.log10(GRID)[:, None] - own[None, :]) ** 2
    return curve + rng.normal(0, 0.001, size=curve.shape)


def test_a_synthetic_law_with_alpha_one_half_is_recovered_at_about_the_stated_rate():
    rng = np.random.default_rng(1)
    covered, widths, alphas, log_a = 0, [], [], []
    replicates = 120
    for _ in range(replicates):
        matrices = [_synthetic_depth(b, rng) for b in BLOCKS]
        fit = law.fit_law(BLOCKS, matrices, [np.log(GRID)] * len(BLOCKS), resamples=499, level=0.95)
        low, high = fit["alpha_ci"]
        covered += low <= 0.5 <= high
        widths.append(high - low)
        alphas.append(fit["alpha"])
        log_a.append(math.log(fit["a"]))
    assert 0.88 <= covered / replicates <= 1.0, covered  # 95 % stated; 120 replicates: +-4 points of noise
    assert abs(np.mean(alphas) - 0.5) < 0.03  # unbiased
    assert np.mean(widths) < 0.6  # and informative: it tells 0.5 from 0 (no law) and from 1 (1 / L)
    assert math.exp(np.mean(log_a)) == pytest.approx(0.8, rel=0.1)


def test_the_bootstrap_keeps_each_depth_inside_its_indistinguishable_set():
    rng = np.random.default_rng(2)
    full = [_synthetic_depth(b, rng) for b in BLOCKS]
    # A set of one h per depth, on the law h = 2 / L: every resample must give alpha = 1 exactly.
    hs = [2.0 / b for b in BLOCKS]
    fit = law.fit_law(BLOCKS, [m[:1] for m in full], [np.log([h]) for h in hs], resamples=199)
    assert fit["alpha"] == pytest.approx(1.0) and fit["alpha_ci"] == pytest.approx([1.0, 1.0])
    assert fit["a"] == pytest.approx(2.0)


def test_the_stability_edge_law():
    # Depth L diverges from h = 4 / L on (every seed), so its edge is the grid value just below.
    grid = 2.0 ** np.arange(-8, 3)
    matrices = [np.repeat((grid >= 4.0 / b)[:, None].astype(float), 3, axis=1) for b in (4, 16, 64)]
    fit = law.fit_law((4, 16, 64), matrices, [np.log(grid)] * 3, target=law.edge_target,
                      resamples=199)
    assert fit["alpha"] == pytest.approx(1.0) and fit["h"] == pytest.approx([0.5, 0.125, 0.03125])


# ---------------------------------------------------------------------------------------------
# Rules and transfer over report's own tables
# ---------------------------------------------------------------------------------------------


def _runs(depths=(4, 16, 64), seeds=3) -> pd.DataFrame:
    """Runs of two-moons whose truth is known: under fixed the best h is 4 / L (it moves with
    depth), under sqrt the best c is 1 at every depth; accuracy falls 20 points per factor of 4 off
    the best, so every set is the best alone (10,000 test points, seeds within 0.2 points)."""
    rows = []
    for rule, best in (("fixed", lambda L: 4.0 / L), ("sqrt", lambda L: 1.0)):
        for depth in depths:
            for c in (4.0 ** k for k in range(-3, 2)):
                for seed in range(seeds):
                    spec = make_run_spec(dataset="two-moons", depth=depth, h=c, seed=seed, h_rule=rule, n_test=10000)
                    acc = 0.95 - 0.2 * abs(math.log(c / best(depth), 4)) + 0.001 * seed
                    rows.append({**config_columns(spec), "run_id": spec.run_id, "status": "completed",
                                 "final_test_acc": acc, "best_test_acc": acc})
    return select(pd.DataFrame(rows).reindex(columns=RUN_COLUMNS), Filters())


def test_a_rule_whose_best_c_stays_transfers_and_one_whose_best_c_moves_does_not():
    runs = _runs()
    groups, recs, _ = recommend(aggregate(runs), runs, 3)
    rules, laws, predictions = law.analyse(groups, recs, runs, "final_test_acc", 0.95, (32, 256))
    (entry,) = rules
    by_rule = {t["rule"]: t for t in entry["transfer"]}
    assert by_rule["sqrt"]["transfers"] is True and by_rule["sqrt"]["common"] == [1.0]
    assert by_rule["fixed"]["transfers"] is False and by_rule["fixed"]["common"] == []
    assert [d["c"] for d in by_rule["fixed"]["depths"]] == [1.0, 0.25, 0.0625]
    assert entry["best_transfer"] == "sqrt"
    # tuned at depth 4 (c = 1), fixed loses 20 and 40 points at depths 16 and 64; sqrt loses nothing
    assert [r["lost"] for r in by_rule["fixed"]["regret"]] == pytest.approx([0.2, 0.4])
    assert all(r["interval"][0] > 0.15 for r in by_rule["fixed"]["regret"])
    assert [r["lost"] for r in by_rule["sqrt"]["regret"]] == pytest.approx([0.0, 0.0])
    # side by side: both rules reach 95 % at every depth, so no rule wins anywhere
    assert [s["winner"] for s in entry["side_by_side"]] == [None, None, None]
    assert all("not separated" in s["text"] for s in entry["side_by_side"])
    (fit,) = laws
    assert fit["alpha"] == pytest.approx(1.0) and fit["alpha_ci"] == pytest.approx([1.0, 1.0])
    assert fit["a"] == pytest.approx(4.0) and fit["depths"] == [4, 16, 64] and fit["n_depths"] == 3
    by = {(p["depth"], p["source"]): p for p in predictions}
    assert by[(32, "law")]["h"] == pytest.approx(0.125) and by[(32, "law")]["extrapolated"] is False
    assert by[(256, "law")]["h"] == pytest.approx(4 / 256) and by[(256, "law")]["extrapolated"] is True
    assert by[(256, "transfer")]["rule"] == "sqrt" and by[(256, "transfer")]["h"] == pytest.approx(1 / 16)
    assert by[(256, "transfer")]["extrapolated"] is True and by[(32, "transfer")]["extrapolated"] is False


def test_a_rule_that_wins_is_named_with_its_margin():
    runs = _runs()
    runs = runs[~((runs.h_rule == "sqrt") & (runs.h == 1.0))]  # sqrt loses its best c: it tops out 20 points lower
    groups, recs, _ = recommend(aggregate(runs), runs, 3)
    rules, _, _ = law.analyse(groups, recs, runs, "final_test_acc", 0.95)
    sides = rules[0]["side_by_side"]
    assert [s["winner"] for s in sides] == ["fixed"] * 3
    assert "fixed wins" in sides[0]["text"] and "ahead of sqrt by 20.0 points" in sides[0]["text"]
    pair = sides[0]["pairs"][0]
    assert (pair["a"], pair["b"], pair["p_a_beats_b"], pair["separated"]) == ("fixed", "sqrt", 1.0, True)


def test_one_depth_and_one_rule_has_no_law_work():
    runs = _runs(depths=(4,))
    runs = runs[runs.h_rule == "fixed"]
    groups, recs, _ = recommend(aggregate(runs), runs, 3)
    assert law.analyse(groups, recs, runs, "final_test_acc", 0.95) == ([], [], [])


# ---------------------------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------------------------


def _cifar_store(root):
    (root / "runs").mkdir(parents=True)
    for depth in (20, 32):
        for seed in range(3):
            spec = make_run_spec(dataset="cifar10", depth=depth, h=0.1, seed=seed)
            row = {k: None for k in RUNS_SCHEMA.names}
            row.update(run_id=spec.run_id, **config_columns(spec), status="completed", final_test_acc=0.9,
                       best_test_acc=0.9, epochs_done=80, schema_version=1)
            pq.write_table(pa.Table.from_pylist([row], schema=RUNS_SCHEMA), root / "runs" / f"{spec.run_id}.parquet")


@pytest.mark.parametrize("depth,message", [
    ("0", "--predict-depth must be a depth > 0, got 0"),
    ("-3", "--predict-depth must be a depth > 0, got -3"),
    ("deep", "--predict-depth takes whole depths"),
    ("21", "--predict-depth 21: depth 21 is not 6n+2"),
])
def test_bad_predict_depths_are_one_line_and_write_nothing(cli, tmp_path, depth, message):
    _cifar_store(tmp_path / "s")
    code, out, err = cli("report", "--store", tmp_path / "s", "--predict-depth", depth, "--html", tmp_path / "p.html")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out == "" and not (tmp_path / "p.html").exists()


def test_a_tiny_two_moons_store_through_the_cli(cli, tmp_path):
    code, _, err = cli("sweep", "--dataset", "two-moons", "--depths", "2,4,8", "--h", "0.1,1", "--h-rule",
                       "fixed,sqrt", "--seeds", "3", "--epochs", "2", "--n-train", "200", "--n-test", "200",
                       "--store", tmp_path / "s")
    assert code == 0, err
    code, out, err = cli("report", "--store", tmp_path / "s", "--format", "json", "--predict-depth", "16")
    assert code == 0, err
    report = json.loads(out)
    (rules,) = report["rules"]
    assert rules["rules"] == ["fixed", "sqrt"] and [s["depth"] for s in rules["side_by_side"]] == [2, 4, 8]
    assert {t["rule"] for t in rules["transfer"]} == {"fixed", "sqrt"}
    (fit,) = report["law"]
    assert fit["depths"] == [2, 4, 8] and fit["n_depths"] == 3 and fit["alpha"] is not None
    assert all(p["depth"] == 16 and p["extrapolated"] is True for p in report["predictions"] if p["h"] is not None)
    assert any(p["source"] == "law" for p in report["predictions"])
    code, out, err = cli("report", "--store", tmp_path / "s", "--predict-depth", "16", "--html", tmp_path / "p.html")
    assert code == 0, err
    assert "h rules side by side" in out and "predicted h at depth 16" in out and "law of the best h" in out
    page = (tmp_path / "p.html").read_text()
    assert "h as a law of depth" in page and "transfer-acc-vs-c-two-moons" in page and "<svg" in page
