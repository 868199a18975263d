"""The paper's figures, drawn from report's tables and the store's: accuracy against h (Fig. 6),
against depth (Fig. 3) and against training noise (Fig. 5), learning curves, the noise-eval
instruments, and the two-moons features of Fig. 4. PNG and SVG, no display needed."""

from __future__ import annotations

import re

import pandas as pd

from .atomic import write_atomic
from .noise_stats import accuracy_table, against_plain, paired_line, propagation_table
from .region import CATEGORICAL, ORDERED, axes_text, varying_axes
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
        ax.set_title(f"{_named(dataset, protocol, ', ')}: accuracy against h"
                     + (f", training noise {noise:g}" if noise else ""))
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
            ax.set_title(f"{_named(dataset, protocol, ', ')}: accuracy against depth")
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
        ax.set_title(f"{_named(dataset, protocol, ', ')}: training on noisy inputs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"fig5-acc-vs-noise-{slug(dataset, protocol)}")
    if "axes" in groups:  # the extra axes: h against an ordered one, the categorical ones side by side
        _heatmaps(figures, groups)
        _side_by_side(figures, done, y_label)
    if epochs is not None and not epochs.empty:
        _learning_curves(figures, epochs, runs, slug)
    return figures.written


def slug(*parts) -> str:
    """A file name's part from labels: what is not a letter, digit or ._=- becomes _."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(str(p) for p in parts if p))


def heatmap_stem(axis: str, dataset: str, noise: float, rest: dict, depth: int) -> str:
    """The heatmap's file name (without extension) and its SVG id: page.py finds it by this name."""
    return "heatmap-h-vs-" + slug(axis, dataset, axes_text(rest), f"noise{noise:g}" if noise else "", f"depth{depth}")


def _with_axis(groups: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The groups with a value of `axis`; that value (`axis_value`) and the other axes (`axis_rest`) as columns."""
    g = groups[[a.get(axis) is not None for a in groups["axes"]]].copy()
    g["axis_value"] = [a[axis] for a in g["axes"]]
    g["axis_rest"] = [tuple((k, v) for k, v in a.items() if k != axis) for a in g["axes"]]
    return g


def _heatmaps(figures: _Figures, groups: pd.DataFrame) -> None:
    """Per depth and ordered axis: h (rows) against the axis (columns), the median of the metric in
    each cell, cells with diverged runs hatched and marked x k/n (k of n finished runs diverged), a
    thick line at each h's edge (before the first value at which a run diverged)."""
    import matplotlib

    metric = str(groups.metric.iloc[0])
    for axis in varying_axes(groups, ORDERED):
        for (dataset, noise, rest, depth), g in _with_axis(groups, axis).groupby(
                ["dataset", "train_noise", "axis_rest", "depth"], sort=False):
            fig, ax = _heatmap(figures.plt, g, axis, metric)
            where = _where(rest, noise)
            ax.set_title(f"{dataset}, depth {depth}: h against {axis}" + (f" ({where})" if where else "")
                         + "\n\u00d7 k/n: k of n finished runs diverged; line: the edge", fontsize=10)
            stem = heatmap_stem(axis, dataset, noise, dict(rest), depth)
            ax.set_gid(stem)
            with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: searchable in the page
                figures.save(fig, stem)


def _heatmap(plt, g: pd.DataFrame, axis: str, metric: str):
    """One heatmap's figure and axes from the groups of one depth (and one value of the other axes)."""
    import matplotlib
    import numpy as np

    hs, values = sorted(g.h.unique()), sorted(g.axis_value.unique())
    grid = np.full((len(hs), len(values)), np.nan)
    for r in g[g.completed > 0].itertuples():
        grid[hs.index(r.h), values.index(r.axis_value)] = 100 * r.median
    fig, ax = plt.subplots(figsize=(2.4 + 1.1 * len(values), 1.6 + 0.5 * len(hs)))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")  # grey: no completed run
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    middle = np.nanmean(grid) if np.isfinite(grid).any() else 0.0
    first = {}  # per row: the column of the first value at which a run diverged
    for r in g.sort_values("axis_value").itertuples():
        i, j, finished = hs.index(r.h), values.index(r.axis_value), int(r.completed + r.diverged)
        text = f"{grid[i, j]:.1f}" if r.completed > 0 else ""
        if r.diverged > 0:
            first.setdefault(i, j)
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", edgecolor="#c62828",
                                       linewidth=0))
            text += f"\n\u00d7 {int(r.diverged)}/{finished}"
        dark = r.completed > 0 and grid[i, j] < middle and not r.diverged
        box = dict(boxstyle="round,pad=0.2", facecolor="white", alpha=0.8, linewidth=0) if r.diverged else None
        ax.text(j, i, text.strip(), ha="center", va="center", fontsize=8, color="white" if dark else "black",
                bbox=box)  # a diverged cell's text on a plate: readable over the hatching
    for i, j in first.items():
        ax.plot([j - 0.5, j - 0.5], [i - 0.5, i + 0.5], color="black", linewidth=3)
    ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
    ax.set_yticks(range(len(hs)), [f"{h:g}" for h in hs])
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel(axis)
    ax.set_ylabel("step factor h")
    fig.colorbar(image, ax=ax, label=f"median {metric} test accuracy, %")
    return fig, ax


def _side_by_side(figures: _Figures, done: pd.DataFrame, y_label: str) -> None:
    """Per categorical axis (optimizer, BN): accuracy against h, one panel per value, a curve per depth."""
    plt = figures.plt
    for axis in varying_axes(done, CATEGORICAL):
        for (dataset, noise, rest), g in _with_axis(done, axis).groupby(["dataset", "train_noise", "axis_rest"],
                                                                          sort=False):
            values = sorted(g.axis_value.unique(), key=str)
            fig, panels = plt.subplots(1, len(values), figsize=(4.4 * len(values), 3.8), squeeze=False, sharey=True)
            for ax, value in zip(panels[0], values):
                for depth, d in g[g.axis_value == value].groupby("depth"):
                    d = d.sort_values("h")
                    (line,) = ax.plot(d.h, 100 * d["median"], marker="o", label=f"depth {depth}")
                    ax.fill_between(d.h, 100 * d.ci_low, 100 * d.ci_high, color=line.get_color(), alpha=0.2,
                                    linewidth=0)
                ax.set_xscale("log")
                ax.set_xlabel("step factor h (log scale)")
                ax.set_title(axes_text({axis: value}))
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(title="ResNet", fontsize="small")
            panels[0][0].set_ylabel(y_label)
            where = _where(rest, noise)
            fig.suptitle(f"{dataset}: accuracy against h per {axis}" + (f" ({where})" if where else ""), y=1.02)
            figures.save(fig, "fig6-acc-vs-h-by-" + slug(axis, dataset, axes_text(dict(rest)),
                                                         f"noise{noise:g}" if noise else ""))


RULE_H = {"fixed": "h = c", "sqrt": "h = c / sqrt(L)", "linear": "h = c / L", "learned": "h starts at c"}


def plot_transfer(groups: pd.DataFrame, folder) -> list:
    """The depth-muP papers' figure: accuracy against c, one curve per depth, one panel per h rule
    (groups from law.annotate). Optima that line up across depths mean the rule's c transfers. Drawn
    where rules and depths both vary: with one rule it would be Fig. 6 again."""
    done = groups[groups.completed > 0]
    if "h_rule" not in done or done.empty:
        return []
    rest = [tuple(sorted((k, v) for k, v in a.items() if k != "h_rule")) for a in done["axes"]]
    done = done.assign(_rest=rest)
    families = [(key, g) for key, g in done.groupby(["dataset", "train_noise", "_rest"], sort=False)
                if g.depth.nunique() > 1 and g.h_rule.nunique() > 1]
    if not families:
        return []
    figures = _Figures(folder)
    plt, y_label = figures.plt, _y_label(done)
    order = ("fixed", "sqrt", "linear", "learned")
    for (dataset, noise, other), g in families:
        rules = sorted(g.h_rule.unique(), key=lambda r: (order.index(r) if r in order else 9, r))
        fig, panels = plt.subplots(1, len(rules), figsize=(4.4 * len(rules), 3.8), squeeze=False, sharey=True)
        for ax, rule in zip(panels[0], rules):
            for depth, d in g[g.h_rule == rule].groupby("depth"):
                d = d.sort_values("h")
                (line,) = ax.plot(d.h, 100 * d["median"], marker="o", label=f"depth {depth}")
                ax.fill_between(d.h, 100 * d.ci_low, 100 * d.ci_high, color=line.get_color(), alpha=0.2, linewidth=0)
                top = d.loc[d["median"].idxmax()]  # the optimum: aligned stars mean transfer
                ax.plot([top.h], [100 * top["median"]], marker="*", markersize=13, color=line.get_color())
            ax.set_xscale("log")
            ax.set_xlabel("c, the grid's value (log scale)")
            ax.set_title(f"{rule}: {RULE_H.get(rule, rule)}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="small")
        panels[0][0].set_ylabel(y_label)
        where = _where(other, noise)
        fig.suptitle(f"{dataset}: accuracy against c per h rule (stars: each depth's best)"
                     + (f" ({where})" if where else ""), y=1.02)
        noisy = f"noise{noise:g}" if noise else ""
        figures.save(fig, "transfer-acc-vs-c-" + slug(dataset, axes_text(dict(other)), noisy))
    return figures.written


def _where(rest: tuple, noise: float) -> str:
    """The other axes and the training noise, as a title names them."""
    return ", ".join(x for x in (axes_text(dict(rest)), f"training noise {noise:g}" if noise else "") if x)


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
        fig.suptitle(f"{_named(dataset, protocol, ', ')}: learning curves (a curve stops where its runs diverged)"
                     + (f", training noise {noise:g}" if noise else ""), y=1.03)
        save(fig, "curves-" + slug(dataset, protocol, f"noise{noise:g}" if noise else ""))


def plot_instruments(noise: pd.DataFrame, prop: pd.DataFrame, stats: pd.DataFrame, runs: pd.DataFrame,
                     folder) -> tuple[list, list[str]]:
    """Figures of noise-eval's tables: accuracy against test-noise level, perturbation against block
    (Prop. 2), weight and gradient norms over steps (Fig. 2). Returns (paths, one-line summaries)."""
    figures = _Figures(folder)
    plt, save, colors = figures.plt, figures.save, figures.colors
    summaries = []
    meta = runs[["run_id", "dataset", "depth", "h", "seed"]].assign(
        protocol=runs["protocol"] if "protocol" in runs else "")  # runs of other lrs, ...: never pooled

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
    table = pd.DataFrame(accuracy_table(frame, ("protocol",)))
    summaries = [f"{_named(r['dataset'], r['protocol'])} depth {r['depth']} {r['kind']} {r['level']:g}: "
                 f"{paired_line(r)}" for r in against_plain(frame, ("protocol",))]
    for (dataset, protocol, depth, kind), g in table.groupby(["dataset", "protocol", "depth", "kind"]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        cmap = colors(g.h.unique())
        for h, d in g.groupby("h"):
            d = d.sort_values("level")
            ax.errorbar(d.level, 100 * d["median"], yerr=_ci(d), marker="o", capsize=3, color=cmap[h],
                        label=f"h = {h:g}")
        ax.set_xlabel(f"test-noise level ({kind})")
        ax.set_ylabel(f"test accuracy, % (median over seeds, {level_label(LEVEL)} % CI)")
        ax.set_title(f"{_named(dataset, protocol, ', ')}, depth {depth}: corrupted test inputs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"noise-acc-{_named(dataset, protocol, '-')}-depth{depth}-{kind}")
    return summaries


def _propagation(figures: _Figures, frame: pd.DataFrame) -> None:
    """Prop. 2: the relative perturbation against block per h, median over seeds with its band."""
    plt, save, colors = figures.plt, figures.save, figures.colors
    table = pd.DataFrame(propagation_table(frame, ("protocol",)))
    for (dataset, protocol, depth, kind, level), g in table.groupby(["dataset", "protocol", "depth", "kind", "level"]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        cmap = colors(g.h.unique())
        for h, d in g.groupby("h"):
            d = d.sort_values("block")
            ax.plot(d.block, d["median"], color=cmap[h], label=f"h = {h:g}")
            ax.fill_between(d.block, d.ci_low, d.ci_high, color=cmap[h], alpha=0.2, linewidth=0)
        ax.set_xlabel("block n (0: the input to the first block)")
        ax.set_ylabel("||x_n(noisy) - x_n(clean)|| / ||x_n(clean)||")
        ax.set_title(f"{_named(dataset, protocol, ', ')}, depth {depth}: {kind} noise {level:g} through the blocks "
                     f"(median over seeds, {level_label(LEVEL)} % band)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, f"propagation-{_named(dataset, protocol, '-')}-depth{depth}-{kind}-{level:g}")


def _named(dataset: str, protocol: str, sep: str = " ") -> str:
    """A dataset with the protocol its runs share, where protocols vary ("two-moons, lr=0.2")."""
    return f"{dataset}{sep}{protocol}" if protocol else dataset


def plot_moons_features(models: list[tuple[float, object]], points, labels, folder, depth: int,
                        protocol: str = "") -> list:
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
    fig.suptitle(f"{_named('two-moons', protocol, ', ')}, {depth} blocks of width 2: the test points block by block")
    figures.save(fig, f"fig4-moons-features-depth{depth}" + (f"-{protocol}" if protocol else ""))
    return figures.written
