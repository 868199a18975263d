"""Issue 22: a store that trusts every row. Copies of a real (tiny) store, rows edited with pyarrow:
each damaged row is left out with one warning naming its file and the reason, never a traceback,
and the report reads as if its file were not there; doctor counts what it found, by kind."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustres.store import Store

TRAIN = ["train", "--dataset", "two-moons", "--depth", "3", "--h", "0.2,1", "--seed", "0,1,2,3", "--epochs", "2",
         "--milestones", "", "--n-train", "200", "--n-test", "200", "--json"]
DIVERGE = ["train", "--depth", "30", "--h", "20", "--epochs", "3", "--json"]  # diverges (test_cli)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A real store: 8 two-moons runs (h 0.2 and 1, 4 seeds each) and one diverged run."""
    from robustres.cli import main

    root = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ROBUSTRES_STORE", str(root / "store"))
        m.setenv("ROBUSTRES_DATA", str(root / "data"))
        m.setenv("ROBUSTRES_OFFLINE", "1")
        assert main(TRAIN) == 0 and main(DIVERGE) == 0
    return root / "store"


@pytest.fixture
def store(base, tmp_path) -> Path:
    shutil.copytree(base, tmp_path / "store")
    shutil.rmtree(tmp_path / "store" / ".snapshot", ignore_errors=True)
    return tmp_path / "store"


def run_file(store: Path, **where) -> Path:
    """The runs file of the (first) run whose row has these values."""
    rows = Store(store, write_cache=False).runs().to_dict(orient="records")
    (row, *_) = [r for r in rows if all(r[k] == v for k, v in where.items())]
    return store / "runs" / f"{row['run_id']}.parquet"


def edit(path: Path, table_change=None, **changes) -> None:
    """Rewrite a runs file with some of its row's values changed, as the issue's reporter did."""
    table = pq.read_table(path)
    if changes:
        rows = [{**r, **changes} for r in table.to_pylist()]
        table = pa.Table.from_pylist(rows, schema=table.schema)
    pq.write_table(table_change(table) if table_change else table, path)


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# (what is edited, the reason the warning gives); each damages one completed run at h = 1, seed 1
ROW_DAMAGE = {
    "acc NaN": (dict(final_test_acc=math.nan), "final_test_acc is NaN in a completed run"),
    "acc None": (dict(final_test_acc=None), "final_test_acc is missing in a completed run"),
    "acc inf": (dict(final_test_acc=math.inf), "final_test_acc is inf, not a fraction in [0, 1]"),
    "acc 1.5": (dict(final_test_acc=1.5), "final_test_acc is 1.5, not a fraction in [0, 1]"),
    "acc -0.2": (dict(final_test_acc=-0.2), "final_test_acc is -0.2, not a fraction in [0, 1]"),
    "best acc 2": (dict(best_test_acc=2.0), "best_test_acc is 2.0, not a fraction in [0, 1]"),
    "status weird": (dict(status="weird"), "status 'weird' is not one of running, completed"),
    "status COMPLETED": (dict(status="COMPLETED"), "status 'COMPLETED' is not one of"),
    "status null": (dict(status=None), "status None is not one of"),
    "h null": (dict(h=None), "h is None, not a finite number >= 0"),
    "h NaN": (dict(h=math.nan), "h is nan, not a finite number >= 0"),
    "h inf": (dict(h=math.inf), "h is inf, not a finite number >= 0"),
    "depth edited": (dict(depth=4), "(the config was changed)"),
    "seed of another run": (dict(seed=0), "(the config was changed)"),  # two rows for (3, 1, 0)
    "best epoch past the end": (dict(best_epoch=5), "best_epoch 5 is past the epochs done (2)"),
    "epochs done past the end": (dict(epochs_done=3), "epochs_done 3 is not between 0 and epochs (2)"),
}


def report(cli, store: Path, *args):
    return cli("report", "--store", store, *args)


@pytest.mark.parametrize("case", list(ROW_DAMAGE) + ["no final_test_acc column"])
def test_a_damaged_row_is_left_out_with_one_warning_as_if_its_file_were_gone(cli, store, tmp_path, case):
    path = run_file(store, h=1.0, seed=1)
    if case == "no final_test_acc column":  # an older schema
        edit(path, lambda t: t.drop(["final_test_acc"]))
        reason = "final_test_acc is missing in a completed run"
    else:
        edit(path, **ROW_DAMAGE[case][0])
        reason = ROW_DAMAGE[case][1]
    code, out, err = report(cli, store, "--format", "json")
    assert code == 0 and "Traceback" not in err, err
    (warning,) = warnings_of(err)
    assert warning.startswith(f"warning: skipping damaged run row in {path}: ") and reason in warning, warning
    damaged = strict_json(out)
    code, text, err = report(cli, store)
    assert code == 0 and warnings_of(err) == [warning] and "h=" in text
    # The answer is that of the store without the file: the row neither counts nor moves anything.
    path.unlink()
    code, out, _ = report(cli, store, "--format", "json")
    clean = strict_json(out)
    assert damaged["recommendations"] == clean["recommendations"] and damaged["groups"] == clean["groups"]
    assert sum(g["runs"] for g in damaged["groups"]) == 8


def test_every_format_reads_around_damaged_rows(cli, store, tmp_path):
    named = [run_file(store, h=h, seed=s) for h, s in ((1.0, 1), (1.0, 2), (0.2, 3))]
    edit(named[0], final_test_acc=math.nan)
    edit(named[1], lambda t: t.drop(["final_test_acc", "execution", "threads"]))  # an older schema
    edit(named[2], h=math.inf)  # once printed by --format json as `Infinity`
    for args in (["--format", "json"], ["--format", "csv"], ["--format", "markdown"], [], ["--metric", "best"],
                 ["--metric", "best", "--format", "json"], ["--html", tmp_path / "page.html"]):
        code, out, err = report(cli, store, *args)
        assert code == 0 and "Traceback" not in err, (args, err)
        assert len(warnings_of(err)) == 3 and all(str(p) in err for p in named), (args, err)
        if "json" in args:
            doc = strict_json(out)
            assert sum(g["runs"] for g in doc["groups"]) == 6
    assert (tmp_path / "page.html").stat().st_size > 0
    code, _, err = report(cli, store, "--depths", "4")  # no run matches: exit code 1, not a traceback
    assert code == 1 and "Traceback" not in err and "no runs" in err


def test_a_run_held_twice_counts_once(cli, store):
    path = run_file(store, h=1.0, seed=1)
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table]), path)
    code, out, err = report(cli, store, "--format", "json")
    assert code == 0 and f"{path} holds 2 rows of run" in err and "counted once" in err
    groups = {g["h"]: g for g in strict_json(out)["groups"] if g["depth"] == 3}
    assert groups[1.0]["completed"] == 4 and groups[0.2]["completed"] == 4
    code, again, err = report(cli, store, "--format", "json")  # through the snapshot: said again
    assert code == 0 and f"{path} holds 2 rows of run" in err and again == out
    shutil.copy(path, store / "runs" / "0123456789abcdef.parquet")  # a copy under another name
    code, out, err = report(cli, store, "--format", "json")
    assert code == 0 and "0123456789abcdef.parquet: ForeignFile: rows of another run" in err
    assert sum(g["runs"] for g in strict_json(out)["groups"]) == 9


def test_a_row_dropped_for_its_status_is_said_not_silently_lost(cli, store):
    # The diverged run edited to `weird`: it was silently dropped, and its h read as stable.
    path = run_file(store, status="diverged")
    edit(path, status="weird")
    code, out, err = report(cli, store, "--format", "json", "--depths", "30")
    assert code == 1 and "no runs" in err and f"skipping damaged run row in {path}: status 'weird'" in err


def test_a_diverged_row_must_say_when(cli, store):
    path = run_file(store, status="diverged")
    older = run_file(store, h=1.0, seed=1)
    edit(path, diverged_epoch=None)
    edit(older, lambda t: t.drop(["data_fingerprint"]))  # stored before fingerprints: still its run id
    code, out, err = report(cli, store, "--format", "json")
    assert code == 0 and warnings_of(err) == [
        f"warning: skipping damaged run row in {path}: diverged_epoch is None in a diverged run (1 to 3)"]
    assert sum(g["runs"] for g in strict_json(out)["groups"]) == 8


def test_a_row_of_the_id_scheme_before_precision_is_named_as_such(cli, store):
    from robustres.rows import id_before_precision, spec_from_row

    path = run_file(store, h=1.0, seed=1)
    old_id = id_before_precision(spec_from_row(pq.read_table(path).to_pylist()[0]))
    # As a store of 2026-11-26 wrote it: no precision, no fingerprint, the id hashed without them.
    edit(path, lambda t: t.drop(["precision", "data_fingerprint"]), run_id=old_id)
    path.rename(path.with_name(f"{old_id}.parquet"))
    code, out, err = report(cli, store, "--format", "json")
    assert code == 0 and warnings_of(err) == [
        f"warning: skipping damaged run row in {path.with_name(f'{old_id}.parquet')}: its run id is of an older "
        "id scheme (stored before 2026-11-27, when precision became part of a run's identity); train the run "
        "again to get it back"]
    edit(path.with_name(f"{old_id}.parquet"), seed=2)  # the same row edited as well: that is what it says
    assert "(the config was changed)" in report(cli, store, "--format", "json")[2]


def test_a_config_edited_row_is_not_evaluated_as_another_run(cli, store):
    edit(run_file(store, h=1.0, seed=1), depth=4)
    code, out, err = cli("noise-eval", "--store", store, "--dataset", "two-moons", "--depths", "4", "--levels", "0",
                         "--json")
    assert "Traceback" not in err and "(the config was changed)" in err
    assert code != 0 or strict_json(out)["noise_evals"] == []


def test_an_old_snapshot_of_unchecked_rows_is_read_again(store, monkeypatch):
    from robustres import store as S

    path = run_file(store, h=1.0, seed=1)
    edit(path, final_test_acc=1.5)
    with monkeypatch.context() as m:  # a robustres from before the checks caches the row as it is
        m.setattr(S, "row_problem", lambda row: None)
        assert len(Store(store).runs()) == 9
    snap = store / ".snapshot" / "runs.parquet"
    pq.write_table(pq.read_table(snap).replace_schema_metadata(None), snap)  # and it knew no mark
    reread = Store(store)
    assert path.stem not in set(reread.runs().run_id) and str(path) in reread.warnings[0]
    assert len(Store(store).runs()) == 8  # the snapshot written now holds only checked rows


def test_doctor_counts_each_kind_and_names_the_files(cli, store, tmp_path):
    edit(run_file(store, h=1.0, seed=1), final_test_acc=math.nan)
    edit(run_file(store, h=1.0, seed=2), status="COMPLETED")
    edit(run_file(store, h=0.2, seed=1), depth=4)
    duplicated = run_file(store, h=0.2, seed=2)
    pq.write_table(pa.concat_tables([pq.read_table(duplicated)] * 2), duplicated)
    link = store / "runs" / "feedfacefeedface.parquet"
    link.symlink_to(tmp_path / "nowhere.parquet")
    cut_id = run_file(store, h=0.2, seed=0).stem
    checkpoint = store / "checkpoints" / f"{cut_id}.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    kept_id = run_file(store, h=0.2, seed=3).stem
    (store / "epochs" / f"{kept_id}.parquet").unlink()
    shutil.copy(store / "checkpoints" / f"{kept_id}.pt", store / "checkpoints" / f"{kept_id}.pt.prev")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = store / "runs" / f".{kept_id}.parquet.{dead}.tmp"
    stale.write_bytes(b"PAR1")
    code, out, err = cli("doctor", "--store", store, "--json")
    assert code == 0, err
    info = strict_json(out)["store"]
    assert info["unreadable_files"] == 1 and info["runs"] == 6  # 9, less 3 damaged (the link is no run)
    assert info["damaged_rows"] == {"accuracy": 1, "status": 1, "run id": 1}  # left out
    assert info["files_with_duplicate_rows"] == 1  # kept: its run counts once
    left = {k: v["count"] for k, v in info["files_left_out"].items()}
    assert left == {"dangling_links": 1, "truncated_checkpoints": 1, "missing_epochs_files": 1,
                    "prev_checkpoints": 1, "stale_temporaries": 1}
    assert info["files_left_out"]["dangling_links"]["examples"] == [str(link)]
    code, out, err = cli("doctor", "--store", store)
    assert code == 0 and "1 unreadable files, 3 damaged rows left out (1 accuracy, 1 run id, 1 status)" in \
        " ".join(out.split())
    assert "1 run file(s) holding a run's row more than once: each run counted once" in " ".join(out.split())
    for path in (link, checkpoint, stale):
        assert str(path) in out.replace("\n", "")
    assert "not damage" in out and str(link) in err


def test_doctor_says_a_data_dir_that_is_a_file_is_a_file(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    code, out, _ = cli("doctor", "--data-dir", tmp_path / "notes.txt")
    assert code == 0 and "notes.txt (a file, not a folder)" in out and "does not exist" not in out
    code, out, _ = cli("doctor", "--data-dir", tmp_path / "notes.txt", "--json")
    data = strict_json(out)["data"]
    assert data["exists"] is True and data["is_folder"] is False


SEARCH = ["search", "--dataset", "two-moons", "--depths", "30", "--h", "0.1,1,20", "--seeds", "3", "--epochs", "3",
          "--milestones", "", "--n-train", "200", "--n-test", "200", "--budget", "1", "--json"]


def test_search_reads_around_damaged_rows(cli, tmp_path):
    code, out, err = cli(*SEARCH)
    assert code == 0, err
    store = tmp_path / "store"
    rows = Store(store).runs()
    completed = rows[rows.status == "completed"].run_id.iloc[0]
    edit(store / "runs" / f"{completed}.parquet", final_test_acc=math.nan)
    diverged = rows[rows.status == "diverged"].run_id
    if len(diverged):
        edit(store / "runs" / f"{diverged.iloc[0]}.parquet", diverged_epoch=None)
    code, out, err = cli(*SEARCH)
    assert code == 0 and "Traceback" not in err, err
    assert f"{completed}.parquet: final_test_acc is NaN" in err
    assert strict_json(out)["recommendations"]
    assert len(diverged)  # h = 20 diverged: one of its rows was damaged too


def test_every_commands_json_is_strict_json_whatever_the_values():
    """render.dumps is how every command prints JSON (train, sweep, search, noise-eval, report,
    doctor): NaN and infinities, bare or numpy, nested or not, become null."""
    import numpy as np

    from robustres.cli import render

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    value = {"a": float("nan"), "b": [np.float64("inf"), {"c": -np.inf}], "d": np.int64(3), "e": (1.5, None)}
    assert json.loads(render.dumps(value), parse_constant=refuse) == {"a": None, "b": [None, {"c": None}], "d": 3,
                                                                      "e": [1.5, None]}
    for path in (Path(__file__).resolve().parents[1] / "robustres" / "cli").glob("*.py"):
        assert "json.dumps(" not in path.read_text() or path.name == "render.py", path.name


def test_a_damaged_file_is_remembered_by_the_snapshot_not_read_again_and_still_warned(store):
    """A damaged file left out once is recorded in the runs snapshot with its size and mtime: later
    reads warn again without reading it and do not rewrite the cache (a reader should not write)."""
    damaged = run_file(store, h=1.0, seed=1)
    edit(damaged, final_test_acc=math.nan)
    first = Store(store).runs()
    snap = store / ".snapshot" / "runs.parquet"
    written = snap.stat().st_mtime_ns, snap.stat().st_ino
    reader = Store(store)
    again = reader.runs()
    assert (snap.stat().st_mtime_ns, snap.stat().st_ino) == written  # not rewritten
    assert f"skipping damaged run row in {damaged}: final_test_acc is NaN in a completed run" in reader.warnings
    assert again.equals(first) and damaged.stem not in set(again.run_id)
    edit(damaged, final_test_acc=0.5)  # repaired: a new file, read again
    assert damaged.stem in set(Store(store).runs().run_id)


def test_rows_come_in_one_order_whatever_the_cache_held(store):
    """Rows from the snapshot and rows read afresh come in file-name order, so that the same store
    gives the same bits of every statistic on every read."""
    cold = Store(store, write_cache=False).runs()
    Store(store).runs()  # writes the snapshot
    changed = run_file(store, h=0.2, seed=0)
    edit(changed)  # rewritten: it alone is read afresh, after the cached rows
    warm = Store(store).runs()
    assert list(warm.run_id) == sorted(warm.run_id) == list(cold.run_id)


def test_a_damaged_row_is_warned_about_once_a_command(cli, store):
    """A sweep reads a damaged row several times (survey, claims, the pack runner): one warning."""
    damaged = run_file(store, h=1.0, seed=1)
    edit(damaged, status="weird")
    code, _, err = cli(*TRAIN, "--store", store)
    assert code == 0, err
    assert sum(str(damaged) in line for line in warnings_of(err)) == 1, err
    code, _, err = cli("report", "--store", store)  # the next command warns again
    assert sum(str(damaged) in line for line in warnings_of(err)) == 1, err
