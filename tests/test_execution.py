"""One sweep through every executor stores the same rows, a failed pack's included: the drivers
only hand packs to the one pack runner (robustres/execution/runner.py), which builds every row."""

import json

import pytest

from robustres.engine import FAULT_SWITCH
from robustres.execution.plan import Pack
from robustres.store import EPOCHS_SCHEMA, RUNS_SCHEMA, Store

# Two depths x two h x two seeds, packs of two stepped in turn (each run computes as it would
# alone, so every executor gets the same numbers bit for bit), one CPU thread everywhere, and a
# checkpoint after every epoch (a failed run keeps the epochs before its failure).
SWEEP = ["sweep", "--dataset", "two-moons", "--depths", "2,3", "--h", "0.1,0.5", "--seeds", "2", "--epochs", "3",
         "--pack-size", "2", "--no-fuse", "--threads", "1", "--checkpoint-every", "0", "--json"]
EXECUTORS = {"local": [], "workers": ["--workers", "2"], "ray": ["--executor", "ray"]}
# Columns that honestly differ between two executions of the same runs: when they happened and how
# long they took. `device` names the executor (`ray:cpu` for a Ray task on a CPU: the driver's
# own `cpu` is not where it trained), so it is compared with that prefix taken off.
UNEQUAL = {"created_at", "updated_at", "seconds", "device"}
FAILS_AFTER = 1  # epochs the failing pack trains (and checkpoints) before its fault


def _sweep(cli, tmp_path, monkeypatch, executor: str) -> tuple[dict[str, dict], dict[str, list[dict]], str]:
    """The sweep through `executor` with one pack failing after its first epoch: (rows, epoch rows,
    the progress lines)."""
    store = tmp_path / executor
    code, out, err = cli(*SWEEP, "--dry-run", "--store", store)
    assert code == 0, err
    failing = json.loads(out)["packs"][0]["run_ids"]
    monkeypatch.setenv(FAULT_SWITCH, f"{failing[0]}:{FAILS_AFTER}")
    code, out, err = cli(*SWEEP, *EXECUTORS[executor], "--store", store)
    monkeypatch.delenv(FAULT_SWITCH)
    assert code == 1, err  # a run failed
    rows = {r["run_id"]: Store(store).get_run(r["run_id"]) for r in json.loads(out)["runs"]}
    assert sorted(r for r, row in rows.items() if row["status"] == "failed") == sorted(failing)
    epochs = {run_id: Store(store).epochs(run_id).to_dict("records") for run_id in rows}
    return rows, epochs, err


def _comparable(row: dict) -> dict:
    device = row["device"].removeprefix("ray:")
    return {k: row[k] for k in RUNS_SCHEMA.names if k not in UNEQUAL} | {"device": device}


def test_a_failed_pack_keeps_its_checkpointed_epochs_and_every_row_says_where_it_trained(cli, tmp_path,
                                                                                          monkeypatch):
    rows, epochs, err = _sweep(cli, tmp_path, monkeypatch, "local")
    failed = [row for row in rows.values() if row["status"] == "failed"]
    assert len(failed) == 2 and len(rows) == 8
    for row in failed:
        assert row["epochs_done"] == FAILS_AFTER == len(epochs[row["run_id"]])
        assert row["error"] == f"RuntimeError: injected fault ({FAULT_SWITCH}) after epoch {FAILS_AFTER}"
    assert {row["threads"] for row in rows.values()} == {1}
    assert {row["execution"] for row in rows.values()} == {"in turn"}
    assert "(in turn)" in err and "(fused)" not in err


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["workers", "ray"])
def test_every_executor_stores_the_rows_this_process_stores(cli, tmp_path, monkeypatch, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    local, local_epochs, _ = _sweep(cli, tmp_path, monkeypatch, "local")
    other, other_epochs, err = _sweep(cli, tmp_path, monkeypatch, executor)
    assert other.keys() == local.keys()
    for run_id, row in local.items():
        assert _comparable(other[run_id]) == _comparable(row), run_id
        # Epoch rows too, but for their wall time.
        strip = [{k: e[k] for k in EPOCHS_SCHEMA.names if k != "seconds"} for e in local_epochs[run_id]]
        assert [{k: e[k] for k in EPOCHS_SCHEMA.names if k != "seconds"} for e in other_epochs[run_id]] == strip
    assert {row["device"] for row in other.values()} == ({"ray:cpu"} if executor == "ray" else {"cpu"})
    assert "(in turn)" in err and "(fused)" not in err  # the progress lines say how each pack steps


def test_a_session_releases_its_claims_however_it_ends(tmp_path):
    """No driver handles claims: the session takes them and lets them go, on Ctrl-C too."""
    from robustres.execution.runner import Silent
    from robustres.execution.session import open_session
    from robustres.spec import make_execution, make_run_spec

    execution = make_execution({"store": str(tmp_path / "store")})
    runs = [make_run_spec(dataset="two-moons", depth=2, h=h, epochs=1) for h in (0.1, 0.5)]
    claims = tmp_path / "store" / "claims"
    with pytest.raises(KeyboardInterrupt):
        with open_session(runs, execution, Silent()) as session:
            assert [s.run_id for s in session.todo] == [s.run_id for s in runs]
            assert len(list(claims.glob("*.json"))) == 2  # held while the driver trains
            raise KeyboardInterrupt
    assert not list(claims.glob("*.json"))
    with open_session(runs, execution, Silent()) as session:
        session.done(Pack(tuple(runs[:1])), [])  # a pack stored: its claim goes at once
        assert [p.stem for p in claims.glob("*.json")] == [runs[1].run_id]
    assert not list(claims.glob("*.json"))


def test_an_exception_after_ctrl_c_is_the_interrupt_and_fails_no_run(cli, tmp_path, monkeypatch):
    """Ctrl-C can surface as another exception (an import cut short, a callback left half-way: a
    RecursionError was seen): once the command has received a signal, the pack's runs are not stored
    `failed`; the command ends as interrupted and a re-run resumes them."""
    import signal

    from robustres import engine, errors

    store = tmp_path / "store"
    code, out, err = cli(*SWEEP, "--dry-run", "--store", store)
    failing = json.loads(out)["packs"][0]["run_ids"]
    monkeypatch.setenv(FAULT_SWITCH, f"{failing[0]}:{FAILS_AFTER}")
    epochs = engine.epochs_to_train

    def signalled_then_faulty(*args):  # the CLI's handler noted a SIGINT; then the pack raises
        errors.SIGNALS.append(signal.SIGINT)
        yield from epochs(*args)

    monkeypatch.setattr(engine, "epochs_to_train", signalled_then_faulty)
    code, out, err = cli(*SWEEP, "--store", store)
    assert code == 130, err
    assert any(line.startswith("interrupted:") for line in err.splitlines()), err
    rows = Store(store).runs()
    assert "failed" not in set(rows.status) and set(failing) <= set(rows.run_id[rows.status == "running"])
