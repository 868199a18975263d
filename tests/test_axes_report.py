"""report per value of each extra axis (issue 24, items 3-5): `axes` on every group and
recommendation (JSON schema 3), the stable region's edges with their Wilson intervals, the verdict
on "the edge grows as h shrinks", the heatmaps and the side-by-side panels, in files and the page.

Stores are written row by row, so their truth is known: each cell is (diverged, completed) runs."""

import io
import json
import re

import pandas as pd
import pytest
from scipy.stats import binomtest

from robustres import region
from robustres import report as R
from robustres.spec import make_run_spec
from robustres.store import Store, config_columns


def put(store, depth, h, seed, status="completed", acc=0.9, **fields):
    spec = make_run_spec(dataset="two-moons", depth=depth, h=h, seed=seed, epochs=5, **fields)
    store.put_run({"run_id": spec.run_id, **config_columns(spec), "status": status,
                   "final_test_acc": acc if status == "completed" else None,
                   "best_test_acc": acc if status == "completed" else None, "epochs_done": 5,
                   "diverged_epoch": 1 if status == "diverged" else None})


def fill(store, cells: dict, depth=10, seeds=4, **fields):
    """cells: {(h, lr): diverged runs of `seeds`}; the rest complete at 0.9 (0.95 for h < 1)."""
    for (h, lr), diverged in cells.items():
        for seed in range(seeds):
            status = "diverged" if seed < diverged else "completed"
            put(store, depth, h, seed, status, acc=0.95 if h < 1 else 0.9, lr=lr, **fields)


def wilson(k, n, level=0.95):
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return [pytest.approx(ci.low), pytest.approx(ci.high)]


def analyse(store, level=0.95):
    runs = R.select(store.runs(columns=R.RUN_COLUMNS), R.Filters())
    groups, recs, _ = R.recommend(R.aggregate(runs, level=level), runs, 3)
    return groups, recs, region.edges(groups), region.verdicts(groups)


# The table, with 4 seeds per cell: 0/4 and 4/4 are told apart at 95 % (0-49 % and 51-100 %).
GROWS = {(1.0, 0.02): 0, (1.0, 0.2): 4, (1.0, 2.0): 4, (1.0, 10.0): 4,
         (0.2, 0.02): 0, (0.2, 0.2): 0, (0.2, 2.0): 2, (0.2, 10.0): 4,
         (0.05, 0.02): 0, (0.05, 0.2): 0, (0.05, 2.0): 0, (0.05, 10.0): 0}


def test_edges_are_the_largest_value_below_the_first_divergence_with_wilson_rates(tmp_path):
    store = Store(tmp_path / "store")
    fill(store, GROWS)
    fill(store, {(1.0, 0.02): 1, (1.0, 0.2): 4}, depth=20)  # even the smallest lr diverged once
    _, _, edges, _ = analyse(store)
    by = {(e["depth"], e["h"]): e for e in edges}
    assert {e["axis"] for e in edges} == {"lr"} and all(e["axes"] == {} for e in edges)
    assert (by[10, 1.0]["edge"], by[10, 1.0]["first_unstable"]) == (0.02, 0.2)
    assert by[10, 1.0]["rate_at_edge"] == wilson(0, 4) and by[10, 1.0]["rate_at_first_unstable"] == wilson(4, 4)
    assert (by[10, 0.2]["edge"], by[10, 0.2]["first_unstable"]) == (0.2, 2.0)
    assert by[10, 0.2]["rate_at_first_unstable"] == wilson(2, 4)
    assert by[10, 0.2]["runs_at_first_unstable"] == {"diverged": 2, "finished": 4}
    assert (by[10, 0.05]["edge"], by[10, 0.05]["first_unstable"]) == (10.0, None)  # the grid's end
    assert by[10, 0.05]["rate_at_first_unstable"] is None
    assert (by[20, 1.0]["edge"], by[20, 1.0]["first_unstable"]) == (None, 0.02)
    assert by[20, 1.0]["rate_at_edge"] is None and by[20, 1.0]["rate_at_first_unstable"] == wilson(1, 4)


def test_the_edge_grows_as_h_shrinks_yes_when_the_intervals_tell_neighbours_apart(tmp_path):
    store = Store(tmp_path / "store")
    fill(store, GROWS)
    _, _, _, verdicts = analyse(store)
    (v,) = verdicts
    assert (v["depth"], v["axis"], v["axes"], v["verdict"]) == (10, "lr", {}, "yes")
    pairs = {(p["larger_h"], p["smaller_h"]): p for p in v["pairs"]}
    assert pairs[1.0, 0.2]["result"] == "grows" and pairs[1.0, 0.2]["at"] == 0.2
    assert pairs[1.0, 0.2]["larger"]["rate"] == wilson(4, 4) and pairs[1.0, 0.2]["smaller"]["rate"] == wilson(0, 4)
    assert pairs[0.2, 0.05]["result"] == "not separated" and pairs[0.2, 0.05]["at"] == 2.0  # 2/4 vs 0/4 overlap
    text = v["text"]
    assert text.startswith("two-moons, depth 10: does the lr edge grow as h shrinks? yes.")
    assert "h=1: lr<=0.02, h=0.2: lr<=0.2, h=0.05: lr<=10 (none diverged)" in text
    assert "h=1 -> 0.2 told apart at lr=0.2: diverged 4/4 (51-100 %) vs 0/4 (0-49 %)" in text
    assert "h=0.2 -> 0.05 not told apart at lr=2: diverged 2/4 (15-85 %) vs 0/4 (0-49 %)" in text


def test_three_seeds_cannot_resolve_it_at_95_but_can_at_90(tmp_path):
    store = Store(tmp_path / "store")
    fill(store, {(1.0, 0.02): 0, (1.0, 0.2): 3, (0.05, 0.02): 0, (0.05, 0.2): 0}, seeds=3)
    (v,) = analyse(store)[3]
    assert v["verdict"] == "not resolved by this grid"
    assert v["pairs"][0]["smaller"]["rate"] == wilson(0, 3) and v["pairs"][0]["larger"]["rate"] == wilson(3, 3)
    assert "even 0/3 and 3/3 overlap at 95 %" in v["text"]
    (v,) = analyse(store, level=0.9)[3]  # the report's level is the intervals' level
    assert v["verdict"] == "yes" and v["pairs"][0]["larger"]["rate"] == wilson(3, 3, 0.9)


def test_no_when_the_smaller_h_diverges_first_and_not_resolved_at_the_same_onset(tmp_path):
    store = Store(tmp_path / "store")
    fill(store, {(1.0, 0.02): 0, (1.0, 0.2): 0, (0.1, 0.02): 0, (0.1, 0.2): 4})
    (v,) = analyse(store)[3]
    assert v["verdict"] == "no" and v["pairs"][0]["result"] == "shrinks"
    assert "told apart, against the claim at lr=0.2" in v["text"]
    same = Store(tmp_path / "same")
    fill(same, {(1.0, 0.02): 0, (1.0, 0.2): 4, (0.1, 0.02): 0, (0.1, 0.2): 4})
    (v,) = analyse(same)[3]
    assert v["verdict"] == "not resolved by this grid"
    assert "both start to diverge at lr=0.2" in v["text"]


def test_edges_and_verdicts_are_per_value_of_the_other_axes(tmp_path):
    store = Store(tmp_path / "store")
    fill(store, GROWS, optimizer="sgd")
    fill(store, {(1.0, 0.02): 0, (1.0, 0.2): 0, (0.05, 0.02): 0, (0.05, 0.2): 0}, optimizer="adam")
    groups, recs, edges, verdicts = analyse(store)
    assert {(v["axes"]["optimizer"], v["verdict"]) for v in verdicts} == {("sgd", "yes"),
                                                                          ("adam", "not resolved by this grid")}
    assert {e["axes"]["optimizer"] for e in edges} == {"sgd", "adam"}
    assert all(set(g) == {"lr", "optimizer"} for g in groups["axes"]) and all(set(r["axes"]) == {"lr", "optimizer"}
                                                                            for r in recs)
    assert "two-moons, depth 10, optimizer=adam: does the lr edge grow" in verdicts[0]["text"] + verdicts[1]["text"]


# ------------------------------------------------------------------ the command


@pytest.fixture
def lr_store(tmp_path):
    store = Store(tmp_path / "store")
    fill(store, GROWS)
    return store


def test_json_is_schema_3_with_axes_on_every_group_and_recommendation(cli, lr_store):
    code, out, err = cli("report", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] == 3 and set(doc) >= {"groups", "recommendations", "edges", "edge_verdicts"}
    # numeric order of the axis (as strings "lr=10.0" would come before "lr=2.0")
    assert [g["axes"] for g in doc["groups"][::3]] == [{"lr": 0.02}, {"lr": 0.2}, {"lr": 2.0}, {"lr": 10.0}]
    assert all(g["protocol"] == f"lr={g['axes']['lr']}" for g in doc["groups"])  # the v2 field stays
    assert [r["axes"] for r in doc["recommendations"]] == [{"lr": 0.02}, {"lr": 0.2}, {"lr": 2.0}, {"lr": 10.0}]
    assert len(doc["edges"]) == 3 and doc["edge_verdicts"][0]["verdict"] == "yes"
    assert doc["edges"][0]["rate_at_edge"] == wilson(0, 4)


def test_a_store_without_extra_axes_has_empty_axes_and_no_edges(cli, tmp_path):
    store = Store(tmp_path / "store")
    fill(store, {(1.0, 0.1): 0, (0.1, 0.1): 0}, seeds=3)
    doc = json.loads(cli("report", "--format", "json")[1])
    assert all(g["axes"] == {} for g in doc["groups"]) and all(r["axes"] == {} for r in doc["recommendations"])
    assert doc["edges"] == [] and doc["edge_verdicts"] == []
    code, out, _ = cli("report")
    assert "stable region" not in out and re.search(r"robustres report: two-moons *\n", out)


def test_tables_csv_markdown_and_gates_name_the_axis_values(cli, lr_store):
    code, out, _ = cli("report")
    assert code == 0 and re.findall(r"robustres report: two-moons, lr=(\S+)", out) == ["0.02", "0.2", "2", "10"]
    assert "stable region: two-moons, depth 10: does the lr edge grow as h shrinks? yes." in out.replace("\n", " ")
    frame = pd.read_csv(io.StringIO(cli("report", "--format", "csv")[1]))
    assert "axes" not in frame and sorted(frame.axis_lr.unique()) == [0.02, 0.2, 2.0, 10.0]
    md = cli("report", "--format", "markdown")[1]
    assert "- **two-moons, depth 10, lr=2**:" in md and "- stable region: two-moons, depth 10:" in md
    code, _, err = cli("report", "--min-seeds", "5")
    assert code == 1 and "(depth, lr, h) groups have fewer than 5 completed runs" in err


def test_figures_hold_a_heatmap_per_depth_and_panels_per_optimizer(cli, tmp_path):
    store = Store(tmp_path / "store")
    for optimizer in ("sgd", "adam"):
        fill(store, GROWS, optimizer=optimizer)
        fill(store, {(1.0, 0.02): 0, (1.0, 0.2): 1, (0.05, 0.02): 0, (0.05, 0.2): 0}, depth=20, optimizer=optimizer)
    code, out, err = cli("report", "--plot", tmp_path / "figs", "--html", tmp_path / "page.html")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    for stem in ("heatmap-h-vs-lr-two-moons-optimizer=adam-depth10", "heatmap-h-vs-lr-two-moons-optimizer=sgd-depth20",
                 "fig6-acc-vs-h-by-optimizer-two-moons-lr=0.2", "fig6-acc-vs-h-by-optimizer-two-moons-lr=10"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem
    svg = (tmp_path / "figs" / "heatmap-h-vs-lr-two-moons-optimizer=sgd-depth10.svg").read_text(encoding="utf-8")
    # cells: the median accuracy where runs completed, x k/n where k of n finished runs diverged
    assert "95.0" in svg and "90.0" in svg and "\u00d7 4/4" in svg and "\u00d7 2/4" in svg and "\u00d7 0/4" not in svg
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert page.count('id="heatmap-h-vs-lr-two-moons-') == 4  # one per depth and optimizer
    assert "Stable region" in page and "does the lr edge grow as h shrinks? yes." in page
    assert page.index("Stable region") < page.index('id="heatmap-h-vs-lr-two-moons-optimizer=adam-depth10"')


@pytest.mark.slow
def test_real_sweeps_one_per_lr_give_a_heatmap_and_an_edge(cli, tmp_path):
    # What issue 24 did by hand: one sweep per learning rate; depth 10, h = 1 diverges at lr 20.
    for lr in ("0.05", "20"):
        code, _, err = cli("sweep", "--dataset", "two-moons", "--depths", "10", "--h", "0.05,1", "--seeds", "3",
                           "--lr", lr, "--epochs", "2")
        assert code == 0, err
    code, out, err = cli("report", "--format", "json", "--plot", tmp_path / "figs")
    doc = json.loads(out)
    edge = next(e for e in doc["edges"] if e["h"] == 1.0)
    assert (edge["edge"], edge["first_unstable"]) == (0.05, 20.0)
    assert (tmp_path / "figs" / "heatmap-h-vs-lr-two-moons-depth10.svg").exists()


def test_the_heatmap_marks_each_edge_and_the_panels_are_one_per_optimizer(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustres import figures

    store = Store(tmp_path / "store")
    for optimizer in ("sgd", "adam"):
        fill(store, GROWS, optimizer=optimizer)
    groups = analyse(store)[0]
    drawn = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (drawn.append(fig), real_close(fig)))
    figures.plot(groups, None, None, tmp_path / "figs")
    heat = next(f for f in drawn if f.axes[0].get_gid() == "heatmap-h-vs-lr-two-moons-optimizer=sgd-depth10")
    ax = heat.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.05", "0.2", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.02", "0.2", "2", "10"]
    # the edge lines: before lr=0.2 (column 1) for h=1 (row 2), before lr=2 (column 2) for h=0.2; none for 0.05
    edges = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in ax.get_lines())
    assert edges == [(0.5, 1.5), (1.5, 0.5)]
    panels = next(f for f in drawn if "per optimizer (lr=0.2)" in f.get_suptitle())
    assert [a.get_title() for a in panels.axes] == ["optimizer=adam", "optimizer=sgd"]
    assert all(a.get_xscale() == "log" for a in panels.axes)


@pytest.mark.slow
def test_the_lr_robustness_preset_shows_the_stable_region_per_depth_end_to_end(cli, tmp_path):
    """Issue 24's done-means: the preset, then its report with a page: a heatmap per depth and, per
    depth, what the edges say about the claim (README shows this output)."""
    code, _, err = cli("sweep", "--config", "lr-robustness-moons")
    assert code == 0, err
    code, out, err = cli("report", "--config", "lr-robustness-moons", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    edges = {(e["depth"], e["h"]): e for e in doc["edges"]}
    for depth in (10, 30):
        # h = 1 already diverges at lr 0.2 and h = 0.05 never does: the edge grows as h shrinks
        assert (edges[(depth, 1.0)]["edge"], edges[(depth, 1.0)]["first_unstable"]) == (0.02, 0.2)
        assert (edges[(depth, 0.05)]["edge"], edges[(depth, 0.05)]["first_unstable"]) == (2.0, None)
        assert edges[(depth, 0.2)]["edge"] in (0.2, 1.0)
    verdicts = {v["depth"]: v["verdict"] for v in doc["edge_verdicts"]}
    assert verdicts[30] == "yes" and verdicts[10] in ("yes", "not resolved by this grid")
    code, out, err = cli("report", "--config", "lr-robustness-moons", "--html", tmp_path / "page.html")
    assert code == 0, err
    page = (tmp_path / "page.html").read_text()
    assert "Stable region" in page and all(f"heatmap-h-vs-lr-two-moons-depth{d}" in page for d in (10, 30))
    assert "stable region: two-moons, depth 30: does the lr edge grow as h shrinks? yes." in " ".join(out.split())
