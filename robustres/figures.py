"""The paper's figures, drawn from report's tables and the store's: accuracy against h (Fig. 6),
against depth (Fig. 3) and against training noise (Fig. 5), learning curves, the noise-eval
instruments, and the two-moons features of Fig. 4. PNG and SVG, no display needed."""

from __future__ import annotations

import re

import pandas as pd

from .atomic import write_atomic
from .noise_stats import accuracy_table, against_plain, paired_line, propagation_table
from .stats import LEVEL, level_label

# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


class _Figures:
    """Where figures go: every figure saved as PNG and SVG into one folder, paths remembered."""

    def __init__(self, folder):
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        from pathlib import Path

        import matplotlib.pyplot as plt

        self.plt = plt
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list = []

    def save(self, fig, name: str) -> None:
        for ext in ("png", "svg"):
            path = self.folder / f"{name}.{ext}"
            # atomically, as every file: a reader never sees half a figure, a symlink is written through
            write_atomic(path, lambda f: fig.savefig(f, format=ext, dpi=150, bbox_inches="tight"))
            self.written.append(path)
        self.plt.close(fig)

    def colors(self, hs) -> dict:
        """One colour per h, from small (dark) to large (light), the same in every panel."""
        hs = sorted(hs)
        return {h: self.plt.get_cmap("viridis")(i / max(1, len(hs) - 1)) for i, h in enumerate(hs)}


def _y_label(groups: pd.DataFrame) -> str:
    metric = str(groups.metric.iloc[0]) if len(groups) else "final"
    level = level_label(float(groups.level.iloc[0])) if len(groups) else level_label(LEVEL)
    return f"{metric} test accuracy, % (median over seeds, {level} % CI)"


def _ci(d: pd.DataFrame) -> list:
    """Error-bar lengths below and above each median: its interval."""
    return [100 * (d["median"] - d.ci_low), 100 * (d.ci_high - d["median"])]


def plot(groups: pd.DataFrame, epochs: pd.DataFrame | None, runs: pd.DataFrame, folder) -> list:
    """The paper's figures for these runs, as PNG and SVG files in `folder`; returns the paths."""
    figures = _Figures(folder)
    plt, save = figures.plt, figures.save

    def slug(*parts) -> str:
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(str(p) for p in parts if p))

    done = groups[groups.completed > 0]
    y_label, ci = _y_label(done), _ci
    for (dataset, protocol, noise), g in done.groupby(["dataset", "protocol", "train_noise"]):
        tag = slug(dataset, protocol, f"noise{noise:g}" if noise else "")
        # Fig. 6: accuracy against h per depth, log axis, the median with its interval as a band.
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for depth, d in g.groupby("depth"):
            d = d.sort_values("h")
            (line,) = ax.plot(d.h, 100 * d["median"], marker="o", label=f"depth {depth}")
            ax.fill_between(d.h, 100 * d.ci_low, 100 * d.ci_high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("step factor h (log scale)")
        ax.set_ylabel(y_label)
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
                ax.errorbar(d.depth, 100 * d["median"], yerr=ci(d), marker="o", capsize=3, label=f"h = {h:g}")
            ax.set_xlabel("depth")
            ax.set_ylabel(y_label)
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
            ax.errorbar(d.train_noise, 100 * d["median"], yerr=ci(d), marker="o", capsize=3,
                        label=f"depth {depth}, h = {h:g}")
        ax.set_xlabel("training-noise level")
        ax.set_ylabel(y_label)
        ax.set_title(f"{dataset}: training on noisy inputs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"fig5-acc-vs-noise-{slug(dataset, protocol)}")
    if epochs is not None and not epochs.empty:
        _learning_curves(figures, epochs, runs, slug)
    return figures.written


def _learning_curves(figures: _Figures, epochs: pd.DataFrame, runs: pd.DataFrame, slug) -> None:
    """Median test accuracy over seeds per epoch, one panel per depth."""
    plt, save = figures.plt, figures.save
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


def plot_instruments(noise: pd.DataFrame, prop: pd.DataFrame, stats: pd.DataFrame, runs: pd.DataFrame,
                     folder) -> tuple[list, list[str]]:
    """Figures of noise-eval's tables: accuracy against test-noise level, perturbation against block
    (Prop. 2), weight and gradient norms over steps (Fig. 2). Returns (paths, one-line summaries)."""
    figures = _Figures(folder)
    plt, save, colors = figures.plt, figures.save, figures.colors
    summaries = []
    meta = runs[["run_id", "dataset", "depth", "h", "seed"]]

    if not noise.empty:
        summaries += _noise_accuracy(figures, noise.merge(meta, on="run_id"))
    if not prop.empty:
        _propagation(figures, prop.merge(meta, on="run_id"))
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


def _noise_accuracy(figures: _Figures, frame: pd.DataFrame) -> list[str]:
    """Accuracy against the test-noise level per h, with intervals (noise_stats); returns each h
    against h = 1, in words."""
    plt, save, colors = figures.plt, figures.save, figures.colors
    table = pd.DataFrame(accuracy_table(frame))
    summaries = [f"{r['dataset']} depth {r['depth']} {r['kind']} {r['level']:g}: {paired_line(r)}"
                 for r in against_plain(frame)]
    for (dataset, depth, kind), g in table.groupby(["dataset", "depth", "kind"]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        cmap = colors(g.h.unique())
        for h, d in g.groupby("h"):
            d = d.sort_values("level")
            ax.errorbar(d.level, 100 * d["median"], yerr=_ci(d), marker="o", capsize=3, color=cmap[h],
                        label=f"h = {h:g}")
        ax.set_xlabel(f"test-noise level ({kind})")
        ax.set_ylabel(f"test accuracy, % (median over seeds, {level_label(LEVEL)} % CI)")
        ax.set_title(f"{dataset}, depth {depth}: corrupted test inputs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"noise-acc-{dataset}-depth{depth}-{kind}")
    return summaries


def _propagation(figures: _Figures, frame: pd.DataFrame) -> None:
    """Prop. 2: the relative perturbation against block per h, median over seeds with its band."""
    plt, save, colors = figures.plt, figures.save, figures.colors
    table = pd.DataFrame(propagation_table(frame))
    for (dataset, depth, kind, level), g in table.groupby(["dataset", "depth", "kind", "level"]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        cmap = colors(g.h.unique())
        for h, d in g.groupby("h"):
            d = d.sort_values("block")
            ax.plot(d.block, d["median"], color=cmap[h], label=f"h = {h:g}")
            ax.fill_between(d.block, d.ci_low, d.ci_high, color=cmap[h], alpha=0.2, linewidth=0)
        ax.set_xlabel("block n (0: the input to the first block)")
        ax.set_ylabel("||x_n(noisy) - x_n(clean)|| / ||x_n(clean)||")
        ax.set_title(f"{dataset}, depth {depth}: {kind} noise {level:g} through the blocks "
                     f"(median over seeds, {level_label(LEVEL)} % band)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"propagation-{dataset}-depth{depth}-{kind}-{level:g}")


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
