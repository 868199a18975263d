"""From a store to the answer: which h at each depth, how sure, and the paper's figures.

Aggregation is per (dataset, depth, training noise, h) over seeds. The recommendation follows the
paper's guideline, "small, but not too small; deeper, smaller": among the h with enough completed
runs and no divergence or failure, take the best median final accuracy; when others are within its
noise (median above best median - best std), prefer the steadier (smaller std), then the smaller h.
Accuracies are fractions in [0, 1] here and percentages in what is printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

# Everything of a run's config but depth, h, seed and training noise: runs that differ here are not
# comparable and never pooled.
PROTOCOL = ["model", "bn", "epochs", "batch_size", "lr", "momentum", "milestones", "gamma", "weight_decay",
            "optimizer", "noise_kind", "precision", "limit_train", "limit_test", "n_train", "n_test",
            "moons_noise", "synthetic_like", "width", "hidden"]
RUN_COLUMNS = ["run_id", "dataset", "depth", "h", "seed", "train_noise", "status", "final_test_acc",
               "best_test_acc"] + PROTOCOL
BLOCK = ["dataset", "protocol", "depth", "train_noise"]  # one recommendation per block
LABELS = ("best", "within noise", "unstable", "over-smoothed", "worse", "too few seeds")


@dataclass(frozen=True)
class Filters:
    datasets: tuple[str, ...] = ()
    depths: tuple[int, ...] = ()
    hs: tuple[float, ...] = ()
    train_noises: tuple[float, ...] = ()
    run_ids: frozenset[str] | None = None  # the runs of a sweep config


def with_protocol(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `protocol`: the config fields in which these runs differ ("" when they all agree)."""
    runs = runs.copy()
    varying = [c for c in PROTOCOL if c in runs and runs[c].astype(str).nunique(dropna=False) > 1]
    if not varying:
        runs["protocol"] = ""
        return runs
    runs["protocol"] = runs[varying].astype(str).apply(
        lambda row: " ".join(f"{c}={v}" for c, v in zip(varying, row)), axis=1)
    return runs


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
        keep &= runs.run_id.isin(f.run_ids)
    return with_protocol(runs[keep])


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, depth, train_noise, h): counts and statistics of the final accuracy."""
    keys = BLOCK + ["h"]
    counts = runs.assign(n=1).pivot_table(index=keys, columns="status", values="n", aggfunc="sum", fill_value=0)
    for status in ("completed", "diverged", "failed", "running"):
        if status not in counts:
            counts[status] = 0
    done = runs[runs.status == "completed"]
    stats = done.groupby(keys).final_test_acc.agg(["median", "mean", "std", "min", "max"])
    best = done.groupby(keys).best_test_acc.median().rename("best_epoch_median")
    out = counts[["completed", "diverged", "failed", "running"]].join(stats).join(best)
    out.insert(0, "runs", out[["completed", "diverged", "failed", "running"]].sum(axis=1))
    out = out.rename(columns={"median": "final_median", "mean": "final_mean", "std": "final_std",
                              "min": "final_min", "max": "final_max"})
    return out.reset_index().sort_values(keys).reset_index(drop=True)


def _sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def recommend(groups: pd.DataFrame, runs: pd.DataFrame, min_seeds: int) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """Label every h, pick one per block, explain it; returns (groups + label, recommendations, warnings)."""
    groups = groups.copy()
    groups["label"] = ""
    recommendations, warnings = [], []
    for block, rows in groups.groupby(BLOCK, sort=True):
        std = rows.final_std.fillna(0.0)
        stable = (rows.diverged == 0) & (rows.failed == 0)
        enough = rows.completed >= min_seeds
        cand = rows[stable & enough]
        key = dict(zip(BLOCK, block))
        if cand.empty:
            groups.loc[rows.index, "label"] = [
                "unstable" if not s else "too few seeds" for s in stable]
            recommendations.append({**key, "h": None, "median": None, "std": None,
                                    "reason": f"no h has {min_seeds} completed runs without divergence or failure"})
            continue
        cstd = std[cand.index]
        top = cand.assign(_std=cstd).sort_values(["final_median", "_std", "h"], ascending=[False, True, True]).iloc[0]
        # Within the noise: a median above (best median - best std); equal medians (ties) count too.
        near = cand[cand.final_median > top.final_median - (0.0 if math.isnan(top.final_std) else top.final_std)
                    - 1e-12]
        near = near.assign(_std=std[near.index]).sort_values(["_std", "h"])
        rec = near.iloc[0]
        rec_std = 0.0 if math.isnan(rec.final_std) else rec.final_std
        labels, notes = {}, []
        clearly_worse_cut = top.final_median - (0.0 if math.isnan(top.final_std) else top.final_std) - 1e-12
        for i, row in rows.iterrows():
            s = std[i]
            noisy = rec_std > 0 and s > 2 * rec_std
            if row.diverged or row.failed:
                labels[i] = "unstable"
            elif row.completed < min_seeds:
                labels[i] = "too few seeds"
            elif i == rec.name:
                labels[i] = "best"
            elif i in near.index:
                labels[i] = "unstable" if noisy else "within noise"
            elif row.h < rec.h and row.final_median <= clearly_worse_cut:
                labels[i] = "over-smoothed"
            else:
                labels[i] = "unstable" if noisy else "worse"
        groups.loc[list(labels), "label"] = list(labels.values())
        reason = f"h={rec.h:g}: best median {100 * rec.final_median:.1f} % (std {100 * rec_std:.2f})"
        if rec.name != top.name:
            reason = (f"h={rec.h:g}: median {100 * rec.final_median:.1f} % (std {100 * rec_std:.2f}), within the "
                      f"noise of the best, h={top.h:g} ({100 * top.final_median:.1f} %, std "
                      f"{100 * std[top.name]:.2f}), and steadier")
        for i, row in rows.iterrows():
            if labels[i] == "within noise" and i != top.name:
                notes.append(f"h={row.h:g} within noise but std {100 * std[i]:.2f}")
        bad = rows[(rows.diverged > 0) | (rows.failed > 0)].sort_values("h")
        top_range = rows[rows.h >= bad.h.min()] if not bad.empty else bad
        if len(bad) > 1 and len(top_range) == len(bad) and (bad.failed == 0).all():
            # Every h from some value up diverged: say it once ("h>=5 diverged 9/10").
            notes.append(f"h>={bad.h.min():g} diverged {int(bad.diverged.sum())}/{int(bad.runs.sum())}")
        else:
            for _, row in bad.iterrows():
                what = "diverged" if row.diverged else "failed"
                notes.append(f"h={row.h:g} {what} {int(row.diverged or row.failed)}/{int(row.runs)}")
        smoothed = rows[[labels[i] == "over-smoothed" for i in rows.index]]
        if not smoothed.empty:
            notes.append(f"h<={smoothed.h.max():g} over-smoothed (median <= {100 * smoothed.final_median.max():.1f} %)")
        entry = {**key, "h": float(rec.h), "median": float(rec.final_median), "std": rec_std,
                 "reason": "; ".join([reason] + notes)}
        entry.update(_paired(runs, key, rec.h))
        recommendations.append(entry)

    # The guideline across depths: the recommended h should not grow with depth.
    recs = pd.DataFrame([r for r in recommendations if r["h"] is not None])
    if not recs.empty:
        for (dataset, protocol, noise), block in recs.groupby(["dataset", "protocol", "train_noise"]):
            block = block.sort_values("depth")
            hs = block.h.tolist()
            if any(b > a for a, b in zip(hs, hs[1:])):
                pairs = ", ".join(f"depth {d}: {h:g}" for d, h in zip(block.depth, hs))
                where = ", ".join(x for x in (protocol, f"noise {noise:g}" if noise else "") if x)
                warnings.append(f"{dataset}{f' ({where})' if where else ''}: the recommended h grows with "
                                f"depth ({pairs}), against the guideline 'deeper, smaller'")
    return groups, recommendations, warnings


def _paired(runs: pd.DataFrame, key: dict, h: float) -> dict:
    """The recommendation against h = 1, seed by seed (same seed: same start, same batches).

    A seed counts when both runs finished; a diverged run loses to a completed one. The median
    difference is over the seeds where both completed.
    """
    if abs(h - 1.0) < 1e-12:
        return {"vs_h1": None}
    block = runs[(runs.dataset == key["dataset"]) & (runs.protocol == key["protocol"]) & (runs.depth == key["depth"])
                 & (runs.train_noise == key["train_noise"]) & runs.status.isin(["completed", "diverged"])]
    mine = block[(block.h - h).abs() < 1e-12].set_index("seed")
    plain = block[(block.h - 1.0).abs() < 1e-12].set_index("seed")
    seeds = mine.index.intersection(plain.index)
    if len(seeds) == 0:
        return {"vs_h1": None}
    a = mine.loc[seeds, "final_test_acc"].where(mine.loc[seeds, "status"] == "completed")
    b = plain.loc[seeds, "final_test_acc"].where(plain.loc[seeds, "status"] == "completed")
    both = a.notna() & b.notna()
    diff = (a - b)[both].astype(float)
    wins = int((diff > 0).sum() + (a.notna() & b.isna()).sum())
    losses = int((diff < 0).sum() + (a.isna() & b.notna()).sum())
    return {"vs_h1": {"seeds": int(len(seeds)), "median_diff": float(diff.median()) if len(diff) else None,
                      "wins": wins, "losses": losses, "sign_test_p": _sign_test(wins, losses)}}


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


class _Figures:
    """Where figures go: every figure saved as PNG and SVG into one folder, paths remembered."""

    def __init__(self, folder):
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
        from pathlib import Path

        self.plt = plt
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list = []

    def save(self, fig, name: str) -> None:
        for ext in ("png", "svg"):
            path = self.folder / f"{name}.{ext}"
            fig.savefig(path, dpi=150, bbox_inches="tight")
            self.written.append(path)
        self.plt.close(fig)

    def colors(self, hs) -> dict:
        """One colour per h, from small (dark) to large (light), the same in every panel."""
        hs = sorted(hs)
        return {h: self.plt.get_cmap("viridis")(i / max(1, len(hs) - 1)) for i, h in enumerate(hs)}


def plot(groups: pd.DataFrame, epochs: pd.DataFrame | None, runs: pd.DataFrame, folder) -> list:
    """The paper's figures for these runs, as PNG and SVG files in `folder`; returns the paths."""
    figures = _Figures(folder)
    plt, save = figures.plt, figures.save

    def slug(*parts) -> str:
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(str(p) for p in parts if p))

    done = groups[groups.completed > 0]
    for (dataset, protocol, noise), g in done.groupby(["dataset", "protocol", "train_noise"]):
        tag = slug(dataset, protocol, f"noise{noise:g}" if noise else "")
        # Fig. 6: accuracy against h per depth, log axis, median with the spread over seeds.
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for depth, d in g.groupby("depth"):
            d = d.sort_values("h")
            err = [100 * (d.final_median - d.final_min), 100 * (d.final_max - d.final_median)]
            ax.errorbar(d.h, 100 * d.final_median, yerr=err, marker="o", capsize=3, label=f"depth {depth}")
        ax.set_xscale("log")
        ax.set_xlabel("step factor h (log scale)")
        ax.set_ylabel("final test accuracy, % (median, min-max over seeds)")
        ax.set_title(f"{dataset}: accuracy against h" + (f", training noise {noise:g}" if noise else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="ResNet")
        save(fig, f"fig6-acc-vs-h-{tag}")
        # Fig. 3: accuracy against depth per h.
        if g.depth.nunique() > 1:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            ax.set_prop_cycle(color=[plt.get_cmap("viridis")(i / max(1, g.h.nunique() - 1))
                                     for i in range(g.h.nunique())])
            for h, d in g.groupby("h"):
                d = d.sort_values("depth")
                ax.errorbar(d.depth, 100 * d.final_median, yerr=100 * d.final_std.fillna(0), marker="o", capsize=3,
                            label=f"h = {h:g}")
            ax.set_xlabel("depth")
            ax.set_ylabel("final test accuracy, % (median, error bar: std)")
            ax.set_title(f"{dataset}: accuracy against depth")
            ax.grid(True, alpha=0.3)
            ax.legend(ncol=2, fontsize="small", title="step factor")
            save(fig, f"fig3-acc-vs-depth-{tag}")
    # Fig. 5: accuracy against the training-noise level per h (and depth).
    for (dataset, protocol), g in done.groupby(["dataset", "protocol"]):
        if g.train_noise.nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (depth, h), d in g.groupby(["depth", "h"]):
            d = d.sort_values("train_noise")
            ax.errorbar(d.train_noise, 100 * d.final_median, yerr=100 * d.final_std.fillna(0), marker="o",
                        capsize=3, label=f"depth {depth}, h = {h:g}")
        ax.set_xlabel("training-noise level")
        ax.set_ylabel("final test accuracy, % (median, error bar: std)")
        ax.set_title(f"{dataset}: training on noisy inputs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"fig5-acc-vs-noise-{slug(dataset, protocol)}")
    # Learning curves: median test accuracy over seeds per epoch, one panel per depth.
    if epochs is not None and not epochs.empty:
        merged = epochs.merge(runs[["run_id", "dataset", "protocol", "depth", "h", "train_noise"]], on="run_id")
        for (dataset, protocol, noise), g in merged.groupby(["dataset", "protocol", "train_noise"]):
            depths = sorted(g.depth.unique())
            hs = sorted(g.h.unique())
            colors = figures.colors(hs)
            fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.6), squeeze=False, sharey=True)
            for ax, depth in zip(axes[0], depths):
                for h, d in g[g.depth == depth].groupby("h"):
                    curve = d.groupby("epoch").test_acc.median()
                    ax.plot(curve.index, 100 * curve.values, color=colors[h])
                ax.set_title(f"depth {depth}")
                ax.set_xlabel("epoch")
                ax.grid(True, alpha=0.3)
            axes[0][0].set_ylabel("test accuracy, % (median over seeds)")
            handles = [plt.Line2D([], [], color=colors[h], label=f"h = {h:g}") for h in hs]
            fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
            fig.suptitle(f"{dataset}: learning curves (a curve stops where its runs diverged)"
                         + (f", training noise {noise:g}" if noise else ""), y=1.03)
            save(fig, "curves-" + slug(dataset, protocol, f"noise{noise:g}" if noise else ""))
    return figures.written


def plot_instruments(noise: pd.DataFrame, prop: pd.DataFrame, stats: pd.DataFrame, runs: pd.DataFrame,
                     folder) -> tuple[list, list[str]]:
    """Figures of noise-eval's tables: accuracy against test-noise level, perturbation against block
    (Prop. 2), weight and gradient norms over steps (Fig. 2). Returns (paths, one-line summaries)."""
    figures = _Figures(folder)
    plt, save, colors = figures.plt, figures.save, figures.colors
    summaries = []
    meta = runs[["run_id", "dataset", "depth", "h"]]

    if not noise.empty:
        frame = noise.merge(meta, on="run_id")
        for (dataset, depth, kind), g in frame.groupby(["dataset", "depth", "kind"]):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            cmap = colors(g.h.unique())
            for h, d in g.groupby("h"):
                med = d.groupby("level").accuracy.median()
                ax.plot(med.index, 100 * med.values, marker="o", color=cmap[h], label=f"h = {h:g}")
            ax.set_xlabel(f"test-noise level ({kind})")
            ax.set_ylabel("test accuracy, % (median over seeds)")
            ax.set_title(f"{dataset}, depth {depth}: corrupted test inputs")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
            save(fig, f"noise-acc-{dataset}-depth{depth}-{kind}")
    if not prop.empty:
        frame = prop.merge(meta, on="run_id")
        for (dataset, depth, kind, level), g in frame.groupby(["dataset", "depth", "kind", "level"]):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            cmap = colors(g.h.unique())
            for h, d in g.groupby("h"):
                med = d.groupby("block").value.median()
                ax.plot(med.index, med.values, color=cmap[h], label=f"h = {h:g}")
            ax.set_xlabel("block n (0: the input to the first block)")
            ax.set_ylabel("||x_n(noisy) - x_n(clean)|| / ||x_n(clean)||")
            ax.set_title(f"{dataset}, depth {depth}: {kind} noise {level:g} through the blocks")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
            save(fig, f"propagation-{dataset}-depth{depth}-{kind}-{level:g}")
    if not stats.empty:
        frame = stats.merge(meta, on="run_id")
        for (dataset, depth, layer), g in frame.groupby(["dataset", "depth", "layer"]):
            fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
            fig.subplots_adjust(wspace=0.35)
            cmap = colors(g.h.unique())
            for h, d in g.groupby("h"):
                med = d.groupby("step")[["grad_norm", "weight_norm"]].median()
                axes[0].plot(med.index, med.grad_norm, color=cmap[h], label=f"h = {h:g}")
                axes[1].plot(med.index, med.weight_norm, color=cmap[h], label=f"h = {h:g}")
                early = d[d.step <= 10].grad_norm.median()
                summaries.append(f"{dataset} depth {depth} layer {layer}: median gradient norm over the first 10 "
                                 f"steps at h={h:g}: {early:.3g}")
            for ax, what in zip(axes, ("gradient norm", "weight norm")):
                ax.set_yscale("log")
                ax.set_xlabel("SGD step")
                ax.set_ylabel(f"{what} (median over seeds, log)")
                ax.grid(True, which="both", alpha=0.3)
            axes[1].legend(fontsize="small")
            fig.suptitle(f"{dataset}, depth {depth}: layer {layer}")
            save(fig, f"layer-norms-{dataset}-depth{depth}-layer{layer}")
    return figures.written, summaries


def plot_moons_features(models: list[tuple[float, object]], points, labels, folder, depth: int) -> list:
    """The paper's Fig. 4: two-moons test points as they move through the blocks of width-2 models,
    one row per h, columns at blocks 0, D/4, D/2, 3D/4 and D."""
    import torch

    figures = _Figures(folder)
    plt = figures.plt

    cols = sorted({0, depth // 4, depth // 2, 3 * depth // 4, depth})
    fig, axes = plt.subplots(len(models), len(cols), figsize=(2.6 * len(cols), 2.5 * len(models)), squeeze=False)
    for row, (h, model) in enumerate(models):
        with torch.no_grad():
            feats = model.features(points)
        for c, block in enumerate(cols):
            ax = axes[row][c]
            xy = feats[block].cpu().numpy()
            ax.scatter(xy[:, 0], xy[:, 1], c=labels.cpu().numpy(), cmap="coolwarm", s=3)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"block {block}")
            if c == 0:
                ax.set_ylabel(f"h = {h:g}")
    fig.suptitle(f"two-moons, {depth} blocks of width 2: the test points block by block")
    figures.save(fig, f"fig4-moons-features-depth{depth}")
    return figures.written
