import json

import torch

from robustres.store import Store

SMOKE = __import__("pathlib").Path(__file__).resolve().parents[1] / "sweeps" / "ci-smoke.yaml"


def _tree(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_doctor_reports_versions_devices_store_and_data(cli, tmp_path):
    assert cli("sweep", "--config", SMOKE)[0] == 0
    (tmp_path / "data" / "pets" / "train").mkdir(parents=True)
    (tmp_path / "data" / "pets" / "test").mkdir()
    (tmp_path / "store" / "epochs" / "0123456789abcdef.parquet").write_bytes(b"garbage")
    before = _tree(tmp_path)
    code, out, err = cli("doctor", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert torch.__version__.startswith(info["versions"]["torch"])
    assert info["versions"]["robustres"] and "cuda" in info["versions"] and "cudnn" in info["versions"]
    assert info["devices"][0]["device"] == "cpu" and info["devices"][0]["memory_bytes"] > 0
    assert len(info["devices"]) == 1 + torch.cuda.device_count()
    store = info["store"]
    assert store["runs"] == 8 and sum(store["by_status"].values()) == 8 and store["bytes"] > 0
    assert store["runs_being_trained"] == 0
    assert info["data"]["datasets"]["imagefolder"] == str(tmp_path / "data" / "pets")
    assert "cifar10" not in info["data"]["datasets"]
    assert _tree(tmp_path) == before  # doctor writes nothing

    code, out, _ = cli("doctor")
    assert code == 0 and "8 runs" in out and "imagefolder" in out


def test_doctor_on_a_missing_and_on_an_unreadable_store(cli, tmp_path):
    code, out, _ = cli("doctor", "--json")
    assert code == 0 and json.loads(out)["store"]["exists"] is False
    (tmp_path / "store").write_text("a file where the store should be")
    code, out, err = cli("doctor")
    assert code == 1 and err.startswith("error: cannot read the store") and err.count("\n") == 1


def test_the_store_counts_damaged_files_as_unreadable(tmp_path):
    store = Store(tmp_path / "store")
    store.create()
    (store.runs_dir / "0123456789abcdef.parquet").write_bytes(b"garbage")
    assert store.describe()["unreadable_files"] == 1


def test_doctor_exits_one_with_one_line_on_any_store_it_cannot_read(cli, tmp_path, monkeypatch):
    assert cli("train", "--depth", "3", "--epochs", "1")[0] == 0

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self.root))

    monkeypatch.setattr(Store, "describe", denied)  # as a store in a folder of another user reads
    code, out, err = cli("doctor")
    assert code == 1, err
    assert err.startswith("error: cannot read the store at") and "PermissionError" in err and err.count("\n") == 1
