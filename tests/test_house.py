"""The shape of the code, and the defects that shape caused: one definition of the best h, run
identity that does not depend on the host, gates that hold through Typer's CliRunner, library code
that never prints to stdout, no private imports, modules and functions a newcomer can read, and
training-noise features whose tests fail when they are switched off."""

import ast
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustres import data as D
from robustres import tuning
from robustres.cli import app
from robustres.spec import FIELD_TYPES, RUN_OPTIONS, make_run_spec
from robustres.store import RUNS_SCHEMA, Store, config_columns
from robustres.units import Options, Unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robustres"
CPU = torch.device("cpu")


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


# ---------------------------------------------------------------------------------------------
# One source of truth
# ---------------------------------------------------------------------------------------------


def test_every_run_field_is_a_store_column_a_preset_key_and_a_flag():
    from robustres.cli.options import run_options
    from robustres.grid import RUN_KEYS, SWEEP_KEYS
    from robustres.report import PROTOCOL

    assert set(FIELD_TYPES) <= set(RUNS_SCHEMA.names)
    assert set(RUN_KEYS) == {f.name for f in RUN_OPTIONS} and set(RUN_KEYS) <= set(SWEEP_KEYS)
    assert {p.name for p in run_options()} == set(RUN_KEYS)
    assert set(PROTOCOL) == set(FIELD_TYPES) - {"dataset", "depth", "h", "seed", "train_noise"}


def _put(store, preset_values, h, seed, acc):
    spec = make_run_spec(**preset_values, h=h, seed=seed)
    store.put_run({"run_id": spec.run_id, **config_columns(spec), "status": "completed", "final_test_acc": acc,
                   "best_test_acc": acc, "epochs_done": spec.epochs})


def test_sweep_summary_and_report_name_the_same_best_h_on_a_tie(cli, tmp_path):
    # Three runs at 0.9 for both h = 0.1 and h = 0.5: the sweep's summary used to mark 0.5 (ties
    # toward the larger h) while report recommended 0.1.
    preset = tmp_path / "tie.yaml"
    preset.write_text("dataset: two-moons\ndepths: [3]\nh: [0.1, 0.5]\nseeds: 3\nepochs: 2\nprecision: fp32\n")
    store = Store(tmp_path / "store")
    for h in (0.1, 0.5):
        for seed in range(3):
            _put(store, dict(dataset="two-moons", depth=3, epochs=2), h, seed, 0.9)
    code, out, _ = cli("sweep", "--config", preset)
    assert code == 0
    marked = [line for line in out.splitlines() if "<- recommended" in line]
    assert len(marked) == 1 and marked[0].split()[1] == "0.1"
    code, out, _ = cli("report", "--config", preset, "--format", "json")
    assert code == 0 and [r["h"] for r in json.loads(out)["recommendations"]] == [0.1]


def test_a_preset_swept_at_bf16_is_reported_whole_by_the_same_preset(cli, tmp_path):
    # What a GPU does by default (auto -> bf16), then report on a CPU machine (auto -> fp32).
    preset = tmp_path / "smoke.yaml"
    preset.write_text("dataset: two-moons\ndepths: [3]\nh: [0.1, 1]\nseeds: 2\nepochs: 2\n")
    code, _, err = cli("sweep", "--config", preset, "--precision", "bf16")
    assert code == 0, err
    code, out, err = cli("report", "--config", preset, "--require-complete", "--format", "json")
    assert code == 0, err
    groups = json.loads(out)["groups"]
    assert sum(g["runs"] for g in groups) == 4
    code, _, err = cli("noise-eval", "--config", preset, "--levels", "0,0.1", "--json")
    assert code == 0, err


def test_a_preset_with_a_missing_run_fails_require_complete(cli, tmp_path):
    preset = tmp_path / "smoke.yaml"
    preset.write_text("dataset: two-moons\ndepths: [3]\nh: [0.1, 1]\nseeds: 2\nepochs: 2\n")
    store = Store(tmp_path / "store")
    _put(store, dict(dataset="two-moons", depth=3, epochs=2), 0.1, 0, 0.9)
    code, _, err = cli("report", "--config", preset, "--require-complete")
    assert code == 1 and "3 of 4 runs" in err


def test_the_min_seeds_gate_holds_through_typers_cli_runner(tmp_path):
    store = Store(tmp_path / "store")
    for seed in range(2):
        _put(store, dict(dataset="two-moons", depth=3, epochs=2), 0.1, seed, 0.9)
    runner = CliRunner()
    given = runner.invoke(app, ["report", "--store", str(tmp_path / "store"), "--min-seeds", "3"])
    assert given.exit_code == 1 and "fewer than 3 completed runs" in given.output
    default = runner.invoke(app, ["report", "--store", str(tmp_path / "store")])
    assert default.exit_code == 0, default.output


# ---------------------------------------------------------------------------------------------
# The code's shape
# ---------------------------------------------------------------------------------------------


def _calls_print_without_file(tree) -> list[int]:
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
            and not any(k.arg == "file" for k in n.keywords)]


def test_library_code_never_prints_to_stdout():
    offenders = {}
    for path in _modules():
        if "cli" in path.relative_to(PACKAGE).parts:
            continue  # the commands own stdout
        lines = _calls_print_without_file(ast.parse(path.read_text()))
        if lines:
            offenders[path.name] = lines
    assert offenders == {}


def test_nothing_private_is_imported_from_other_packages():
    private = []
    for path in _modules() + sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != "robustres" and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.name}: {name}")
    assert private == []


def _private_names_from_robustres(tree) -> list[str]:
    """`from .x import _y` inside the package, `from robustres.x import _y` anywhere: a private name
    used by another module (dunders such as __version__ are public)."""
    found = []
    for node in ast.walk(tree):
        ours = isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == "robustres")
        if not ours:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{'.' * node.level}{node.module or ''} import {alias.name}")
    return found


def test_no_private_name_is_imported_across_the_packages_modules():
    offenders = []
    for path in _modules() + sorted((ROOT / "tests").glob("*.py")):
        offenders += [f"{path.name}: {name}" for name in _private_names_from_robustres(ast.parse(path.read_text()))]
    assert offenders == []


WRITES = {"savefig", "write_table", "write_bytes", "write_text"}  # and torch.save, open(..., "w")
# Writes that need not be atomic: atomic.py's own, and a Ray worker's copies of checkpoints in a
# temporary folder of its own, which no other process reads.
NOT_ATOMIC = {"atomic.py": 1, "ray.py": 1}


def _writes_outside_write_atomic(tree) -> list[int]:
    """Lines of calls that write a file other than inside a lambda handed to write_atomic."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "write_atomic":
            inside |= {id(n) for arg in node.args if isinstance(arg, ast.Lambda) for n in ast.walk(arg)}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in inside:
            continue
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        torch_save = name == "save" and getattr(getattr(node.func, "value", None), "id", None) == "torch"
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        opened = name == "open" and isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+")
        if name in WRITES or torch_save or opened:
            lines.append(node.lineno)
    return lines


def test_every_file_is_written_through_atomic_py():
    # atomic.py's docstring promises it: readers never see part of a file.
    counts = {p.name: len(_writes_outside_write_atomic(ast.parse(p.read_text()))) for p in _modules()}
    assert {name: n for name, n in counts.items() if n} == NOT_ATOMIC


# Files of the paper's official code, cited where this code follows it; not in this repo.
OFFICIAL_FILES = {"vis_acc.py"}


def test_every_file_the_packages_comments_cite_is_in_the_repo():
    import re

    modules = {p.name for p in _modules()}
    missing = []
    for path in _modules():
        for name in re.findall(r"[\w./-]+\.(?:md|py)\b", path.read_text()):
            found = (ROOT / name).exists() or Path(name).name in modules or name in OFFICIAL_FILES
            if not found:
                missing.append(f"{path.name}: {name}")
    assert missing == []


def test_no_test_edits_sys_path():
    assert [p.name for p in sorted((ROOT / "tests").glob("*.py")) if "sys.path" in p.read_text()
            and p.name != "test_house.py"] == []


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _modules():
        text = path.read_text()
        limit = 150 if path.parent.name == "cli" and path.stem not in ("render", "progress", "options") else 500
        if len(text.splitlines()) > limit:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.name}:{node.name}: {length} lines")
    assert too_long == []


# ---------------------------------------------------------------------------------------------
# Training noise: changes the training batches, never the test batches
# ---------------------------------------------------------------------------------------------


def _inputs(spec_kwargs, noise):
    spec = make_run_spec(**spec_kwargs, train_noise=noise)
    data = D.load(spec, ".")
    unit = Unit([0], [spec], data, CPU, Options())
    idx = torch.arange(spec.batch_size).view(1, -1)
    zero = torch.zeros((), dtype=torch.long)
    return unit.train_inputs(data, idx, zero, zero), unit.test_inputs(data, torch.arange(8))


IMAGES = dict(dataset="synthetic", synthetic_like="cifar10", depth=8, n_train=64, n_test=16, batch_size=16)
TEXT = dict(dataset="synthetic", synthetic_like="ag-news", depth=9, n_train=64, n_test=16, batch_size=16)


@pytest.mark.parametrize("kind", ["gaussian", "salt-pepper", "mosaic"])
def test_image_training_noise_changes_training_batches_and_never_test_batches(kind):
    clean_train, clean_test = _inputs({**IMAGES, "noise_kind": kind}, 0.0)
    noisy_train, noisy_test = _inputs({**IMAGES, "noise_kind": kind}, 0.3)
    assert (noisy_train - clean_train).abs().mean() > 0.01
    assert torch.equal(noisy_test, clean_test)


def test_char_swap_changes_training_texts_and_never_test_texts():
    clean_train, clean_test = _inputs(TEXT, 0.0)
    noisy_train, noisy_test = _inputs(TEXT, 0.3)
    changed = (noisy_train != clean_train).float().mean().item()
    assert 0.05 < changed < 0.5  # about the level's fraction of the (non-padding) characters
    assert torch.equal(noisy_test, clean_test)


def test_auto_pack_size_follows_its_memory_measurement(monkeypatch):
    specs = [make_run_spec(dataset="two-moons", depth=10, seed=s) for s in range(40)]
    data = D.load(specs[0], ".")
    per_model = tuning._activation_bytes_per_input(specs[0], data.input_shape, data.num_classes) * 64 * 2
    for models in (1, 3, 7, 40):
        monkeypatch.setattr(tuning, "_available_host_bytes", lambda m=models: int(2 * per_model * (m + 0.5)))
        assert tuning.auto_pack_size(specs, data, CPU, Options()) == models


def test_a_field_added_later_keeps_the_run_ids_of_older_stores():
    from dataclasses import dataclass, field

    from robustres.spec import Meta, RunSpec

    @dataclass(frozen=True)
    class WithNewField(RunSpec):
        label_smoothing: float | None = field(default=None, metadata={"robustres": Meta("Label smoothing.",
                                                                                        hash_if_set=True)})

    spec = make_run_spec(dataset="two-moons", h=0.1, seed=3)
    old = WithNewField(**spec.to_dict() | {"milestones": spec.milestones})
    assert old.run_id == spec.run_id
    smoothed = WithNewField(**spec.to_dict() | {"milestones": spec.milestones, "label_smoothing": 0.1})
    assert smoothed.run_id != spec.run_id


def _our_imports(module: str) -> set[str]:
    """The modules of robustres that `module` (a path without .py: `engine`, `execution/plan`)
    imports, named the same way; `from .. import __version__` names `__version__`."""
    package = module.split("/")[:-1]
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        target = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        for alias in node.names:  # `from .execution import plan` names a module, `from .spec import X` its module
            names = ["/".join(target + [alias.name]), "/".join(target)]
            found.add(next((n for n in names if (PACKAGE / f"{n}.py").is_file()), "/".join(target) or alias.name))
    return found


def test_the_readmes_architecture_table_is_the_real_import_graph():
    import re

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Architecture"):text.index("## Development")]
    seen: set[str] = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`") or cells[0].startswith("`cli/"):
            continue
        modules = re.findall(r"`([\w/]+)\.py`", cells[0])
        listed = set() if cells[2] == "-" else {x.strip() for x in cells[2].split(",")}
        real = set().union(*(_our_imports(name) for name in modules)) - {"__version__", *modules}
        assert real == listed, (modules, sorted(real))
        assert real <= seen, (modules, sorted(real - seen))  # only rows above
        seen |= set(modules)
    every = {str(p.relative_to(PACKAGE).with_suffix("")) for p in PACKAGE.rglob("*.py")
             if p.parent.name != "cli" and p.stem not in ("__init__", "__main__")}
    assert seen == every


def test_the_readmes_and_faults_exit_code_tables_list_the_tools_codes():
    import importlib

    app = importlib.import_module("robustres.cli.app")
    codes = {v for k, v in vars(app).items() if k.startswith("EXIT_")}
    assert codes
    for doc in (ROOT / "README.md", ROOT / "docs" / "faults.md"):
        text = doc.read_text()
        table = text[text.index("| code | meaning |"):].split("\n\n")[0]
        listed = {int(line.split("|")[1]) for line in table.splitlines()[2:]}
        assert listed == codes, doc.name


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists its packages by hand: a subpackage missing there works in an editable install
    and is absent from a wheel (robustres.execution was, for a while)."""
    import tomllib

    root = Path(__file__).parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "robustres").rglob("__init__.py")}
    assert found == listed
