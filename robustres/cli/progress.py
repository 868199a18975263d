"""Progress of training, as it happens: timestamped lines for logs and CI, or live bars on a
terminal. Both implement execution.runner.Reporter."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def label(spec) -> str:
    return f"{spec.dataset} depth {spec.depth} h {spec.h:g} seed {spec.seed}"


def _members(pack) -> str:
    hs = ",".join(dict.fromkeys(f"{s.h:g}" for s in pack.runs))
    seeds = ",".join(dict.fromkeys(str(s.seed) for s in pack.runs))
    first = pack.runs[0]
    return f"{first.dataset} depth {first.depth} h {hs} seed {seeds}"


class PlainReporter:
    """Timestamped lines, for logs and CI (stdout is not a terminal).

    A pack of one gets a line per (thinned) epoch; a bigger pack one line per epoch for all its
    runs, with the range of their losses and accuracies.
    """

    def __init__(self, stream, total_runs: int = 0):
        self.stream = stream
        self.total, self.done = total_runs, 0
        self.pack_label, self.buffer = "", []

    def _say(self, text: str) -> None:
        print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}", file=self.stream, flush=True)

    def pack_started(self, pack, index, total, fused):
        self._flush()
        how = "fused" if fused or pack.k == 1 else "in turn"
        more = f", resuming after epoch {pack.start_epoch}" if pack.start_epoch else ""
        self.pack_label = f"pack {index + 1}/{total}"
        self._say(f"{self.pack_label}: {pack.k} run(s) ({how}), {_members(pack)}, "
                  f"{pack.runs[0].epochs} epochs{more}")

    def step(self, done, total):
        pass

    def epoch(self, spec, r):
        if self.buffer and self.buffer[0][1].epoch != r.epoch:
            self._flush()
        self.buffer.append((spec, r))

    def _flush(self) -> None:
        if not self.buffer:
            return
        spec, r = self.buffer[0]
        records = [rec for _, rec in self.buffer]
        self.buffer = []
        # About ten lines per pack: the first epoch, every tenth of the run, and the last.
        every = max(1, spec.epochs // 10)
        if r.epoch != 1 and r.epoch % every and r.epoch != spec.epochs:
            return
        if len(records) == 1:
            self._say(f"{spec.run_id[:8]} {label(spec)}: epoch {r.epoch}/{spec.epochs} loss {r.train_loss:.4f} "
                      f"train {100 * r.train_acc:.1f}% test {100 * r.test_acc:.1f}% ({r.seconds:.1f}s)")
            return
        losses = [x.train_loss for x in records]
        accs = [100 * x.test_acc for x in records]
        self._say(f"{self.pack_label} epoch {r.epoch}/{spec.epochs}: {len(records)} runs, loss "
                  f"{min(losses):.3f}-{max(losses):.3f}, test {min(accs):.1f}-{max(accs):.1f}%")

    def run_finished(self, spec, row, reused):
        self._flush()
        self.done += 1
        count = f"[{self.done}/{self.total}] " if self.total > 1 else ""
        if reused:
            self._say(f"{count}{spec.run_id[:8]} {label(spec)}: {row['status']} in the store, not retrained (--force "
                      f"retrains)")
        else:
            self._say(f"{count}{spec.run_id[:8]} {label(spec)}: {status_text(row)}")


class RichReporter:
    """A live progress bar per pack: epochs done, with the range of its runs' test accuracy."""

    def __init__(self, console: Console, total_runs: int = 0, transient: bool = False, until: int | None = None):
        # transient, until: a search's round, which trains to its rung `until` and then prints its
        # decisions (so the bars go when it ends, and no line per diverged run).
        self.console, self.transient, self.until = console, transient, until
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
            transient=transient,  # a search's rounds: the bars go, the rung tables stay
        )
        self.task = None
        self.last: dict[str, float] = {}
        self.counts = {"diverged": 0, "failed": 0}
        self.overall = (self.progress.add_task("all runs", total=total_runs, stats="")
                        if total_runs > 1 else None)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def pack_started(self, pack, index, total, fused):
        if self.task is not None:
            self.progress.stop_task(self.task)
        how = "fused" if fused or pack.k == 1 else "in turn"
        desc = f"[{index + 1}/{total}] {pack.k} run(s), {how}: {_members(pack)}"
        end = pack.runs[0].epochs if self.until is None else min(self.until, pack.runs[0].epochs)
        desc += "" if self.until is None else f", to epoch {end}"
        self.task = self.progress.add_task(desc, total=end, completed=pack.start_epoch, stats="")
        self.last = {}

    def step(self, done, total):
        # Progress inside long epochs, as a fraction of an epoch.
        if self.task is not None and total > 20 and done % max(1, total // 20) == 0:
            task = self.progress.tasks[-1]
            self.progress.update(self.task, completed=int(task.completed) + done / total)

    def epoch(self, spec, r):
        self.last[spec.run_id] = r.test_acc
        low, high = min(self.last.values()), max(self.last.values())
        stats = f"test {100 * low:.1f}%" if low == high else f"test {100 * low:.1f}-{100 * high:.1f}%"
        self.progress.update(self.task, completed=r.epoch, stats=stats)

    def run_finished(self, spec, row, reused):
        if row["status"] in self.counts:
            self.counts[row["status"]] += 1
        if self.overall is not None:
            self.progress.update(self.overall, advance=1, stats=f"{self.counts['diverged']} diverged, "
                                                               f"{self.counts['failed']} failed")
        if self.transient:
            return
        if reused:
            if self.overall is None:
                self.progress.console.print(f"{label(spec)}: {row['status']} in the store, not retrained")
        elif row["status"] not in ("completed", "running"):  # running: paused at a search's rung
            self.progress.console.print(f"{spec.run_id[:8]} {label(spec)}: {status_text(row)}")


def status_text(row: dict) -> str:
    status = row["status"]
    if status == "completed":
        return f"completed: test {100 * row['final_test_acc']:.2f}% (best {100 * row['best_test_acc']:.2f}%)"
    if status == "diverged":
        return f"diverged at epoch {row['diverged_epoch']} step {row['diverged_step']}"
    if status in ("running", "stopped"):
        return f"{status} at epoch {row.get('epochs_done') or 0}"
    return f"{status}: {row.get('error') or ''}"
