"""Bad input, every command and the YAML files: a one-line error naming the problem, exit code 2,
and nothing written anywhere (not the store, not the data folder, not the working directory).

A case may point --data-dir at one of DATA_FOLDERS, written "{images}" and so on: a small image
folder or AG-NEWS folder, copied into the case's own folder, so that a cache written there counts."""

import shutil

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from robustres.axes import parse_h_grid, parse_ints, parse_seeds
from robustres.spec import SpecError

CUDA = torch.cuda.is_available()
S = ["sweep", "--depths", "3", "--h", "0.1"]  # a valid sweep, to which one bad option is added
Q = ["search", "--depths", "3", "--h", "0.01..2", "--seeds", "5"]  # a valid search, likewise
YAML_OK = "dataset: two-moons\ndepths: [3]\nh: [0.1]\n"
IMAGES = ["--dataset", "imagefolder", "--depth", "8", "--data-dir"]  # + a folder
AG = ["--dataset", "ag-news", "--depth", "9", "--data-dir"]

# A YAML alias bomb: 300 bytes that name 9**9 items; `description` holds it, a typed key quotes it.
_ANCHORS = ["&a [1,1,1,1,1,1,1,1,1]"] + [f"&{c} [" + ",".join([f"*{p}"] * 9) + "]"
                                         for p, c in zip("abcdefgh", "bcdefghi")]
BOMB = "description: [" + ", ".join(_ANCHORS) + "]\n"
BIG = "9223372036854775808"  # 2**63

# (command line, content of a YAML file passed as {yaml}, a text the error must contain)
CASES = [
    # train
    (["train", "--dataset", "mnist"], None, "unknown dataset 'mnist'"),
    (["train", "--dataset", "cifar10", "--depth", "100"], None, "nearest: 98, 104"),
    (["train", "--dataset", "ag-news", "--depth", "20"], None, "choose one of: 9, 17, 29, 49"),
    (["train", "--depth", "0"], None, "depth"),
    (["train", "--h", "abc"], None, "'abc' is not a number"),
    (["train", "--h", "nan"], None, "h must be finite"),
    (["train", "--h", "-1"], None, "h must be >= 0"),
    (["train", "--h", ""], None, "h"),
    (["train", "--seed", "x"], None, "'x' is not a whole number"),
    (["train", "--epochs", "0"], None, "epochs must be >= 1"),
    (["train", "--epochs", "ten"], None, "Invalid value for '--epochs'"),
    (["train", "--lr", "-0.1"], None, "lr"),
    (["train", "--lr", "nan"], None, "lr"),
    (["train", "--batch-size", "0"], None, "batch"),
    (["train", "--milestones", "60,40"], None, "strictly increasing"),
    (["train", "--optimizer", "rmsprop"], None, "unknown optimizer"),
    (["train", "--train-noise", "2"], None, "level in [0, 1]"),
    (["train", "--train-noise", "0.1", "--noise-kind", "mosaic"], None, "mosaic"),
    (["train", "--device", "tpu"], None, "unknown device 'tpu'"),
    (["train", "--device", "cuda:x"], None, "device"),
    (["train", "--dataset", "imagefolder", "--data-dir", "/nonexistent/robustres"], None, "does not exist"),
    (["train", "--dataset", "ag-news", "--depth", "9", "--data-dir", "/nonexistent"], None,
     "not found in /nonexistent"),
    (["train", "--dataset", "cifar10", "--limit-train", "10", "--epochs", "1"], None, "cifar-10-python.tar.gz"),
    (["train", "--no-such-option"], None, "No such option"),
    (["train", "--pack-size", "0"], None, "--pack-size must be auto or a whole number >= 1"),
    (["train", "--precision", "fp8"], None, "unknown precision 'fp8'"),
    (["train", "--checkpoint-every", "-1"], None, "--checkpoint-every must be >= 0"),
    (["train", "--track-layers", "99"], None, "--track-layers"),
    (["train", "--width", "2", "--dataset", "cifar10"], None, "--width and --hidden apply only"),
    (["train", "--limit-train", "1001"], None, "--limit-train 1001 is more than the 1,000 training examples"),
    (["train", "--dataset", "cifar10", "--limit-test", "10001"], None, "more than the 10,000 test examples of cifar10"),
    (["train", *IMAGES, "{images}", "--limit-train", "7"], None,
     "--limit-train 7 is more than the 6 training examples of imagefolder"),
    (["train", *IMAGES, "{images}", "--limit-test", "5", "--dry-run"], None, "--limit-test 5 is more than the 4 test"),
    (["train", *IMAGES, "{images-no-test}"], None, "no images (.jpg, .jpeg, .png) under"),
    (["train", *AG, "{ag-latin1}"], None, "train.csv:5: byte 0xe9 at column 9 is not UTF-8"),
    (["train", *AG, "{ag-empty-classes}"], None, "classes.txt is empty"),
    (["train", *AG, "{ag}", "--limit-train", "5"], None, "--limit-train 5 is more than the 4 training examples of ag"),
    # sweep
    (["sweep", "--depths", "3"], None, "no h grid given"),
    (["sweep", "--h", "0.1"], None, "no depths given"),
    (["sweep", "--depths", "3", "--h", "2..1"], None, "empty or reversed"),
    (["sweep", "--depths", "3", "--h", "1..1"], None, "empty or reversed"),
    (["sweep", "--depths", "3", "--h", "0..1"], None, "A and B > 0"),
    (["sweep", "--depths", "3", "--h", "-1..2"], None, "A and B > 0"),
    (["sweep", "--depths", "3", "--h", "0.1..nan"], None, "not finite"),
    (["sweep", "--depths", "3", "--h", "0.1,,1"], None, "comma-separated"),
    (["sweep", "--depths", "3", "--h", "0.1..1:1"], None, "at least 2 points"),
    (S + ["--seeds", "0"], None, "must be >= 1"),
    (S + ["--seeds", "a,b"], None, "not a whole number"),
    (S + ["--seeds", "5..2"], None, "seeds"),
    (["sweep", "--depths", "x", "--h", "0.1"], None, "'x' is not a whole number"),
    (["sweep", "--depths", "3,-5", "--h", "0.1"], None, "depth"),
    (["sweep", "--depths", "20", "--h", "0.1", "--dataset", "ag-news"], None, "choose one of: 9, 17, 29, 49"),
    (["sweep", "--config", "/nonexistent/sweep.yaml"], None, "does not exist"),
    (["sweep", "--depths", "8", "--h", "0.1", "--dataset", "imagefolder", "--data-dir", "/nonexistent"], None,
     "does not exist"),
    (S + ["--train-noise", "0,2"], None, "level in [0, 1]"),
    (S + ["--device", "tpu"], None, "unknown device"),
    (S + ["--executor", "slurm"], None, "unknown executor 'slurm'"),
    (S + ["--workers", "0"], None, "workers"),
    (S + ["--limit-test", "1001"], None, "--limit-test 1001 is more than the 1,000 test examples"),
    (["sweep", "--depths", "8", "--h", "0.1", *IMAGES[:2], "--data-dir", "{images}", "--limit-train", "7", "--dry-run"],
     None, "--limit-train 7 is more than the 6 training examples"),
    (["sweep", "--depths", "9", "--h", "0.1", *AG[:2], "--data-dir", "{ag-latin1}", "--dry-run"], None, "is not UTF-8"),
    # YAML sweep files
    (["sweep", "--config", "{yaml}"], YAML_OK + "colour: blue\n", "unknown key 'colour'"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "epochs: ten\n", "key 'epochs' must be int"),
    (["sweep", "--config", "{yaml}"], "depths: three\nh: [0.1]\n", "depths"),
    (["sweep", "--config", "{yaml}"], "depths: [3]\nh: 1..0.1\n", "empty or reversed"),
    (["sweep", "--config", "{yaml}"], "depths: [3]\nh: []\n", "h"),
    (["sweep", "--config", "{yaml}"], "depths: [100]\nh: [0.1]\ndataset: cifar10\n", "nearest: 98, 104"),
    (["sweep", "--config", "{yaml}"], "- just\n- a list\n", "must be a mapping"),
    (["sweep", "--config", "{yaml}"], "depths: [3\n", "not valid YAML"),
    (["sweep", "--config", "{yaml}"], "h: [0.1]\n", "no depths given"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "seeds: x\n", "seeds"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "device: tpu\n", "unknown device"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "lr: .nan\n", "lr"),
    (["sweep", "--config", "{yaml}"], "# only a comment\n", "no depths given"),
    (["sweep", "--config", "{yaml}"], "!!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "limit_train: 1001\n", "--limit-train 1001 is more than"),
    # report
    (["report", "--format", "xml"], None, "unknown format 'xml'"),
    (["report", "--min-seeds", "0"], None, "--min-seeds must be >= 1"),
    (["report", "--require-complete"], None, "--require-complete needs --config"),
    (["report", "--config", "/nonexistent.yaml"], None, "does not exist"),
    (["report", "--h", "2..1"], None, "empty or reversed"),
    (["report", "--depths", "x"], None, "not a whole number"),
    (["report", "--config", "{yaml}"], YAML_OK + "colour: blue\n", "unknown key 'colour'"),
    # noise-eval
    (["noise-eval", "--levels", "0,2"], None, "a noise level is in [0, 1]"),
    (["noise-eval", "--levels", "a"], None, "not a number"),
    (["noise-eval", "--mode", "guess"], None, "unknown mode 'guess'"),
    (["noise-eval", "--mode", "guess", "--levels", "2"], None, "unknown mode 'guess'"),  # the mode first
    (["noise-eval", "--mode", "train-noise", "--propagation", "--depth", "5", "--h", "0.1"], None,
     "--propagation goes with"),
    (["noise-eval", "--milestones", "70"], None, "--milestones goes with --mode train-noise"),
    (["noise-eval", "--pack-size", "2"], None, "--pack-size goes with --mode train-noise"),
    (["noise-eval", "--no-fuse"], None, "--fuse/--no-fuse goes with --mode train-noise"),
    # test-noise trains nothing: the training options are refused, not ignored
    (["noise-eval", "--seeds", "3"], None, "--seeds goes with --mode train-noise"),
    (["noise-eval", "--epochs", "3"], None, "--epochs goes with --mode train-noise"),
    (["noise-eval", "--lr", "0.5"], None, "--lr goes with --mode train-noise"),
    (["noise-eval", "--limit-train", "10"], None, "--limit-train goes with --mode train-noise"),
    (["noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "0.1", "--pack-size", "0"], None,
     "--pack-size must be auto or a whole number >= 1"),
    (["noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "0.1", "--precision", "fp16"], None,
     "unknown precision 'fp16'"),
    (["noise-eval", "--kinds", "blur"], None, "unknown noise kind 'blur'"),
    (["noise-eval", "--limit-test", "1001"], None, "--limit-test 1001 is more than the 1,000 test examples of two"),
    (["noise-eval", "--kinds", "mosaic"], None, "does not apply to points data"),
    (["noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "0.1", "--kinds", "mosaic"], None, "mosaic"),
    (["noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "2..1"], None, "empty or reversed"),
    # issue 14: bounds, parsing, repeated options, empty paths
    (S + ["--seeds", "0..10000000", "--dry-run"], None, "10,000,001 seeds is more than a grid may hold"),
    (["sweep", "--depths", "3", "--h", "0.001..20:100000", "--dry-run"], None, "100,000 points is more than"),
    (["sweep", "--depths", "3,4,5,6", "--h", "0.01..1:100", "--seeds", "30", "--dry-run"], None,
     "the grid has 12,000 runs, more than the 10,000 allowed"),
    (S + ["--seeds", "3", "--max-runs", "2"], None, "3 seeds is more than a grid may hold (2 runs"),
    (S + ["--max-runs", "0"], None, "--max-runs must be >= 1"),
    (S + ["--seeds", BIG], None, "seeds is more than a grid may hold"),
    (S + ["--seeds", f"1,{BIG}"], None, "seed must be <= 9,223,372,036,854,775,807"),
    (["train", "--seed", BIG], None, "seed must be <= 9,223,372,036,854,775,807"),
    (["train", "--epochs", BIG], None, "epochs must be <= 100,000"),
    (["train", "--depth", "60002"], None, "depth must be <= 10,000"),
    (["train", "--h", "0.1", "--h", "0.5"], None, "--h is given twice"),
    (S + ["--h", "0.5"], None, "--h is given twice"),
    (["train", "--fuse", "--no-fuse"], None, "--fuse and --no-fuse are both given"),
    (["train", "--epochs=3", "--epochs", "4"], None, "--epochs is given twice"),
    (["sweep", "--depths", "3", "--h", "0.1...1"], None, "is not a range; write A..B or A..B:N"),
    (["sweep", "--depths", "3", "--h", "0.1..1:"], None, "nothing after ':'"),
    (["train", "--store", ""], None, "--store is empty"),
    (S + ["--store", ""], None, "--store is empty"),
    (["report", "--store", ""], None, "--store is empty"),
    (["train", "--data-dir", ""], None, "--data-dir is empty"),
    (["report", "--store", "missing"], None, "store missing does not exist"),
    (["report", "--store", "store/.snapshot/runs.parquet"], None, "is not a store: it is a file"),
    (["noise-eval", "--store", "missing"], None, "store missing does not exist"),
    (["sweep", "--config", "."], None, "is a folder, not a YAML file"),
    (["report", "--config", "."], None, "is a folder, not a YAML file"),
    (["sweep", "--config", "{yaml}"], BOMB + "depths: [3]\nh: 0.1\nepochs: *i\n", "key 'epochs' takes one value"),
    (["sweep", "--config", "{yaml}"], BOMB + "depths: *i\nh: 0.1\n", "depths: [[...], [...], [...], [...], ...] is"),
    (["sweep", "--config", "{yaml}"], BOMB + "depths: [3]\nh: 0.1\npack_size: *i\n", "takes one value"),
    (["sweep", "--config", "{yaml}"], BOMB + "depths: [3]\nh: 0.1\ntrack_layers: *i\n", "must be str"),
    (["sweep", "--config", "{yaml}"], YAML_OK + f"seeds: {BIG}\n", "seeds is more than a grid may hold"),
    (["sweep", "--config", "{yaml}"], YAML_OK + f"seeds: [{BIG}]\n", "seed must be <="),
    (["sweep", "--config", "{yaml}"], "depths: [3.7]\nh: 0.1\n", "depths: 3.7 is not a whole number"),
    (["sweep", "--config", "{yaml}"], "depths: [true]\nh: 0.1\n", "depths: True is not a whole number"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "milestones: [1.9]\n", "milestones: 1.9 is not a whole number"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "h: [0.5]\n", "key 'h' is given twice (line 4"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "batch-size: 3\nbatch_size: 4\n",
     "key 'batch_size' is given twice (line 5, and before as 'batch-size')"),
    (["sweep", "--config", "{yaml}"], "depths: [3]\nh: {start: 0.1}\n",
     "key 'h' takes a value or a list, not a mapping"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "lr: fast\n", "--lr: 'fast' is not a number"),
    (["sweep", "--config", "{yaml}"], b"depths: [3]\nh: 0.1\n# caf\xe9\n",
     "not a UTF-8 text file (byte 0xe9 on line 3)"),
    (["sweep", "--config", "{yaml}"], bytes(range(256)), "not a UTF-8 text file"),
    (["sweep", "--config", "{yaml}"], b"depths: [3]\x00\nh: 0.1\n", "not valid YAML"),
    (["report", "--config", "{yaml}"], b"\xff\xfe\x00\x01", "not a UTF-8 text file"),
    (["report", "--plot", "store/.snapshot/runs.parquet"], None, "is a file, not a folder"),
    (["report", "--plot", "/proc"], None, "--plot /proc: cannot write /proc/"),
    (["report", "--plot", "/proc/figures"], None, "--plot /proc/figures: cannot write"),
    (["report", "--plot", ""], None, "--plot is empty"),
    (["report", "--html", "store"], None, "--html store is a folder; name a file"),
    (["report", "--html", "missing/report.html"], None, "the folder missing does not exist"),
    (["report", "--html", "/proc/report.html"], None, "--html /proc/report.html: cannot write into /proc"),
    (["noise-eval", "--limit-test", "-5"], None, "--limit-test must be >= 1, got -5"),
    (["noise-eval", "--limit-test", "0"], None, "--limit-test must be >= 1, got 0"),
    (["train", "--depth", "3", "--bn", "--batch-size", "1"], None, "--batch-size 1 does not work with batch norm"),
    (["train", "--dataset", "synthetic", "--depth", "8", "--n-train", "1"], None, "one training example"),
    (["train", "--threads", "0"], None, "--threads must be >= 1"),
    (S + ["--threads", "-1"], None, "--threads must be >= 1"),
    (["doctor", "--store", ""], None, "--store is empty"),
    (["doctor", "--data-dir", ""], None, "--data-dir is empty"),
    # search: its own options, its preset section, and a budget too small for its first rung
    (Q + ["--budget", "0"], None, "search budget: '0' is neither a share"),
    (Q + ["--budget", "2.5"], None, "nor a whole number of model-epochs"),
    (Q + ["--budget", "abc"], None, "search budget: 'abc' is not a number"),
    (Q + ["--budget", "0.01"], None, "give at least --budget"),
    (Q + ["--rungs", "9,3"], None, "must be strictly increasing"),
    (Q + ["--rungs", ""], None, "has an empty item"),
    (Q[:5] + ["--seeds", "2"], None, "a search needs at least 3 seeds, got 2"),
    (Q + ["--rungs", "500"], None, "past the schedule's 30 epochs"),
    (Q + ["--stride", "0"], None, "search stride"),
    (Q + ["--margin", "1.5"], None, "search margin"),
    (Q + ["--keep", "-0.5"], None, "search keep"),
    (Q[:3] + ["--h", "0..1", "--seeds", "5"], None, "a range needs A and B > 0"),
    (["search", "--depths", "3", "--h", "0.1,1", "--seeds", "5", "--dataset", "two-moons,cifar10"], None,
     "unknown dataset"),
    (["search", "--config", "{yaml}"], YAML_OK + "seeds: 5\nsearch: 0.3\n", "key 'search' takes a mapping"),
    (["search", "--config", "{yaml}"], YAML_OK + "seeds: 5\nsearch:\n  budjet: 0.3\n", "unknown key 'budjet'"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "search:\n  rungs: [4, 2]\n", "strictly increasing"),
    # issue 26: --transfer, --anchors, --widen, --early-seeds
    (Q + ["--anchors", "2"], None, "search anchors: only with transfer"),
    (Q + ["--transfer", "--anchors", "3"], None, "search anchors: '3' must lie in [1, 2]"),
    (Q + ["--transfer", "--widen", "0.5"], None, "search widen: '0.5' must lie in [1, 100]"),
    (Q + ["--early-seeds", "5"], None, "--early-seeds: 5 must be fewer than the grid's 5 seeds"),
    (Q + ["--early-seeds", "2"], None, "search early_seeds: '2' must lie in [3, 1e+06]"),
    (["search", "--config", "{yaml}"], YAML_OK + "seeds: 5\nsearch:\n  transfer: yes please\n",
     "search transfer: 'yes please' is not true or false"),
    (Q + ["--transfer", "--budget", "0.01"], None, "with --transfer it cannot pay"),
    # issue 24: the protocol fields as axes: a value out of range, an unknown optimizer, an odd boolean
    (S + ["--lr", "0.1,0"], None, "lr must be > 0, got 0"),
    (S + ["--lr", "0..1"], None, "--lr: a range needs A and B > 0"),
    (S + ["--momentum", "0,1"], None, "momentum must be < 1, got 1"),
    (S + ["--weight-decay", "-1"], None, "--weight-decay: weight decay must be >= 0, got -1"),
    (S + ["--batch-size", "64,0"], None, "batch size must be >= 1, got 0"),
    (S + ["--batch-size", "64.5"], None, "--batch-size: '64.5' is not a whole number"),
    (S + ["--optimizer", "sgd,adamw"], None, "unknown optimizer 'adamw'; choose one of: sgd, adam"),
    (S + ["--optimizer", "sgd,,adam"], None, "--optimizer must be a comma-separated list"),
    (S + ["--bn", "maybe"], None, "--bn: 'maybe' is neither on nor off (write on, off, true or false)"),
    (S + ["--bn", "on", "--no-bn"], None, "--bn and --no-bn are both given; give one"),
    (S + ["--no-bn", "--bn"], None, "--no-bn and --bn are both given; give one"),
    (S + ["--lr", "0.1", "--lr", "0.2"], None, "--lr is given twice"),
    (["train", "--lr", "0.05,0"], None, "lr must be > 0, got 0"),
    (["train", "--momentum", "0.9,1"], None, "momentum must be < 1, got 1"),
    (["train", "--weight-decay", "0,-5e-4"], None, "weight decay must be >= 0, got -0.0005"),
    (["train", "--optimizer", "sgd,adamw"], None, "unknown optimizer 'adamw'"),
    (["train", "--bn", "1"], None, "--bn: '1' is neither on nor off"),
    (["train", "--bn", "--no-bn"], None, "--bn and --no-bn are both given; give one"),
    (["train", "--batch-size", "0,64"], None, "batch size must be >= 1, got 0"),
    (Q + ["--lr", "0.1,-1"], None, "--lr: lr must be > 0, got -1"),
    (["train", "--dataset", "two-moons", "--lr", "-0.1"], None, "--lr: lr must be > 0, got -0.1"),
    (Q + ["--optimizer", "adamw"], None, "unknown optimizer 'adamw'"),
    (["noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "0.1", "--bn", "maybe"], None,
     "--bn: 'maybe' is neither on nor off"),
    (["noise-eval", "--mode", "train-noise", "--depth", "5", "--h", "0.1", "--lr", "0"], None, "lr must be > 0"),
    (["noise-eval", "--optimizer", "adam"], None, "--optimizer goes with --mode train-noise"),
    (["noise-eval", "--no-bn"], None, "--bn goes with --mode train-noise"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "lr: [0.1, 0]\n", "lr must be > 0, got 0"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "momentum: [0.9, 1]\n", "momentum must be < 1, got 1"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "weight_decay: -0.1\n", "weight decay must be >= 0, got -0.1"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "batch_size: [0]\n", "batch size must be >= 1, got 0"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "optimizer: [sgd, adamw]\n", "unknown optimizer 'adamw'"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "bn: [true, maybe]\n", "--bn: 'maybe' is neither on nor off"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "bn: [1]\n", "--bn: 1 is neither on nor off"),
    (["sweep", "--config", "{yaml}"], YAML_OK + "optimizer: {sgd: 1}\n", "key 'optimizer' takes a value or a list"),
    # the product of every axis is counted before a run is listed: 9,000^3 x 36 x 3 seeds, refused at once
    (["sweep", "--depths", "3", "--h", "0.001..1:9000", "--lr", "0.001..1:9000", "--weight-decay", "1e-6..1e-2:9000",
      "--momentum", "0,0.5,0.9", "--batch-size", "32,64,128", "--optimizer", "sgd,adam", "--bn", "on,off",
      "--dry-run"], None, "the grid has 78,732,000,000,000 runs, more than the 10,000 allowed (--max-runs N"),
    (["train", "--h", "0.001..1:9000", "--lr", "0.001..1:9000", "--optimizer", "sgd,adam", "--seeds", "3"], None,
     "--h, --lr, --optimizer and the seeds make 486,000,000 runs, more than the 10,000 allowed"),
    (S + ["--lr", "0.001..1:20000"], None, "--lr: 20,000 points is more than a grid may hold"),
]
if not CUDA:
    CASES.append((["train", "--device", "cuda"], None, "CUDA is not available"))
    CASES.append((S + ["--device", "cuda:0"], None, "CUDA is not available"))


def _tree(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    """A store holding one trained two-moons run (noise-eval and report need something to read)."""
    from robustres.cli import main

    root = tmp_path_factory.mktemp("trained") / "store"
    assert main(["train", "--depth", "3", "--epochs", "1", "--store", str(root)]) == 0
    return root


DATA_FOLDERS = ("images", "images-no-test", "ag", "ag-latin1", "ag-empty-classes")


@pytest.fixture(scope="module")
def data_folders(tmp_path_factory):
    """Two image folders (two classes of 3 training images, 2 test images each, or none) and three
    AG-NEWS folders (4 training rows and 1 test row; a latin-1 byte in train.csv; an empty classes.txt)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data-folders")
    g = torch.Generator().manual_seed(0)
    for name, per_test in (("images", 2), ("images-no-test", 0)):
        for split, count in (("train", 3), ("test", per_test)):
            for c in ("cat", "dog"):
                (root / name / split / c).mkdir(parents=True)
                for i in range(count):
                    pixels = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()
                    Image.fromarray(pixels).save(root / name / split / c / f"{i}.png")
    rows = b'"1","a","b"\n"2","c","d"\n"3","e","f"\n"4","g","h"\n'
    classes = b"World\nSports\nBusiness\nSci/Tech\n"
    for name, names, train in (("ag", classes, rows), ("ag-latin1", classes, rows + b'"1","caf\xe9","x"\n'),
                               ("ag-empty-classes", b"", rows)):
        (root / name).mkdir()
        (root / name / "classes.txt").write_bytes(names)
        (root / name / "train.csv").write_bytes(train)
        (root / name / "test.csv").write_bytes(rows.splitlines(keepends=True)[0])
    return root


@pytest.mark.parametrize("args,yaml,message", CASES, ids=[f"{c[0][0]}: {c[2]}" for c in CASES])
def test_bad_input_is_one_line_exit_two_and_writes_nothing(cli, tmp_path, trained_store, data_folders, args, yaml,
                                                           message):
    shutil.copytree(trained_store, tmp_path / "store")
    args = list(args)
    for i, arg in enumerate(args):
        if arg.startswith("{") and arg[1:-1] in DATA_FOLDERS:
            shutil.copytree(data_folders / arg[1:-1], tmp_path / arg[1:-1])
            args[i] = str(tmp_path / arg[1:-1])
    if yaml is not None:
        if isinstance(yaml, bytes):
            (tmp_path / "bad.yaml").write_bytes(yaml)
        else:
            (tmp_path / "bad.yaml").write_text(yaml)
        args = [str(tmp_path / "bad.yaml") if a == "{yaml}" else a for a in args]
    (tmp_path / "data").mkdir()
    before = _tree(tmp_path)
    code, out, err = cli(*args)
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    if yaml is not None and message not in ("does not exist",):
        assert str(tmp_path / "bad.yaml") in err  # the file is named
    assert out == ""
    assert _tree(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_the_table_is_large_and_covers_every_command():
    commands = {args[0] for args, _, _ in CASES}
    assert commands == {"train", "sweep", "search", "report", "noise-eval", "doctor"}
    assert len(CASES) >= 30 and sum(1 for c in CASES if c[1] is not None) >= 10


# ------------------------------------------------------------------ parsers, property-based


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_an_h_range_parses_to_a_sorted_positive_grid_or_is_refused(a, b):
    try:
        grid = parse_h_grid(f"{a!r}..{b!r}")
    except SpecError as exc:
        assert "\n" not in str(exc)
        assert not (0 < a < b < float("inf"))  # refused only when it is not a valid range
        return
    assert 0 < a < b < float("inf")
    assert grid[0] == a and grid[-1] == b and grid == sorted(set(grid))


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=10))
def test_an_h_list_keeps_its_values_in_order(values):
    assert parse_h_grid(",".join(repr(v) for v in values)) == list(dict.fromkeys(values))


@given(st.text(max_size=20))
def test_any_text_is_a_grid_or_a_one_line_error(text):
    try:
        grid = parse_h_grid(text)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert grid and all(v >= 0 and v == v and v != float("inf") for v in grid)


@given(st.text(max_size=20))
def test_any_text_is_a_seed_list_or_a_one_line_error(text):
    try:
        seeds = parse_seeds(text)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert seeds and all(isinstance(s, int) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds)


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=10))
def test_depth_lists_round_trip(depths):
    assert parse_ints("--depths", ",".join(map(str, depths))) == depths


@given(st.text(max_size=20))
def test_any_text_is_a_depth_list_or_a_one_line_error(text):
    try:
        values = parse_ints("--depths", text)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert values and all(isinstance(v, int) for v in values)


@pytest.mark.parametrize("value", ["0", "x", "-2", "1.5"])
def test_a_bad_robustres_threads_is_one_line_naming_the_variable(cli, tmp_path, monkeypatch, value):
    monkeypatch.setenv("ROBUSTRES_THREADS", value)
    code, out, err = cli("train", "--depth", "3", "--epochs", "1")
    assert code == 2 and err.startswith("error: ROBUSTRES_THREADS must be") and err.count("\n") == 1, err
    assert not (tmp_path / "store").exists()
