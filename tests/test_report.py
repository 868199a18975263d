import json

import pandas as pd
import pytest

from robustres import figures
from robustres import report as R
from robustres.spec import make_run_spec
from robustres.store import Store, config_columns

SWEEPS = __import__("pathlib").Path(__file__).resolve().parents[1] / "sweeps"


def put(store, depth, h, seed, status="completed", acc=0.9, dataset="two-moons", noise=0.0, epochs=30):
    spec = make_run_spec(dataset=dataset, depth=depth, h=h, seed=seed, train_noise=noise, epochs=epochs)
    store.put_run({"run_id": spec.run_id, **config_columns(spec), "status": status,
                   "final_test_acc": acc if status == "completed" else None,
                   "best_test_acc": None if status == "failed" else acc + 0.01, "epochs_done": epochs,
                   "diverged_epoch": 1 if status == "diverged" else None})
    return spec


def crafted(tmp_path, table):
    """table: {(depth, h): [acc or 'diverged' or 'failed', ...]} one entry per seed."""
    store = Store(tmp_path / "store")
    for (depth, h), results in table.items():
        for seed, r in enumerate(results):
            if isinstance(r, str):
                put(store, depth, h, seed, status=r)
            else:
                put(store, depth, h, seed, acc=r)
    runs = R.select(store.runs(columns=R.RUN_COLUMNS), R.Filters())
    groups, recs, warnings = R.recommend(R.aggregate(runs), runs, min_seeds=3)
    labels = {(r.depth, r.h): r.label for r in groups.itertuples()}
    return {r["depth"]: r for r in recs}, labels, warnings, groups


def test_best_median_wins_and_every_h_gets_a_label(tmp_path):
    recs, labels, warnings, groups = crafted(tmp_path, {
        (10, 0.01): [0.80, 0.81, 0.80],            # far below: over-smoothed
        (10, 0.1): [0.95, 0.96, 0.955],            # best
        (10, 0.5): [0.90, 0.91, 0.905],            # larger, and its interval below the best's: worse
        (10, 5.0): [0.5, "diverged", "diverged"],   # unstable
        (10, 1.0): [0.95, 0.96],                   # too few seeds
    })
    assert recs[10]["h"] == 0.1 and recs[10]["indistinguishable"] == [0.1]
    assert labels == {(10, 0.01): "over-smoothed", (10, 0.1): "best", (10, 0.5): "worse",
                      (10, 5.0): "unstable", (10, 1.0): "too few seeds"}
    reason = recs[10]["reason"]
    assert reason.startswith("h=0.1: median final accuracy 95.5 % (95 % CI 93.9-96.7)")
    assert "h=5 diverged 2/3 (rate" in reason
    assert "h<=0.01 over-smoothed" in reason and "rule: the smallest h of that set" in reason
    assert recs[10]["stability_edge"] == 1.0 and recs[10]["metric"] == "final"
    g = groups.set_index(["depth", "h"])
    assert g.loc[(10, 0.1)].final_median == pytest.approx(0.955) and g.loc[(10, 5.0)].diverged == 2
    assert g.loc[(10, 0.1)].best_epoch_median == pytest.approx(0.965)


def test_the_point_is_the_smallest_h_of_the_set_whose_interval_holds_the_best_median(tmp_path):
    recs, labels, _, groups = crafted(tmp_path, {
        (20, 0.05): [0.85, 0.85, 0.85],   # far below: over-smoothed
        (20, 0.08): [0.915, 0.915, 0.915],  # reaches the best's interval, not its median: in the set only
        (20, 0.1): [0.93, 0.935, 0.93],   # holds the best median in its interval: the point
        (20, 0.2): [0.94, 0.945, 0.94],   # the best median (ties with 0.5: the smaller h)
        (20, 0.5): [0.94, 0.94, 0.94],
    })
    rec = recs[20]
    assert rec["h"] == 0.1 and rec["indistinguishable"] == [0.08, 0.1, 0.2, 0.5]
    assert labels == {(20, 0.05): "over-smoothed", (20, 0.08): "indistinguishable", (20, 0.1): "best",
                      (20, 0.2): "indistinguishable", (20, 0.5): "indistinguishable"}
    assert "(the best median is h=0.2, 94.0 %)" in rec["reason"]
    g = groups.set_index("h")
    assert rec["ci"] == [pytest.approx(g.loc[0.1, "ci_low"]), pytest.approx(g.loc[0.1, "ci_high"])]
    assert g.loc[0.2, "p_vs_best"] == 1.0 and g.loc[0.05, "p_vs_best"] == 0.0  # seed by seed against h=0.1


def test_a_tie_goes_to_the_smaller_h(tmp_path):
    recs, labels, _, _ = crafted(tmp_path, {(8, 0.2): [0.9, 0.9, 0.9], (8, 0.1): [0.9, 0.9, 0.9]})
    assert recs[8]["h"] == 0.1 and labels[(8, 0.2)] == "indistinguishable"


def test_failures_exclude_and_too_few_seeds_leave_no_recommendation(tmp_path):
    recs, labels, _, _ = crafted(tmp_path, {(8, 0.1): [0.9, "failed", 0.9], (8, 0.5): [0.9, 0.9]})
    assert recs[8]["h"] is None and "no h has 3 completed runs" in recs[8]["reason"]
    assert labels == {(8, 0.1): "unstable", (8, 0.5): "too few seeds"}


def test_the_guideline_is_checked_on_the_sets_and_the_stability_edge(tmp_path):
    _, _, warnings, _ = crafted(tmp_path, {
        (4, 0.1): [0.95] * 3, (4, 1.0): [0.90] * 3,
        (30, 0.1): [0.90] * 3, (30, 1.0): [0.96] * 3,
    })
    assert warnings == ["two-moons: every h indistinguishable from the best at depth 30 is larger than every such "
                        "h at depth 4, against the guideline 'deeper, smaller'"]
    _, _, warnings, _ = crafted(tmp_path / "edge", {
        (4, 0.1): [0.95] * 3, (4, 1.0): ["diverged"] * 3,
        (30, 0.1): [0.95] * 3, (30, 1.0): [0.95] * 3,
    })
    assert warnings == ["two-moons: the stability edge grows with depth (depth 4: h<=0.1, depth 30: h<=1), against "
                        "the guideline 'deeper, smaller'"]


def test_moving_point_picks_inside_overlapping_sets_are_not_warned(tmp_path):
    recs, _, warnings, _ = crafted(tmp_path, {
        (4, 0.1): [0.945] * 3, (4, 0.5): [0.95] * 3,
        (30, 0.1): [0.95] * 3, (30, 0.5): [0.945] * 3,
    })
    assert warnings == [] and recs[4]["indistinguishable"] == recs[30]["indistinguishable"] == [0.1, 0.5]


def test_paired_comparison_against_plain_resnet(tmp_path):
    recs, _, _, _ = crafted(tmp_path, {
        (30, 0.1): [0.95, 0.96, 0.94, 0.95],
        (30, 1.0): [0.93, 0.97, "diverged", 0.90],
    })
    vs = recs[30]["vs_h1"]
    assert vs["seeds"] == 4 and vs["p_improvement"] == 0.75  # 3 wins of 4; the divergence loses
    assert recs[30]["p_improvement_vs_h1"] == 0.75
    assert vs["median_diff"] == pytest.approx(0.02)  # median of +0.02, -0.01, +0.05
    assert 0 < vs["permutation_p"] <= 1


# ------------------------------------------------------------------ the command


@pytest.fixture
def quick_store(cli, tmp_path):
    code, _, err = cli("sweep", "--config", SWEEPS / "ci-smoke.yaml", "--seeds", "3")
    assert code == 0, err
    return tmp_path / "store"


def test_report_table_json_csv_markdown(cli, quick_store):
    code, out, _ = cli("report")
    assert code == 0 and "robustres report: two-moons" in out and "<- recommended" in out
    assert "metric: final" in out and "depth 3:" in out and "depth 5:" in out
    code, out, _ = cli("report", "--format", "json")
    doc = json.loads(out)
    assert set(doc) == {"schema_version", "groups", "recommendations", "edges", "edge_verdicts", "warnings",
                        "figures", "rules", "law", "predictions"}
    assert doc["schema_version"] == 3 and doc["edges"] == [] and doc["edge_verdicts"] == []
    assert len(doc["groups"]) == 4 and len(doc["recommendations"]) == 2
    assert set(doc["groups"][0]) >= {"dataset", "depth", "train_noise", "h", "runs", "completed", "diverged",
                                     "failed", "final_median", "final_std", "best_epoch_median", "label", "metric",
                                     "median", "iqm", "ci_low", "ci_high", "diverged_rate", "diverged_low",
                                     "diverged_high", "p_vs_best", "p_vs_h1", "axes"}
    assert {"dataset", "depth", "h", "reason", "median", "std", "vs_h1", "indistinguishable", "ci",
            "p_improvement_vs_h1", "stability_edge", "metric", "axes"} <= set(doc["recommendations"][0])
    code, out, _ = cli("report", "--format", "csv")
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert len(frame) == 4 and "label" in frame.columns
    code, out, _ = cli("report", "--format", "markdown", "--depths", "3")
    assert out.startswith("| dataset | protocol | depth |") and out.count("| two-moons |  | 3 |") == 2


def test_report_filters_and_nothing_matched(cli, quick_store):
    code, out, _ = cli("report", "--format", "json", "--h", "0.1")
    assert code == 0 and {g["h"] for g in json.loads(out)["groups"]} == {0.1}
    code, out, err = cli("report", "--dataset", "cifar10")
    assert code == 1 and "no runs" in err and "match" in err


def test_gates(cli, quick_store):
    assert cli("report", "--min-seeds", "3")[0] == 0
    code, _, err = cli("report", "--min-seeds", "4")
    assert code == 1 and "fewer than 4 completed runs" in err
    assert cli("report", "--max-failures", "0")[0] == 0
    code, _, err = cli("report", "--config", SWEEPS / "ci-smoke.yaml", "--require-complete")
    assert code == 0, err  # ci-smoke has 2 seeds: all 8 of its runs are among the 12 trained
    code, _, err = cli("report", "--config", SWEEPS / "quick-moons.yaml", "--require-complete")
    assert code == 1 and "not finished" in err


def test_max_failures_gate(cli, tmp_path):
    store = Store(tmp_path / "store")
    for seed in range(3):
        put(store, 3, 0.1, seed)
    put(store, 3, 1.0, 0, status="failed")
    code, _, err = cli("report", "--max-failures", "0")
    assert code == 1 and "1 runs failed" in err
    assert cli("report", "--max-failures", "1")[0] == 0


def test_figures_are_written_with_the_right_axes(cli, quick_store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    store = Store(quick_store)
    runs = R.select(store.runs(columns=R.RUN_COLUMNS), R.Filters())
    groups, _, _ = R.recommend(R.aggregate(runs), runs, 3)
    captured = []
    import matplotlib.pyplot as plt

    real_close = plt.close
    plt.close = lambda fig=None: (captured.append(fig), real_close(fig))
    try:
        files = figures.plot(groups, store.epochs(), runs, tmp_path / "figs")
    finally:
        plt.close = real_close
    names = sorted(p.name for p in files)
    assert names == sorted(f"{stem}.{ext}" for stem in ("fig6-acc-vs-h-two-moons", "fig3-acc-vs-depth-two-moons",
                                                        "curves-two-moons") for ext in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in files)
    fig6 = captured[0].axes[0]
    assert fig6.get_xscale() == "log" and "h" in fig6.get_xlabel()
    assert fig6.get_ylabel() == "final test accuracy, % (median over seeds, 95 % CI)"
    bands = [c for c in fig6.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(bands) == 2  # one interval band per depth, not min-max bars
    low, high = bands[0].get_paths()[0].vertices[:, 1].min(), bands[0].get_paths()[0].vertices[:, 1].max()
    depth3 = groups[groups.depth == 3]
    assert low == pytest.approx(100 * depth3.ci_low.min()) and high == pytest.approx(100 * depth3.ci_high.max())
    assert sorted(t.get_text() for t in fig6.get_legend().get_texts()) == ["depth 3", "depth 5"]
    code, out, _ = cli("report", "--plot", tmp_path / "cli-figs")
    assert code == 0 and out.count("wrote ") == 6 + 4  # and Fig. 4 for each of the two depths
    assert (tmp_path / "cli-figs" / "fig4-moons-features-depth5.png").exists()


def test_runs_of_different_protocols_are_never_pooled(tmp_path):
    store = Store(tmp_path / "store")
    for seed in range(3):
        put(store, 10, 0.1, seed, acc=0.95)
        put(store, 10, 0.5, seed, acc=0.90)
        put(store, 10, 0.1, seed, acc=0.70, epochs=5)  # a short protocol: worse, and separate
        put(store, 10, 0.5, seed, acc=0.80, epochs=5)
    runs = R.select(store.runs(columns=R.RUN_COLUMNS), R.Filters())
    groups, recs, _ = R.recommend(R.aggregate(runs), runs, 3)
    assert len(groups) == 4 and all(groups.runs == 3)
    by_protocol = {r["protocol"]: r["h"] for r in recs}
    assert by_protocol == {"epochs=30": 0.1, "epochs=5": 0.5}


def test_a_diverging_top_range_is_said_once(tmp_path):
    recs, _, _, _ = crafted(tmp_path, {
        (20, 0.1): [0.93, 0.93, 0.93], (20, 5.0): ["diverged", 0.5, "diverged"],
        (20, 10.0): ["diverged"] * 3,
    })
    assert "h>=5 diverged 5/6 (rate" in recs[20]["reason"]


def test_groups_carry_intervals_of_their_metric_and_divergence_rates(tmp_path):
    _, _, _, groups = crafted(tmp_path, {
        (10, 0.1): [0.95, 0.96, 0.955],
        (10, 1.0): [0.90, "diverged", "diverged"],
        (10, 0.5): [0.93, 0.93, 0.93],  # seeds agree: only the test set's noise (1,000 points) is left
    })
    g = groups.set_index("h")
    assert (g.metric == "final").all() and (g.level == 0.95).all() and (g.n_test == 1000).all()
    assert g.loc[0.1, "median"] == pytest.approx(0.955) and g.loc[0.1, "iqm"] == pytest.approx(0.955)
    # wider than the seeds' range alone: the test set's noise (about +-1.3 points here) is in it
    assert g.loc[0.1, "ci_low"] < 0.95 - 0.005 and g.loc[0.1, "ci_high"] > 0.96 + 0.005
    assert 0.01 < 0.93 - g.loc[0.5, "ci_low"] < 0.02 and "test-set noise alone" in g.loc[0.5, "interval_note"]
    assert g.loc[1.0, "diverged_rate"] == pytest.approx(2 / 3)
    assert 0.1 < g.loc[1.0, "diverged_low"] < 0.3 and 0.9 < g.loc[1.0, "diverged_high"] <= 1
    assert g.loc[0.1, "diverged_rate"] == 0 and g.loc[0.1, "diverged_high"] > 0.4  # 0/3 is no proof either
    assert (g.failed_rate == 0).all() and (g.failed_high > 0.4).all()
    runs = R.select(Store(tmp_path / "store").runs(columns=R.RUN_COLUMNS), R.Filters())
    best = R.aggregate(runs, metric="best").set_index("h")  # put() stores best = final + 0.01
    assert (best.metric == "best").all() and best.loc[0.1, "median"] == pytest.approx(0.965)


def test_the_recommendation_says_whether_more_seeds_would_separate_the_set(tmp_path):
    recs, labels, _, _ = crafted(tmp_path, {
        (10, 0.5): [0.96, 0.99, 0.93],  # the best median, spread widely over seeds
        (10, 0.2): [0.92, 0.89, 0.95],  # 4 points below: more seeds would tell them apart
        (10, 1.0): [0.955, 0.965, 0.95],  # 0.5 points below: within the test set's noise for good
    })
    needed = {e["h"]: e["seeds"] for e in recs[10]["seeds_to_separate"]}
    assert set(needed) == {0.2, 1.0} and needed[1.0] is None and needed[0.2] > 3
    assert f"about {needed[0.2]} seeds per h would separate h=0.2 from the best" in recs[10]["reason"]
    assert "no number of seeds separates h in {1} from the best" in recs[10]["reason"]


def test_on_a_store_of_identical_h_values_worse_is_rare_and_a_better_h_is_found(tmp_path):
    import numpy as np

    rng = np.random.default_rng(7)
    table = {}
    for depth in range(1, 41):  # 40 blocks, two h each drawn from one distribution, 5 seeds on 1,000 points
        for h in (0.1, 0.5):
            table[(depth, h)] = list(rng.binomial(1000, np.clip(rng.normal(0.9, 0.01, 5), 0, 1)) / 1000)
    table[(41, 0.1)] = list(rng.binomial(1000, 0.96, 5) / 1000)  # and one block with a clearly better h
    table[(41, 0.5)] = list(rng.binomial(1000, 0.90, 5) / 1000)
    recs, labels, _, _ = crafted(tmp_path, table)
    worse = sum(labels[(d, h)] in ("worse", "over-smoothed") for d in range(1, 41) for h in (0.1, 0.5))
    assert worse / 40 <= 0.05  # told apart in at most 5 % of the blocks where nothing differs
    assert recs[41]["indistinguishable"] == [0.1] and labels[(41, 0.5)] == "worse"
