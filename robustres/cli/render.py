"""Tables and text for people, and JSON for scripts: everything the commands print."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..hardware import wall_time
from ..region import axes_text
from ..spec import AXES
from ..stats import level_label
from .progress import status_text


def pct(value) -> str:
    try:
        return "-" if value is None or value != value else f"{100 * value:.2f}"
    except TypeError:
        return "-"


def counts(rows: list[dict]) -> dict:
    out = {s: 0 for s in ("completed", "diverged", "failed", "running", "stopped")}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def json_runs(rows: list[dict], extra: tuple[str, ...] = ()) -> list[dict]:
    """The runs as --json lists them; the other sweep axes (lr, optimizer, bn, h_rule, ...) too,
    where they vary among these runs, so a script can tell the runs apart."""
    axes = tuple(f.name for f in AXES if f.name not in ("depth", "h", "seed", *extra)
                 and len({json_value(r.get(f.name)) for r in rows}) > 1)
    keys = ("run_id", "dataset", "depth", "h", "seed", *extra, *axes, "status", "final_test_acc",
            "best_test_acc", "epochs_done", "params", "seconds")
    return [{k: json_value(r.get(k)) for k in keys} for r in rows]


def print_sweep_summary(out: Console, rows: list[dict], groups, recs: list[dict], store: Path, seconds: float) -> None:
    """Per dataset, depth and training noise: each h's completed / diverged / failed runs and the
    median final test accuracy; the h that `report` recommends is marked (report.recommend)."""
    n = counts(rows)
    out.print(f"robustres sweep: {len(rows)} runs in {seconds:.1f}s: {n['completed']} completed, "
              f"{n['diverged']} diverged, {n['failed']} failed; store {store}")
    by_block = {(r["dataset"], r["protocol"], r["depth"], r["train_noise"]): r for r in recs}
    for block, g in groups.groupby(["dataset", "protocol", "depth", "train_noise"], sort=False):
        dataset, protocol, depth, noise = block
        axes = g["axes"].iloc[0] if "axes" in g else {}
        title = f"{dataset} depth {depth}" + (f", training noise {noise:g}" if noise else "") + \
            (f", {axes_text(axes)}" if axes else "")
        table = Table(title=title)
        for col in ("h", "runs", "completed", "diverged", "failed", "median final test %", "95 % CI"):
            table.add_column(col, justify="right")
        for r in g.sort_values("h").itertuples():
            mark = " <- recommended" if by_block[block]["h"] == r.h else ""
            table.add_row(f"{r.h:g}", str(r.runs), str(r.completed), str(r.diverged), str(r.failed),
                          pct(r.median) + mark, interval(r.ci_low, r.ci_high))
        out.print(table)
        if by_block[block]["h"] is None:  # say why nothing is marked
            out.print(f"no best h: {by_block[block]['reason']} (robustres report --min-seeds N)")


def print_plan(plan: dict) -> None:
    out = console()
    table = Table(title=f"robustres sweep --dry-run: {plan['runs_total']} runs, {plan['runs_done']} done, "
                        f"{plan['runs_todo']} to do, in {len(plan['packs'])} pack(s); nothing trained")
    # the per-model hyperparameters and the fields that split packs, where they vary: a column each
    packs = plan["packs"]
    extra = [name for name in ("lr", "momentum", "weight_decay", "h_rule")
             if any(len(p.get(name) or ()) > 1 for p in packs) or len({tuple(p.get(name) or ()) for p in packs}) > 1]
    split = sorted({name for p in plan["packs"] for name in p.get("split_by") or {} if name != "depth"})
    for col in ("#", "dataset", "depth", "K", "h", "seeds", "noise", *extra, *split, "epochs", "device", "cost"):
        table.add_column(col, justify="left" if col in ("dataset", "h", "seeds", "noise", "device") else "right")
    for i, p in enumerate(plan["packs"], 1):
        epochs = f"{p['start_epoch']}->{p['epochs']}" if p["start_epoch"] else str(p["epochs"])
        table.add_row(str(i), p["dataset"], str(p["depth"]), str(p["k"]), short_list(p["h"]), short_list(p["seeds"]),
                      short_list(p["train_noise"]), *[short_list(p[name]) for name in extra],
                      *[axis_value(p["split_by"].get(name, "")) for name in split], epochs, p["device"],
                      flop_text(p["tflop"] * 1e12))
    out.print(table)
    for line in plan.get("splits") or []:
        out.print(line, soft_wrap=True)
    total = sum(p["tflop"] for p in plan["packs"])
    out.print(f"estimated training cost {flop_text(total * 1e12)} (3x forward multiply-adds per image and epoch); "
                  f"pack size {plan['pack_size']}; store {plan['store']}")
    out.print(wall_time_text(plan["wall_time"]), soft_wrap=True)
    for warning in plan["warnings"]:
        out.print(f"warning: {warning}")


def wall_time_text(wall: dict) -> str:
    """The dry run's time estimate as one line: a range (the measured rates' spread), what it assumes."""
    if wall["seconds"] is None:
        return "estimated wall time: unknown, " + "; ".join(wall["rates"]) if wall["rates"] else \
            "estimated wall time: nothing to train"
    low, high = wall["seconds"]
    part = "" if wall["estimated"] == wall["of"] else f" for {wall['estimated']} of {wall['of']} (the rest: unknown)"
    return (f"estimated wall time {duration(low)} to {duration(high)}{part}: the spread of the rates measured on "
            f"{'; '.join(wall['rates'])}")


def duration(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.1f} s"


def flop_text(x: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= scale:
            return f"{x / scale:,.1f} {unit}"
    return f"{x / 1e6:,.1f} MFLOP"


def short_list(values: list) -> str:
    text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return text if len(text) <= 40 else text[:37] + "..."


def json_value(v):
    """A value as JSON takes it: NaN and infinities become null (JSON has neither: Python would
    print `NaN` and `Infinity`, which strict parsers refuse), inside lists and mappings too."""
    if isinstance(v, dict):
        return {k: json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):  # numpy's float64 is a float too
        return None
    return v


def dumps(obj) -> str:
    """Every command's JSON output: strict JSON whatever the values (no NaN or Infinity), indented."""
    return json.dumps(json_value(obj), indent=2, allow_nan=False, default=_plain)


def _plain(v):
    """numpy scalars, which json does not know, as Python's."""
    if hasattr(v, "item"):
        return json_value(v.item())
    raise TypeError(f"{type(v).__name__} is not JSON")


def console() -> Console:
    # Wide enough for the tables when the output goes to a file or a CI log.
    return Console() if sys.stdout.isatty() else Console(width=120)


def print_dry_run(described: list[dict]) -> None:
    out = console()
    table = Table(title=f"robustres train --dry-run: {len(described)} run(s), nothing trained")
    for col in ("run_id", "dataset", "model", "depth", "h", "seed", "epochs", "batch", "lr", "params", "MFLOPs/img"):
        table.add_column(col, justify="left" if col in ("run_id", "dataset", "model") else "right")
    for r in described:  # "?": unknown without the data (see data_note)
        params = "?" if r["params"] is None else f"{r['params']:,}"
        flops = "?" if r["flops_per_image"] is None else f"{r['flops_per_image'] / 1e6:.2f}"
        table.add_row(r["run_id"] or "?", r["dataset"], r["model"], str(r["depth"]), f"{r['h']:g}", str(r["seed"]),
                      str(r["epochs"]), str(r["batch_size"]), f"{r['lr']:g}", params, flops)
    out.print(table)
    first = described[0]
    out.print(f"device {first['device']}, store {first['store']}, data {first['data_dir']}")
    out.print(wall_time_text(wall_time([r["estimate"] for r in described])), soft_wrap=True)
    if first.get("data_note"):
        out.print(f"note: {first['data_note']}", soft_wrap=True)


def print_train_summary(out: Console, rows: list[dict], store: Path, seconds: float) -> None:
    table = Table(title=f"robustres train: {len(rows)} run(s) in {seconds:.1f}s, store {store}")
    columns = ("run_id", "dataset", "depth", "h", "seed", "status", "final test %", "best test %", "epochs", "seconds")
    for col in columns:
        table.add_column(col, justify="left" if col in ("run_id", "dataset", "status") else "right")
    for r in rows:
        epochs = f"{r['epochs_done']}/{r['epochs']}"
        table.add_row(r["run_id"], r["dataset"], str(r["depth"]), f"{r['h']:g}", str(r["seed"]), r["status"],
                      pct(r.get("final_test_acc")), pct(r.get("best_test_acc")), epochs,
                      f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-")
    out.print(table)
    for r in rows:
        if r["status"] in ("diverged", "failed"):
            out.print(f"{r['run_id']} h={r['h']:g}: {status_text(r)}")



def records(df) -> list[dict]:
    return [{k: json_value(v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def interval(low, high) -> str:
    return "-" if _isna(low) else f"{100 * low:.1f}-{100 * high:.1f}"


def report_json(groups, recs, warnings, files, edges=(), verdicts=()) -> dict:
    """Schema version 3 (docs/json.md): groups with their intervals and extra axes, recommendations
    as sets, the stable region's edges and the verdicts on them."""
    return {"schema_version": 3, "groups": records(groups), "recommendations": [
        {k: json_value(v) for k, v in r.items()} for r in recs], "edges": [json_value(e) for e in edges],
        "edge_verdicts": [json_value(v) for v in verdicts], "warnings": warnings,
        "figures": [str(f) for f in files]}


def report_csv(groups) -> str:
    """One row per group; its extra axes as columns `axis_<field>` (empty where a group lacks one)."""
    frame = groups.drop(columns="axes")
    names = list(dict.fromkeys(k for axes in groups["axes"] for k in axes))
    for name in names:
        frame[f"axis_{name}"] = [axes.get(name) for axes in groups["axes"]]
    return frame.to_csv(index=False)


def _place(rec: dict) -> str:
    """A recommendation's place: dataset, depth, the extra axes' values."""
    axes = rec.get("axes") or {}
    return f"{rec['dataset']}, depth {rec['depth']}" + (f", {axes_text(axes)}" if axes else "")


def report_markdown(groups, recs, warnings, verdicts=()) -> str:
    metric = groups.metric.iloc[0] if len(groups) else "final"
    lines = [f"| dataset | protocol | depth | noise | h | runs | completed | diverged | failed | stopped | median "
             f"{metric} % | CI | IQM % | diverged rate (CI) | label |", "|---" * 15 + "|"]
    for r in groups.itertuples():
        lines.append(f"| {r.dataset} | {r.protocol} | {r.depth} | {r.train_noise:g} | {r.h:g} | {r.runs} | "
                     f"{r.completed} | {r.diverged} | {r.failed} | {getattr(r, 'stopped', 0)} | {pct(r.median)} | "
                     f"{interval(r.ci_low, r.ci_high)} | {pct(r.iqm)} | {rate_text(r)} | {r.label} |")
    lines.append("")
    for rec in recs:
        lines.append(f"- **{_place(rec)}**: {rec['reason']}")
    lines += [f"- stable region: {v['text']}" for v in verdicts]
    lines += [f"- warning: {w}" for w in warnings]
    return "\n".join(lines)


def print_report(groups, recs, warnings, verdicts=()) -> None:
    out = console()
    by_block = {(r["dataset"], r["protocol"], r["depth"], r["train_noise"]): r for r in recs}
    for (dataset, protocol), g in groups.groupby(["dataset", "protocol"], sort=False):  # axis values in order
        noisy = g.train_noise.nunique() > 1 or (g.train_noise != 0).any()
        metric, level = g.metric.iloc[0], level_label(g.level.iloc[0])
        axes = g["axes"].iloc[0] if "axes" in g else {}
        table = Table(title=f"robustres report: {dataset}" + (f", {axes_text(axes)}" if axes else ""),
                      caption=f"metric: {metric} ({METRIC_TEXT[metric]}); CI: {level} % over seeds, test-set noise "
                              "included; diverged: rate of finished runs, Wilson CI")
        stops = "stopped" in g and bool((g.stopped > 0).any())  # a search's store: its cut runs, counted apart
        cols = ["depth"] + (["noise"] if noisy else []) + ["h", "runs", "done", "div", "fail"] + (
            ["stop"] if stops else []) + [f"median {metric} %", f"{level} % CI", "IQM %", "diverged", "label"]
        for col in cols:
            table.add_column(col, justify="left" if col == "label" else "right")
        last = None
        for r in g.itertuples():
            block = (r.dataset, r.protocol, r.depth, r.train_noise)
            if last is not None and block != last:
                table.add_section()
            last = block
            label = r.label + (" <- recommended" if r.label == "best" else "")
            table.add_row(str(r.depth), *([f"{r.train_noise:g}"] if noisy else []), f"{r.h:g}", str(r.runs),
                          str(r.completed), str(r.diverged), str(r.failed), *([str(r.stopped)] if stops else []),
                          pct(r.median),
                          interval(r.ci_low, r.ci_high), pct(r.iqm), rate_text(r), label,
                          style="bold" if r.label == "best" else None)
        out.print(table)
        for block, rec in by_block.items():
            if block[:2] != (dataset, protocol):
                continue
            where = f"depth {block[2]}" + (f", noise {block[3]:g}" if block[3] else "")
            line = f"{where}: {rec['reason']}"
            vs = rec.get("vs_h1")
            if vs:
                diff = "" if _isna(vs["median_diff"]) else f"median difference {100 * vs['median_diff']:+.1f} points, "
                line += (f". Against h=1 over {vs['seeds']} paired seeds: {diff}P(better) {vs['p_improvement']:.2f} "
                         f"(permutation p={vs['permutation_p']:.2f}; a divergence scores 0)")
            out.print(line)
    for v in verdicts:
        out.print(f"stable region: {v['text']}")
    for w in warnings:
        out.print(f"warning: {w}")


METRIC_TEXT = {"final": "test accuracy after the last epoch", "best": "the best epoch's test accuracy, as the "
                                                                      "paper reports"}


def rate_text(r) -> str:
    if _isna(r.diverged_rate):
        return "-"
    return f"{100 * r.diverged_rate:.0f} % ({100 * r.diverged_low:.0f}-{100 * r.diverged_high:.0f})"


def _isna(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))



def size_text(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024




def print_doctor(info: dict) -> None:
    out = console()
    out.print(" ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None and k != "platform"))
    out.print(f"platform {info['versions']['platform']}")
    for d in info["devices"]:
        free = f", {size_text(d['free_bytes'])} free" if d["free_bytes"] is not None else ""
        out.print(f"device {d['device']}: {d['name']}, {d['cores']} cores/SMs, {size_text(d['memory_bytes'])} "
                  f"memory{free}")
    st = info["store"]
    if "error" in st:
        out.print(f"store {st['path']}: [red]{st['error']}[/red]")
    elif not st["exists"]:
        out.print(f"store {st['path']}: not created yet")
    else:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(st["by_status"].items())) or "no runs"
        damaged = st.get("damaged_rows", {})
        kinds = f" ({', '.join(f'{n} {kind}' for kind, n in damaged.items())})" if damaged else ""
        out.print(f"store {st['path']}: {size_text(st['bytes'])} in {st['files']} files, {st['runs']} runs "
                  f"({statuses}), {st['unreadable_files']} unreadable files, {sum(damaged.values())} damaged "
                  f"rows left out{kinds}, {st['runs_being_trained']} runs being trained now")
        if st.get("files_with_duplicate_rows"):
            out.print(f"  {st['files_with_duplicate_rows']} run file(s) holding a run's row more than once: each "
                      "run counted once (its row updated last)")
        for kind, found in st.get("files_left_out", {}).items():
            if found["count"]:
                more = f", ... ({found['count']} in all)" if found["count"] > len(found["examples"]) else ""
                out.print(f"  {found['count']} {LITTER_TEXT[kind]}: {', '.join(found['examples'])}{more}")
    dd = info["data"]
    folder = dd.get("is_folder", dd["exists"])  # None: there, but this user cannot look
    where = "" if folder or folder is None else " (a file, not a folder)" if dd["exists"] else " (does not exist)"
    out.print(f"data {dd['path']}{where}: " + ", ".join(f"{k} ({v})" for k, v in dd["datasets"].items()))


# What each kind of doctor.LITTER means, said where it is counted.
LITTER_TEXT = {
    "dangling_links": "link(s) to nothing, left out of every read",
    "truncated_checkpoints": "truncated checkpoint(s): a resumed run starts over, noise-eval skips a finished one",
    "missing_epochs_files": "run(s) with epochs done but no epochs file: no curves for them",
    "prev_checkpoints": ("previous checkpoint(s) (.pt.prev) from a pack's cut save: not damage, reads take the "
                         "right checkpoint and the next resume of those runs tidies them"),
    "stale_temporaries": ("temporary file(s) of killed writers: never read; the next train, sweep or search "
                          "deletes those of this host's dead writers, in every folder of the store"),
}


def print_noise_table(summary: dict, evaluated: int, store_root) -> None:
    """Accuracy on corrupted test inputs per (dataset, depth, h, kind) and level: the median over
    seeds with its interval (noise_stats.accuracy_table); then each h against h = 1 per level, seed
    by seed; with --propagation, the relative perturbation at the last block with its interval."""
    from ..noise_stats import paired_line

    rows = summary["accuracy"]
    level = level_label(rows[0]["level_of_ci"]) if rows else "95"
    table = Table(title=f"robustres noise-eval: {evaluated} run(s), accuracy on corrupted test inputs, % "
                        f"(median over seeds [{level} % interval: seeds and test-set noise]), store {store_root}")
    levels = sorted({r["level"] for r in rows})
    protocols = any(r.get("protocol") for r in rows)  # runs of other lrs, optimizers, ...: a column
    for col in ["dataset", *(["protocol"] if protocols else []), "depth", "h", "kind"] + [f"{lv:g}" for lv in levels]:
        table.add_column(col, justify="left" if col in ("dataset", "protocol", "kind") else "right")
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r.get("protocol", ""), r["depth"], r["h"], r["kind"]), {})[r["level"]] = r
    for (ds, protocol, dp, hv, kind), by_level in cells.items():
        table.add_row(ds, *([protocol] if protocols else []), str(dp), f"{hv:g}", kind,
                      *[_with_interval(by_level.get(lv)) for lv in levels])
    console().print(table)
    for r in summary["against_plain"]:
        where = f"{r['dataset']}{' ' + r['protocol'] if r.get('protocol') else ''} depth {r['depth']}"
        print(f"{where} {r['kind']} {r['level']:g}: {paired_line(r)}")
    if not summary["against_plain"] and rows:
        print("no h = 1 runs among these: nothing to compare the other h with seed by seed")
    last: dict[tuple, dict] = {}
    for r in summary.get("propagation", []):
        key = (r["dataset"] + (" " + r["protocol"] if r.get("protocol") else ""), r["depth"], r["h"], r["kind"],
               r["level"])
        if key not in last or r["block"] > last[key]["block"]:
            last[key] = r
    for (ds, dp, hv, kind, lv), r in last.items():
        print(f"{ds} depth {dp} h {hv:g} {kind} {lv:g}: relative perturbation at the last block, median "
              f"{r['median']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] over {r['seeds']} seed(s)"
              + (f" ({r['why_no_interval']})" if r["why_no_interval"] else ""))


def _with_interval(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{pct(r['median'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"


def print_presets(presets: list[tuple[str, str]]) -> None:
    """One line per packaged preset: its name (what --config takes) and its description."""
    width = max(len(name) for name, _ in presets)
    for name, description in presets:
        print(f"{name:<{width}}  {description}")


def axis_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)
