"""From a store to the answer: which h at each depth, how sure, and the paper's figures.

Aggregation is per (dataset, depth, training noise, h) over seeds: counts, and the median and IQM
of the metric (final or best-epoch test accuracy) with intervals that count the seeds and the test
set's binomial noise (stats.py). The recommendation (recommend.py) is the set of h the evidence
cannot tell from the best, and one point in it. Accuracies are fractions in [0, 1] here and
percentages in what is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from . import law, region
from .datasets import official_sizes
from .recommend import BLOCK, LABELS, recommend  # noqa: F401  (report.recommend, report.LABELS)
from .rows import spec_from_row
from .spec import MIN_SEEDS, PROTOCOL_FIELDS
from .stats import LEVEL, rate_interval, seed_estimate

# Everything of a run's config but depth, h, seed and training noise: runs that differ here are not
# comparable and never pooled.
PROTOCOL = list(PROTOCOL_FIELDS)
RUN_COLUMNS = ["run_id", "dataset", "depth", "h", "seed", "train_noise", "status", "final_test_acc",
               "best_test_acc"] + PROTOCOL


@dataclass(frozen=True)
class Filters:
    datasets: tuple[str, ...] = ()
    depths: tuple[int, ...] = ()
    hs: tuple[float, ...] = ()
    train_noises: tuple[float, ...] = ()
    run_ids: frozenset[str] | None = None  # the runs of a sweep config


def varying(runs: pd.DataFrame) -> list[str]:
    """The protocol fields whose values differ among these runs: the report's extra axes."""
    return [c for c in PROTOCOL if c in runs and runs[c].astype(str).nunique(dropna=False) > 1]


def with_protocol(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `protocol`: the config fields in which these runs differ ("" when they all agree)."""
    runs = runs.copy()
    fields = varying(runs)
    if not fields:
        runs["protocol"] = ""
        return runs
    runs["protocol"] = runs[fields].astype(str).apply(
        lambda row: " ".join(f"{c}={v}" for c, v in zip(fields, row)), axis=1)
    return runs


def _plain(value):
    """A store value as JSON and comparisons take it: a Python scalar, None for a missing one."""
    value = value.item() if hasattr(value, "item") else value
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def axes_of(runs: pd.DataFrame) -> tuple[dict[str, dict], dict[str, int]]:
    """Per protocol string: its `axes` (the varying fields' values, typed), and its rank when the
    combinations are sorted by those values (numerically: lr=10 after lr=2, which the strings'
    order would not give). The fields are found among one run per protocol: every combination of
    varying values is a protocol of its own, so they vary there exactly when they vary at all."""
    one = runs.drop_duplicates("protocol")
    fields = varying(one)
    axes = {p: {c: _plain(row[c]) for c in fields} for p, row in zip(one.protocol, one.to_dict(orient="records"))}
    key = lambda p: tuple((v is None, "" if v is None else v) for v in axes[p].values())  # noqa: E731
    return axes, {p: i for i, p in enumerate(sorted(axes, key=key))}


def select(runs: pd.DataFrame, f: Filters) -> pd.DataFrame:
    keep = pd.Series(True, index=runs.index)
    if f.datasets:
        keep &= runs.dataset.isin(f.datasets)
    if f.depths:
        keep &= runs.depth.isin(f.depths)
    if f.hs:
        keep &= runs.h.round(12).isin([round(h, 12) for h in f.hs])
    if f.train_noises:
        keep &= runs.train_noise.round(12).isin([round(n, 12) for n in f.train_noises])
    if f.run_ids is not None:
        keep &= runs.run_id.isin(f.run_ids) | preset_ids(runs).isin(f.run_ids)
    return with_protocol(runs[keep])


def preset_ids(runs: pd.DataFrame) -> pd.Series:
    """Each run's id without its data fingerprint: the id a preset names it by (a preset knows the
    runs' configs, not their data; see grid.preset_slots)."""
    ids = runs.run_id.copy()
    if "data_fingerprint" not in runs or runs.empty:
        return ids
    has = runs.data_fingerprint.notna()
    if has.any():
        ids[has] = [spec_from_row(r).with_(data_fingerprint=None).run_id for r in runs[has].to_dict(orient="records")]
    return ids


# The accuracy a statistic is of: after the last epoch (the honest default), or the best epoch's
# (what the official vis_acc.py reports the median of).
METRICS = {"final": "final_test_acc", "best": "best_test_acc"}


def test_size(row: dict) -> int | None:
    """Test examples each accuracy of this run was measured on (None: not known from the store)."""
    for name in ("limit_test", "n_test"):
        value = row.get(name)
        if value is not None and not pd.isna(value):
            return int(value)
    official = official_sizes(row["dataset"])  # an image folder's size is not in the store: None
    return None if official is None else official[1]


def intervals(runs: pd.DataFrame, keys: list[str], metric: str, level: float) -> pd.DataFrame:
    """Per group: the median and IQM of `metric` over seeds with their intervals (test-set noise
    counted), the divergence rate of its finished runs and the failure rate of its ended runs, each
    with its Wilson interval."""
    rows = []
    for key, group in runs.groupby(keys, sort=True):
        done = group[group.status == "completed"][METRICS[metric]].astype(float)
        n_test = test_size(group.iloc[0].to_dict())
        median, mean = (seed_estimate(done, n_test, s, level) for s in ("median", "iqm"))
        finished = int(group.status.isin(["completed", "diverged"]).sum())
        rate, low, high = rate_interval(int((group.status == "diverged").sum()), finished, level)
        ended = int(group.status.isin(["completed", "diverged", "failed"]).sum())
        failed = rate_interval(int((group.status == "failed").sum()), ended, level)
        rows.append({**dict(zip(keys, key)), "metric": metric, "level": level, "n_test": n_test,
                     "median": median.value, "ci_low": median.low, "ci_high": median.high, "iqm": mean.value,
                     "iqm_low": mean.low, "iqm_high": mean.high, "diverged_rate": rate, "diverged_low": low,
                     "diverged_high": high, "failed_rate": failed[0], "failed_low": failed[1],
                     "failed_high": failed[2], "interval_note": median.why_no_interval})
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame, metric: str = "final", level: float = LEVEL) -> pd.DataFrame:
    """One row per (dataset, depth, train_noise, h): counts, statistics of the final accuracy, and
    the intervals of `metric` (see `intervals`)."""
    keys = BLOCK + ["h"]
    counts = runs.assign(n=1).pivot_table(index=keys, columns="status", values="n", aggfunc="sum", fill_value=0)
    statuses = ["completed", "diverged", "failed", "running", "stopped"]  # stopped: cut by a search, never mixed in
    for status in statuses:
        if status not in counts:
            counts[status] = 0
    done = runs[runs.status == "completed"]
    stats = done.groupby(keys).final_test_acc.agg(["median", "mean", "std", "min", "max"])
    best = done.groupby(keys).best_test_acc.median().rename("best_epoch_median")
    out = counts[statuses].join(stats).join(best)
    out.insert(0, "runs", out[statuses].sum(axis=1))
    out = out.rename(columns={"median": "final_median", "mean": "final_mean", "std": "final_std",
                              "min": "final_min", "max": "final_max"})
    out = out.reset_index().merge(intervals(runs, keys, metric, level), on=keys, how="left")
    # Each group's extra axes (report JSON v3), the combinations in the order of their values.
    axes, rank = axes_of(runs)
    out["axes"] = [axes[p] for p in out.protocol]
    out["_rank"] = out.protocol.map(rank)
    order = ["dataset", "_rank", "depth", "train_noise", "h"]
    return out.sort_values(order).drop(columns="_rank").reset_index(drop=True)


def summarize(rows: list[dict]) -> tuple[pd.DataFrame, list[dict]]:
    """A sweep's own runs (store rows) aggregated and recommended exactly as `report` does them with
    its defaults, so the h the sweep's summary marks is the h report names: (groups, recommendations)."""
    runs = select(pd.DataFrame(rows).reindex(columns=RUN_COLUMNS), Filters())
    groups, recs, _ = recommend(aggregate(runs), runs, MIN_SEEDS)
    return groups, recs


# ---------------------------------------------------------------------------------------------
# A report over a store: selection, recommendation, gates and figures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statistic:
    metric: str = "final"  # report --metric: final or best (see METRICS)
    level: float = LEVEL  # report --level: of every interval


@dataclass
class Gates:
    min_seeds: int | None = None  # given: fail when a (depth, h) has fewer completed runs
    max_failures: int | None = None
    require_complete: bool = False  # with a preset: every grid point finished in the store


@dataclass
class Report:
    groups: pd.DataFrame
    recommendations: list[dict]
    warnings: list[str]
    failures: list[str]  # gates that failed
    figures: list
    summaries: list[str]
    edges: list[dict] = field(default_factory=list)  # the stable region along ordered axes (region.py)
    verdicts: list[dict] = field(default_factory=list)  # "the edge grows as h shrinks?" per depth
    rules: list[dict] = field(default_factory=list)  # the h rules side by side and their transfer (law.py)
    laws: list[dict] = field(default_factory=list)  # h*(L) = a * L^-alpha per family (law.py)
    predictions: list[dict] = field(default_factory=list)  # report --predict-depth


def build(store, filters: Filters, slots: list[tuple] | None, gates: Gates, source: str | None = None,
          plot_dir=None, statistic: Statistic = Statistic(), html_path=None, predict: tuple[int, ...] = ()
          ) -> Report | None:
    """Select the runs (those of a preset's `slots`, see grid.preset_slots), recommend h, check the
    gates, fit the law of depth, draw the figures; None when no run matches."""
    runs = select(store.runs(columns=RUN_COLUMNS), filters)
    if runs.empty:
        return None
    for depth in predict:  # bad input, before anything is written
        law.check_predict_depth(depth, runs.model.unique())
    min_seeds = gates.min_seeds or MIN_SEEDS
    groups, recs, warnings = recommend(aggregate(runs, statistic.metric, statistic.level), runs, min_seeds)
    failures = []
    failed = int((runs.status == "failed").sum())
    if gates.max_failures is not None and failed > gates.max_failures:
        failures.append(f"{failed} runs failed, more than --max-failures {gates.max_failures}")
    if slots is not None and gates.require_complete:
        missing = missing_slots(runs, slots)
        if missing:
            failures.append(f"{missing} of {len(slots)} runs of {source} are not finished in the store")
    # An h a search cut has stopped runs, not too few seeds: the gate names it apart and passes it.
    short = groups[(groups.completed < min_seeds) & (groups.stopped == 0)]
    if not short.empty and gates.min_seeds is not None:
        cut = int(((groups.completed < min_seeds) & (groups.stopped > 0)).sum())
        names = ", ".join(["depth", *varying(runs), "h"])  # a group is one value of every extra axis too
        failures.append(f"{len(short)} ({names}) groups have fewer than {min_seeds} completed runs"
                        + (f" ({cut} more were cut by a search: their runs are stopped)" if cut else ""))
    edges, verdicts = region.edges(groups), region.verdicts(groups)
    rules, laws, predictions = law.analyse(groups, recs, runs, METRICS[statistic.metric], statistic.level, predict)
    figures, summaries = [], []
    if plot_dir is not None:
        figures, summaries = draw(store, groups, runs, plot_dir)
    result = Report(groups, recs, warnings, failures, figures, summaries, edges, verdicts, rules, laws, predictions)
    if html_path is not None:
        write_html(html_path, store, result, runs, source)
    return result


def write_html(path, store, result: Report, runs, source) -> None:
    """report --html: one self-contained page (page.py), its figures drawn for it unless --plot drew them."""
    import tempfile

    from .page import Law, render, write_page

    title = "robustres report" + (f": {source}" if source else "")
    level = float(result.groups.level.iloc[0]) if len(result.groups) else LEVEL
    depth_law = Law(result.rules, result.laws, result.predictions, level)
    warnings = result.warnings + result.failures
    if result.figures:
        write_page(path, render(result.groups, result.recommendations, warnings, result.figures, title,
                                list(result.verdicts), depth_law))
        return
    with tempfile.TemporaryDirectory() as folder:
        drawn, _ = draw(store, result.groups, runs, folder)
        write_page(path, render(result.groups, result.recommendations, warnings, drawn, title,
                                list(result.verdicts), depth_law))


def missing_slots(runs: pd.DataFrame, slots: list[tuple]) -> int:
    """Grid points of a preset with no finished run (at any precision the preset may have run at)."""
    done = runs[runs.status.isin(["completed", "diverged"])]
    finished = set(done.run_id) | set(preset_ids(done))
    return sum(1 for slot in slots if not any(s.run_id in finished for s in slot))


def draw(store, groups: pd.DataFrame, runs: pd.DataFrame, folder) -> tuple[list, list[str]]:
    from .figures import plot, plot_instruments, plot_moons_features, plot_transfer
    from .instruments import moons_models

    files = plot(groups, store.epochs(), runs, folder)
    files += plot_transfer(law.annotate(groups, runs), folder)  # accuracy against c per rule (law.py)
    ids = set(runs.run_id)

    def pick(df):
        return df[df.run_id.isin(ids)]

    more, summaries = plot_instruments(pick(store.noise_evals()), pick(store.propagation()),
                                       pick(store.layer_stats()), runs, folder)
    files += more
    for depth, protocol, models, data in moons_models(store, runs):
        files += plot_moons_features(models, data.test_x[:500], data.test_y[:500], folder, depth, protocol)
    return files, summaries
