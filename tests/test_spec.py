import pytest

from robustres.axes import parse_floats, parse_ints
from robustres.spec import RunSpec, SpecError, make_run_spec


def test_protocol_defaults_follow_the_paper():
    cifar = make_run_spec(dataset="cifar10")
    assert (cifar.model, cifar.epochs, cifar.batch_size, cifar.lr, cifar.momentum) == ("resnet", 80, 128, 0.1, 0.9)
    assert cifar.milestones == (40, 60) and cifar.gamma == 0.1 and cifar.weight_decay == 0.0 and cifar.bn
    text = make_run_spec(dataset="ag-news", depth=49)
    assert (text.model, text.epochs, text.lr, text.milestones, text.batch_size) == ("vdcnn", 15, 0.1, (), 64)
    moons = make_run_spec(dataset="two-moons")
    assert moons.model == "mlp" and moons.width == 2 and not moons.bn


def test_run_id_is_stable_and_changes_with_every_result_field():
    a = make_run_spec(dataset="two-moons", h=0.1, seed=3)
    assert a.run_id == make_run_spec(dataset="two-moons", h=0.1, seed=3).run_id
    assert len(a.run_id) == 16 and all(c in "0123456789abcdef" for c in a.run_id)
    changed = {a.with_(h=0.2).run_id, a.with_(seed=4).run_id, a.with_(depth=11).run_id,
               a.with_(lr=0.05).run_id, a.with_(train_noise=0.1).run_id, a.with_(milestones=(5,)).run_id}
    assert len(changed) == 6 and a.run_id not in changed


def test_run_spec_round_trips_through_a_dict():
    spec = make_run_spec(dataset="cifar10", depth=56, h=0.5, seed=2, limit_train=100)
    assert RunSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="mnist"), "unknown dataset 'mnist'"),
    (dict(h=float("nan")), "h must be finite"),
    (dict(h=-0.1), "h must be >= 0"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(batch_size=-5), "batch size must be >= 1"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(momentum=1.0), "momentum must be < 1"),
    (dict(milestones=(60, 40)), "milestones must be strictly increasing"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(train_noise=1.5), "train noise is a level in [0, 1]"),
    (dict(dataset="cifar10", noise_kind="char-swap"), "does not apply to image data"),
    (dict(dataset="cifar10", depth=100), "nearest: 98, 104"),
    (dict(dataset="cifar10", n_train=10), "--n-train applies only to generated datasets"),
    (dict(dataset="cifar10", moons_noise=0.1), "--moons-noise applies only"),
    (dict(dataset="cifar10", width=4), "--width and --hidden apply only"),
    (dict(dataset="cifar10", synthetic_like="ag-news"), "--like applies only"),
    (dict(dataset="synthetic", synthetic_like="mnist"), "unknown --like 'mnist'"),
    (dict(seed=-1), "seed must be >= 0"),
])
def test_bad_values_give_one_line_errors(kwargs, message):
    with pytest.raises(SpecError) as err:
        make_run_spec(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_list_parsers():
    assert parse_floats("--h", "0.1, 1,2e-3") == [0.1, 1.0, 0.002]
    assert parse_ints("--seed", "1,2,3") == [1, 2, 3]
    assert parse_ints("--milestones", "none", allow_empty=True) == []
    for bad in ("", "0.1,,1", "abc"):
        with pytest.raises(SpecError):
            parse_floats("--h", bad)
    with pytest.raises(SpecError, match="'x' is not a whole number"):
        parse_ints("--seed", "1,x")


# ---------------------------------------------------------------------------------------------
# The tables: one edit adds an option (and an axis); the dataset table feeds every default
# ---------------------------------------------------------------------------------------------

FIELD_PROBE = """
import json, sys
from typer.testing import CliRunner
from robustres.cli import app
from robustres.grid import SWEEP_KEYS, load_sweep_file, make_sweep_spec
from robustres.spec import make_run_spec
from robustres.store import RUNS_SCHEMA
from robustres.report import PROTOCOL

help_of = lambda command: CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
runs = make_sweep_spec(load_sweep_file(sys.argv[1])).runs()
print(json.dumps({
    "sweep_flag": "--label-smoothings" in help_of("sweep"), "search_flag": "--label-smoothings" in help_of("search"),
    "train_flag": "--label-smoothing " in help_of("train"), "yaml_key": "label_smoothings" in SWEEP_KEYS,
    "column": "label_smoothing" in RUNS_SCHEMA.names, "protocol": "label_smoothing" in PROTOCOL,
    "axis": sorted(getattr(r, "label_smoothing") for r in runs), "runs": len({r.run_id for r in runs}),
    "unset_id": make_run_spec(dataset="two-moons", h=0.1, seed=3).run_id,
}))
"""


def test_the_readmes_field_is_a_flag_a_yaml_key_a_store_column_and_a_sweep_axis(tmp_path):
    # The README's recipe, pasted into a copy of the package as its only edit: the field must come
    # out as a sweep axis (flag and YAML key), train's option, a store column and a protocol column,
    # with the ids of runs that leave it unset unchanged.
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    development = readme[readme.index("**Adding a run option**"):]
    recipe = development[development.index("\n\n    ") + 2:].split("\n\n")[0] + "\n"
    assert "label_smoothing" in recipe and 'grid="label_smoothings"' in recipe
    shutil.copytree(root / "robustres", tmp_path / "robustres", ignore=shutil.ignore_patterns("__pycache__"))
    spec_py = tmp_path / "robustres" / "spec.py"
    text = spec_py.read_text()
    anchor = "    # A hash of the dataset's content"
    assert text.count(anchor) == 1
    spec_py.write_text(text.replace(anchor, recipe + anchor))
    preset = tmp_path / "smoothing.yaml"
    preset.write_text("dataset: two-moons\ndepths: [3]\nh: [0.1]\nseeds: 2\nlabel_smoothings: [0, 0.1]\n")
    probe = subprocess.run([sys.executable, "-c", FIELD_PROBE, str(preset)], capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert probe.returncode == 0, probe.stderr
    found = __import__("json").loads(probe.stdout)
    assert found.pop("axis") == [0.0, 0.0, 0.1, 0.1] and found.pop("runs") == 4
    assert found.pop("unset_id") == make_run_spec(dataset="two-moons", h=0.1, seed=3).run_id
    assert all(found.values()), found


def test_every_dataset_default_comes_from_the_dataset_table(monkeypatch):
    # A protocol default, a generated size and a test-set size changed in the table change what
    # make_run_spec, the cost estimate and report's intervals use.
    import dataclasses

    from robustres import datasets as DS
    from robustres import report

    family = DS.FAMILIES["points"]
    changed = dataclasses.replace(family, sizes=(500, 300),
                                  protocol=dataclasses.replace(family.protocol, epochs=7, milestones=(3,)))
    monkeypatch.setitem(DS.FAMILIES, "points", changed)
    monkeypatch.setitem(DS.DATASETS, "two-moons", dataclasses.replace(DS.DATASETS["two-moons"], family=changed))
    spec = make_run_spec(dataset="two-moons")
    assert (spec.epochs, spec.milestones, spec.n_train, spec.n_test) == (7, (3,), 500, 300)
    assert DS.train_examples(spec) == 500 and DS.train_examples(make_run_spec(dataset="imagefolder")) == 50_000
    assert report.test_size({"dataset": "ag-news"}) == 7_600 and report.test_size({"dataset": "imagefolder"}) is None


def test_one_data_key_names_the_data_and_its_source():
    from robustres.datasets import data_key

    a = make_run_spec(dataset="two-moons", limit_train=100)
    b = make_run_spec(dataset="two-moons", limit_train=200, h=0.5)
    assert data_key(a) != data_key(b) and data_key(a, limited=False) == data_key(b, limited=False)
    assert data_key(a) == data_key(a.with_(h=2.0, seed=9, train_noise=0.1))


def test_the_docs_defaults_are_the_dataset_tables_and_the_field_tables():
    """docs/train.md states the protocol defaults per dataset and the optimizer's; they must be what
    a run gets (the dataset table, the field table), not a copy that drifts."""
    import re
    from pathlib import Path

    from robustres.datasets import DATASETS

    text = (Path(__file__).parent.parent / "docs" / "train.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 3
    for names, _, depth, epochs, batch, schedule in rows:
        for name in re.findall(r"`([a-z0-9-]+)`", names):
            protocol = DATASETS[name].family.protocol if DATASETS[name].family else DATASETS["cifar10"].family.protocol
            spec = make_run_spec(dataset=name)
            assert (int(depth), int(epochs), int(batch)) == (protocol.depth, protocol.epochs, protocol.batch_size)
            assert (spec.depth, spec.epochs, spec.batch_size) == (protocol.depth, protocol.epochs, protocol.batch_size)
            lr, _, rest = schedule.strip().partition(", /10 after epoch")
            assert float(lr.replace(" fixed", "")) == spec.lr and spec.gamma == 0.1
            assert tuple(int(m) for m in re.findall(r"\d+", rest)) == spec.milestones
    spec = make_run_spec()
    sentence = f"Always {spec.optimizer.upper()} with momentum {spec.momentum:g} and no weight decay"
    assert sentence in " ".join(text.split()) and spec.weight_decay == 0


# The ids these specs had before lr, optimizer, bn, momentum, weight decay and batch size became
# sweep axes (issue 24), and a digest of every run of the presets of that day, in sweep order: a
# change of the field table must never move the id of a run a store already holds.
RECORDED_IDS = [
    (dict(dataset="two-moons", depth=4, h=0.1, seed=0), "bc9eeaca722a53ec"),
    (dict(dataset="two-moons", depth=10, h=1.0, seed=2, lr=0.2, epochs=2), "723ab3348f290f39"),
    (dict(dataset="two-moons", depth=3, h=0.5, seed=1, optimizer="adam", momentum=0.0, weight_decay=5e-4,
          batch_size=64, bn=True), "9c06af060760cf28"),
    (dict(dataset="cifar10", depth=110, h=0.1, seed=4), "878847313dd2e065"),
    (dict(dataset="cifar10", depth=20, h=0.01, seed=0, bn=False, lr=0.05, train_noise=0.2, precision="bf16"),
     "b22f66663219d340"),
    (dict(dataset="ag-news", depth=49, h=0.3, seed=1, lr=0.01, limit_train=1000), "a2257aa83de8352d"),
]
RECORDED_PRESETS = {"ci-smoke": (8, "a2dd773e9d359fec"), "fig3-cifar10": (50, "c46f59b4b11ddc48"),
                    "fig5-noise-agnews": (40, "c19c963771684eb8"), "fig5-noise-cifar10": (40, "e037fa10a6ca26f3"),
                    "fig6-agnews": (100, "73cd0d277f67e8a8"), "fig6-cifar10": (210, "7c58d2d3e0f21dcc"),
                    "quick-moons": (72, "b97e93071ee9ace5")}


def test_the_run_ids_of_todays_runs_are_the_ids_they_always_had():
    import hashlib

    from robustres.grid import merge_preset, sweep_runs

    assert [make_run_spec(**values).run_id for values, _ in RECORDED_IDS] == [run_id for _, run_id in RECORDED_IDS]
    for name, (count, digest) in RECORDED_PRESETS.items():
        runs = sweep_runs(merge_preset(name, {}), name, "fp32")
        assert (len(runs), hashlib.sha256(",".join(r.run_id for r in runs).encode()).hexdigest()[:16]) == \
            (count, digest), name
