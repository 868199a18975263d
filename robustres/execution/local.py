"""The driver that trains in this process: one dataset on the device at a time, pack by pack.

Only this driver measures the device (`--pack-size auto` fills it, tuning.auto_pack_size); the
others plan with the cap (plan.AUTO_PACK_CAP).
"""

from __future__ import annotations

from .. import data as D
from .. import tuning
from ..devices import resolve_device
from ..spec import Execution
from .plan import by_data, data_key, flops_in, pack_size, plan_group
from .runner import PackRunner, Reporter, engine_options
from .session import Session


def train_here(session: Session, execution: Execution, datasets: dict[tuple, D.Data], reporter: Reporter) -> None:
    """Train the session's runs in this process, a data group at a time."""
    device = resolve_device(execution.device)
    runner = PackRunner(session.store, device, engine_options(execution), reporter)
    todo = {spec.run_id for spec in session.todo}
    for group in by_data(session.requested):
        if not any(spec.run_id in todo for spec in group):
            continue
        key = data_key(group[0])
        data = datasets[key].to(device)
        measured = None if execution.pack_size else tuning.auto_pack_size(group, data, device, runner.options)
        packs = [pack for pack, _ in plan_group(group, pack_size(execution.pack_size, group, measured),
                                                session.epochs_done, flops_in(datasets), len(data.train_y),
                                                session.todo)]
        for index, pack in enumerate(packs):
            runner.announce(pack, index, len(packs))
            session.done(pack, runner.run(pack, data, datasets[key]))
        del data  # the next group's data takes its place on the device
