"""The execution layer: from a list of RunSpecs to one store row per run, on any executor.

    plan.py     runs -> packs (grouping, pack size, cost, cost order), for every driver and the dry run
    preflight.py  what is checked and read before anything trains or is planned (data, limits, ids)
    session.py  what the store holds, the claims this process takes, the store tidied for training
    runner.py   the one pack runner, and every row a run gets
    local.py    the driver that trains in this process
    workers.py  the driver over one worker process per device
    ray.py      the driver over Ray tasks
    dryrun.py   the plan priced, writing nothing
    train.py    `train_runs`: the pre-flight, pick the driver, wait for runs another process holds

Invariants every driver keeps, because only the runner and the session do these things:
- Every row (running, completed, diverged, stopped at a rung, failed) is built by `runner.py` from
  one base row: the run's config, model size, where it trained (`device`, `threads`) and versions.
  A driver only hands packs to the runner (or, training elsewhere, hands it what came back).
- The store follows the checkpoints: a `running` row's `epochs_done` is what the run's checkpoint
  holds, written after that checkpoint; a failed row keeps the epoch of the checkpoint the store
  holds, which is where the run resumes.
- A run is trained by at most one process: a session claims its runs before it trains them and
  releases every claim when it ends, however it ends (Ctrl-C included); no driver sees the claims.
- Nothing here prints to stdout: progress goes to the Reporter the caller passes.

This package's __init__ imports nothing, so that reaching one of its modules loads only that one.
"""
