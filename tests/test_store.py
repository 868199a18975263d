import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustres.atomic import HOST
from robustres.rows import spec_from_row
from robustres.snapshot import KEYS
from robustres.spec import make_run_spec
from robustres.store import RUNS_SCHEMA, Store, StoreError, config_columns


def row_for(spec, **extra):
    return {"run_id": spec.run_id, **config_columns(spec), "status": "completed", "final_test_acc": 0.9,
            "best_test_acc": 0.95, "best_epoch": 3, "epochs_done": 4, "seconds": 1.5, **extra}


def test_runs_and_epochs_round_trip(tmp_path):
    store = Store(tmp_path / "s")
    specs = [make_run_spec(dataset="cifar10", depth=20, h=h, limit_train=64) for h in (0.1, 1.0)]
    for spec in specs:
        store.put_run(row_for(spec))
    epochs = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "test_loss": 1.1, "test_acc": 0.4 + e / 100,
               "lr": 0.1, "seconds": 0.2} for e in (1, 2, 3)]
    store.put_epochs(specs[0].run_id, epochs)

    runs = store.runs()
    assert list(runs.columns) == RUNS_SCHEMA.names
    assert sorted(runs.h.tolist()) == [0.1, 1.0] and set(runs.status) == {"completed"}
    got = store.get_run(specs[1].run_id)
    assert got["milestones"] == "40,60" and got["limit_train"] == 64 and got["n_train"] is None
    assert got["schema_version"] == 1 and got["created_at"] and got["updated_at"]
    assert spec_from_row(got) == specs[1]  # every config field survives the store

    ep = store.epochs(specs[0].run_id)
    assert ep.epoch.tolist() == [1, 2, 3] and ep.test_acc.tolist() == pytest.approx([0.41, 0.42, 0.43])
    assert set(store.epochs().run_id) == {specs[0].run_id}
    assert store.runs(columns=["run_id", "h"]).shape == (2, 2)


def test_put_run_replaces_the_row_and_keeps_created_at(tmp_path):
    store = Store(tmp_path)
    spec = make_run_spec()
    store.put_run({**row_for(spec), "status": "running", "created_at": "2026-01-01T00:00:00+00:00"})
    store.put_run({**store.get_run(spec.run_id), "status": "completed"})
    assert len(store.runs()) == 1
    row = store.get_run(spec.run_id)
    assert row["status"] == "completed" and row["created_at"] == "2026-01-01T00:00:00+00:00"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    store = Store(tmp_path)
    spec = make_run_spec()
    store.put_run(row_for(spec, final_test_acc=0.5))
    before = (store.runs_dir / f"{spec.run_id}.parquet").read_bytes()

    def broken_write(table, where, **kwargs):
        where.write(b"PAR1 partial")  # half a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_run(row_for(spec, final_test_acc=0.99))
    assert (store.runs_dir / f"{spec.run_id}.parquet").read_bytes() == before
    assert [p.name for p in store.runs_dir.iterdir()] == [f"{spec.run_id}.parquet"]
    monkeypatch.undo()
    assert store.get_run(spec.run_id)["final_test_acc"] == 0.5


def test_readers_skip_damaged_files_with_a_warning(tmp_path, capsys):
    store = Store(tmp_path)
    spec = make_run_spec()
    store.put_run(row_for(spec))
    (store.runs_dir / "garbage.parquet").write_bytes(b"not parquet at all")
    (store.runs_dir / ".half-written.parquet.123.tmp").write_bytes(b"PAR1")
    runs = store.runs()
    assert runs.run_id.tolist() == [spec.run_id]
    assert "garbage.parquet" in capsys.readouterr().err


def test_empty_store_reads_as_empty_frames(tmp_path):
    store = Store(tmp_path / "nothing-here")
    assert store.runs().empty and list(store.runs().columns) == RUNS_SCHEMA.names
    assert store.epochs().empty and store.get_run("0" * 16) is None
    assert not (tmp_path / "nothing-here").exists()  # reading never creates the store


def test_unknown_columns_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown run columns"):
        Store(tmp_path).put_run({**row_for(make_run_spec()), "colour": "blue"})


def test_temporaries_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    store = Store(tmp_path)
    store.create()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = store.runs_dir / f".abc.parquet.{dead}.tmp"
    live = store.checkpoints_dir / f".abc.pt.{os.getpid()}.tmp"
    other = store.epochs_dir / ".notes.tmp"
    claim = store.root / "claims" / f".abc.json.{HOST}-{dead}.tmp"  # a search killed while claiming (issue 22)
    claim.parent.mkdir()
    # Another host's writer may be alive whatever its pid says here: a store shared between hosts.
    other_host = "0" * len(HOST) if HOST != "0" * len(HOST) else "1" * len(HOST)
    elsewhere = store.root / "claims" / f".abd.json.{other_host}-{dead}.tmp"
    for path in (stale, live, other, claim, elsewhere):
        path.write_bytes(b"partial")
    assert store.remove_stale_temporaries() == 2
    assert not stale.exists() and not claim.exists() and live.exists() and other.exists() and elsewhere.exists()


def test_the_read_snapshot_follows_every_change(tmp_path):
    store = Store(tmp_path)
    specs = [make_run_spec(seed=s) for s in range(3)]
    for spec in specs:
        store.put_run(row_for(spec, final_test_acc=0.5))
    assert len(store.runs()) == 3 and (tmp_path / ".snapshot" / "runs.parquet").exists()
    import time
    time.sleep(0.01)
    store.put_run(row_for(specs[0], final_test_acc=0.75))  # changed
    store.delete_run(specs[1].run_id)  # gone
    store.put_run(row_for(make_run_spec(seed=9)))  # new
    runs = Store(tmp_path).runs().set_index("run_id")
    assert len(runs) == 3 and specs[1].run_id not in runs.index
    assert runs.final_test_acc[specs[0].run_id] == 0.75
    (tmp_path / ".snapshot" / "runs.parquet").write_bytes(b"garbage")  # a damaged cache is only slower
    assert len(Store(tmp_path).runs()) == 3


@pytest.mark.parametrize("run_id", ["../../outside", "/etc/passwd", "ABCDEF0123456789", "0123", "x" * 16, ""])
def test_run_ids_that_are_not_hashes_never_become_paths(tmp_path, run_id):
    store = Store(tmp_path / "store")
    spec = make_run_spec()
    with pytest.raises(StoreError, match="not a run id"):
        store.put_run({**row_for(spec), "run_id": run_id})
    with pytest.raises(StoreError, match="not a run id"):
        store.checkpoint_path(run_id)
    with pytest.raises(StoreError, match="not a run id"):
        store.put_noise_evals(run_id, [])
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_row_naming_another_path_is_a_foreign_file_and_skipped(tmp_path, capsys):
    import pyarrow as pa

    store = Store(tmp_path / "store")
    spec = make_run_spec()
    store.put_run(row_for(spec))
    evil = {**row_for(spec), "run_id": "../../outside"}
    table = pa.Table.from_pylist([{k: evil.get(k) for k in RUNS_SCHEMA.names}], schema=RUNS_SCHEMA)
    pq.write_table(table, store.runs_dir / "0123456789abcdef.parquet")
    assert store.runs().run_id.tolist() == [spec.run_id]
    assert "0123456789abcdef.parquet: ForeignFile: rows of another run" in capsys.readouterr().err


def _snapshot_of(store_root):
    return pq.read_table(store_root / ".snapshot" / "runs.parquet")


def test_a_file_replaced_at_its_size_and_mtime_is_read_again(tmp_path):
    store = Store(tmp_path)
    spec = make_run_spec()
    store.put_run(row_for(spec, final_test_acc=0.5))
    path = tmp_path / "runs" / f"{spec.run_id}.parquet"
    before = path.stat()
    assert Store(tmp_path).runs().final_test_acc.tolist() == [0.5]  # now in the snapshot
    store.put_run(row_for(spec, final_test_acc=0.25))  # a new file renamed into place: a new inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    assert Store(tmp_path).runs().final_test_acc.tolist() == [0.25]


def test_a_snapshot_in_an_older_layout_is_rebuilt_not_misread(tmp_path):
    # Snapshots once kept (size << 24) | inode in one column, `_size`: such a snapshot, holding a
    # row the file no longer has, must be read from the files again and rewritten in KEYS' layout.
    store = Store(tmp_path)
    spec = make_run_spec()
    store.put_run(row_for(spec, final_test_acc=0.5))
    Store(tmp_path).runs()
    path, snap = tmp_path / "runs" / f"{spec.run_id}.parquet", _snapshot_of(tmp_path)
    st = path.stat()
    old = snap.drop_columns(["_bytes", "_inode", "_mtime"]).set_column(
        snap.schema.get_field_index("final_test_acc"), "final_test_acc", pa.array([0.125]))
    old = old.append_column("_size", pa.array([(st.st_size << 24) | (st.st_ino & 0xFFFFFF)], pa.int64()))
    old = old.append_column("_mtime", pa.array([st.st_mtime_ns], pa.int64()))
    pq.write_table(old.replace_schema_metadata(snap.schema.metadata), tmp_path / ".snapshot" / "runs.parquet")
    assert Store(tmp_path).runs().final_test_acc.tolist() == [0.5]
    assert [name for name, _ in KEYS] == _snapshot_of(tmp_path).schema.names[-4:]
