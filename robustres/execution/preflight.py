"""Pre-flight: what is checked and read before anything trains or is planned, in one pass.

Training (`train.train_runs`) and the dry run (`dryrun`) both begin with `preflight`, and it
writes nothing to the store; bad input found here is answered before anything is written:
1. --track-layers must name layers that every model has (answered first: it needs only one image);
2. each data source is opened once and its size checked against the largest --limit-train /
   --limit-test of the runs that read it (data.load_source); then read (training) or described (a
   dry run: read where it is there, no cache written; missing data leaves its numbers unknown);
3. every run gets its data's fingerprint, part of its id, and runs stored before fingerprints
   existed are matched (session.match_unfingerprinted);
4. training only: a class without training or test examples is warned about once per dataset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .. import data as D
from ..datasets import DATASETS, data_key
from ..errors import DataMissing
from ..models import init_model
from ..spec import Execution, RunSpec, SpecError
from ..units import weight_layers
from .session import match_unfingerprinted


@dataclass
class Ready:
    """The runs, fingerprinted, and what pre-flight learnt of their data."""

    runs: list[RunSpec]
    sources: dict[tuple, D.Source]  # data_key(spec, limited=False) -> the whole source, described
    datasets: dict[tuple, D.Data] = field(default_factory=dict)  # data_key(spec) -> loaded (training only)


def preflight(runs: list[RunSpec], execution: Execution, read: bool = True) -> Ready:
    """Open, check and read (read=True) or describe (a dry run) every source once; fingerprint the runs."""
    check_tracked_layers(runs, execution)
    sources, datasets = {}, {}
    for key, (first, limits) in largest_limits(runs).items():
        if read:
            whole = D.load_source(first, execution.data_dir, limits)
            sources[key] = D.Source(whole.fingerprint, whole.input_shape, whole.num_classes,
                                    len(whole.train_y), len(whole.test_y))
            for spec in runs:
                if data_key(spec, limited=False) == key and data_key(spec) not in datasets:
                    datasets[data_key(spec)] = D.limit(whole, spec.limit_train, spec.limit_test)
        else:
            sources[key] = D.describe_source(first, execution.data_dir, limits)
    runs = [spec.with_(data_fingerprint=sources[data_key(spec, limited=False)].fingerprint) for spec in runs]
    runs = match_unfingerprinted(runs, execution)
    if read:
        warn_class_gaps(runs, datasets)
    return Ready(runs, sources, datasets)


def largest_limits(runs: list[RunSpec]) -> dict[tuple, tuple[RunSpec, tuple]]:
    """Per data source (in order of first appearance): its first run and the largest --limit-train and
    --limit-test its runs ask for (None: no run limits it), the sizes the source must hold."""
    out: dict[tuple, tuple[RunSpec, tuple]] = {}
    for spec in runs:
        first, limits = out.get(data_key(spec, limited=False), (spec, (None, None)))
        limits = tuple(max((x for x in (had, new) if x is not None), default=None)
                       for had, new in zip(limits, (spec.limit_train, spec.limit_test)))
        out[data_key(spec, limited=False)] = (first, limits)
    return out


def check_tracked_layers(runs: list[RunSpec], execution: Execution) -> None:
    """--track-layers must name layers every model has (where the data is missing, a dry run cannot
    know an image folder's shape: training, which needs the data, checks it)."""
    if not execution.track_layers:
        return
    seen = set()
    for spec in runs:
        key = (spec.model, spec.depth, spec.width, spec.hidden, spec.bn, data_key(spec, limited=False))
        if key in seen:
            continue
        seen.add(key)
        try:
            shape, classes = D.peek(spec, execution.data_dir)
        except DataMissing:
            continue
        try:
            weight_layers(init_model(spec, classes, shape), execution.track_layers)
        except ValueError as exc:
            raise SpecError(f"--track-layers: {exc} (depth {spec.depth})") from None


def warn_class_gaps(runs: list[RunSpec], datasets: dict[tuple, D.Data]) -> None:
    """One warning line per dataset read from files with a class that has no training or no test
    examples (generated data are what their spec says)."""
    seen = set()
    for spec in runs:
        key = data_key(spec)
        if DATASETS[spec.dataset].generated or key in seen:
            continue
        seen.add(key)
        gap = D.class_gaps(datasets[key])
        if gap:
            print(f"warning: {gap}", file=sys.stderr)
