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
