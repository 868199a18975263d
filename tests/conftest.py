import os

import pytest
import torch

# Two cores: keep torch from oversubscribing them when pytest runs alongside subprocesses.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `robustres ARGS...` in-process; return (exit code, stdout, stderr)."""
    from robustres.cli import main

    monkeypatch.setenv("ROBUSTRES_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("ROBUSTRES_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ROBUSTRES_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def train_cut_and_resumed(tmp_path):
    """A pack trained whole, and the same pack stopped after its second epoch (checkpointing every
    epoch) then resumed: returns (whole outcomes, resumed outcomes, whole's checkpoints, cut's)."""
    from robustres import engine
    from robustres.units import Options

    every_epoch, cpu = Options(checkpoint_seconds=0), torch.device("cpu")

    class Stop(Exception):
        pass

    def stop(i, record, saved):
        if record.epoch == 2 and i == len(record_holder) - 1:
            raise Stop

    record_holder: list = []

    def run(specs, data):
        record_holder[:] = specs
        whole_paths = [tmp_path / f"w{i}.pt" for i in range(len(specs))]
        whole = engine.train(specs, data, cpu, whole_paths, options=every_epoch)
        cut = [tmp_path / f"c{i}.pt" for i in range(len(specs))]
        with pytest.raises(Stop):
            engine.train(specs, data, cpu, cut, on_epoch=stop, options=every_epoch)
        return whole, engine.train(specs, data, cpu, cut, options=every_epoch), whole_paths, cut

    return run
