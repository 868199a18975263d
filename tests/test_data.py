import json
import os
import shutil
import time

import pyarrow.parquet as pq
import pytest
import torch

from robustres import agnews
from robustres import data as D
from robustres import transforms as T
from robustres.datasets import data_key
from robustres.spec import SpecError, make_run_spec
from robustres.store import Store

CODE_TO_CHAR = {i + 1: c for i, c in enumerate(agnews.ALPHABET)}


def decode(codes) -> str:
    return "".join(CODE_TO_CHAR.get(int(c), "?") for c in codes if int(c) != 0)


# ------------------------------------------------------------------ generated data and subsets


def test_two_moons_is_seeded_balanced_and_sized():
    a, b = D.two_moons(300, 200, 0.2), D.two_moons(300, 200, 0.2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape == (300, 2) and a.test_x.shape == (200, 2) and a.train_x.dtype == torch.float32
    assert a.train_y.bincount().tolist() == [150, 150]
    assert not torch.equal(a.train_x[:200], a.test_x)  # train and test are different draws


def test_balanced_subset_is_fixed_and_class_balanced():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    idx = D.balanced_subset(labels, 31, 3)
    assert torch.equal(idx, D.balanced_subset(labels, 31, 3))
    assert len(idx) == 31 and len(set(idx.tolist())) == 31 and torch.equal(idx, idx.sort().values)
    counts = labels[idx].bincount(minlength=3).tolist()
    assert counts[2] == 5  # the small class gives all it has
    assert abs(counts[0] - counts[1]) <= 1 and sum(counts) == 31


def test_limit_applies_to_train_and_test():
    spec = make_run_spec(dataset="two-moons", limit_train=100, limit_test=40)
    data = D.load(spec, ".")
    assert len(data.train_y) == 100 and len(data.test_y) == 40
    assert data.train_y.bincount().tolist() == [50, 50]


def test_synthetic_data_has_the_shape_of_what_it_imitates():
    img = D.load(make_run_spec(dataset="synthetic", n_train=64, n_test=16), ".")
    assert img.train_x.shape == (64, 3, 32, 32) and img.train_x.dtype == torch.uint8 and img.num_classes == 10
    txt = D.load(make_run_spec(dataset="synthetic", synthetic_like="ag-news", n_train=8, n_test=4), ".")
    assert txt.train_x.shape == (8, 1024) and txt.train_x.dtype == torch.int16 and txt.num_classes == 4
    assert int(txt.train_x.max()) <= D.UNKNOWN_CODE


# ------------------------------------------------------------------ device-side transforms


def test_crop_flip_output_is_a_padded_crop_of_its_own_image():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    u = T.uniform(T.keyed_bits(torch.tensor([1]), T.STREAM_CROP, 0, 0, 48)).view(16, 3)
    out = T.crop_flip(x, u, pad=4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    seen_offsets, flips = set(), 0
    for i in range(len(x)):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(2) if f else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, f"sample {i} is no crop of its input"
        seen_offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(seen_offsets) > 8 and 0 < flips < len(x)
    # The extreme offsets and the flip follow u exactly.
    corner = T.crop_flip(x[:1], torch.tensor([[0.0, 0.999, 0.9]]), pad=4)
    assert torch.equal(corner[0], padded[0, :, 0:8, 8:16])
    flipped = T.crop_flip(x[:1], torch.tensor([[0.5, 0.5, 0.1]]), pad=4)
    assert torch.equal(flipped[0], x[0].flip(2))


def test_keyed_randomness_depends_on_seed_epoch_step_and_nothing_else():
    a = T.keyed_bits(torch.tensor([3, 4]), T.STREAM_CROP, 2, 7, 1000)
    assert torch.equal(a, T.keyed_bits(torch.tensor([3, 4]), T.STREAM_CROP, 2, 7, 1000))
    assert torch.equal(a[1], T.keyed_bits(torch.tensor([4]), T.STREAM_CROP, 2, 7, 1000)[0])  # any pack
    for other in (T.keyed_bits(torch.tensor([3]), T.STREAM_CROP, 3, 7, 1000),
                  T.keyed_bits(torch.tensor([3]), T.STREAM_CROP, 2, 8, 1000),
                  T.keyed_bits(torch.tensor([3]), T.STREAM_NOISE, 2, 7, 1000)):
        assert not torch.equal(a[0], other[0])
    u = T.uniform(T.keyed_bits(torch.arange(10), 1, 0, 0, 100_000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.002
    z = T.normal(T.keyed_bits(torch.arange(10), 1, 0, 0, 100_000))
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01 and torch.isfinite(z).all()


def test_each_run_gets_its_own_permutation_per_epoch():
    order = T.order(torch.tensor([0, 1, 0]), 5, 1000)
    assert order.shape == (3, 1000)
    assert all(torch.equal(row.sort().values, torch.arange(1000)) for row in order)
    assert torch.equal(order[0], order[2]) and not torch.equal(order[0], order[1])
    assert not torch.equal(order[0], T.order(torch.tensor([0]), 6, 1000)[0])


def test_gaussian_noise_on_images_has_the_level_as_std_and_is_clipped():
    x = torch.full((2, 100, 3, 32, 32), 0.5)
    bits = T.keyed_bits(torch.tensor([0, 1]), T.STREAM_NOISE, 0, 0, x[0].numel())
    noisy = T.gaussian_noise(x, torch.tensor([0.1, 0.0]), bits, clip=True)
    assert abs((noisy[0] - x[0]).std().item() - 0.1) < 0.005
    assert torch.equal(noisy[1], x[1])  # level 0 leaves its model's inputs exactly as they were
    assert T.gaussian_noise(x, torch.tensor([2.0, 2.0]), bits, clip=True).min() >= 0


def test_char_swap_is_fixed_per_example_and_swaps_the_level_fraction():
    codes = torch.randint(27, 69, (400, 1024), dtype=torch.int16)
    codes[:, 700:] = 0  # padding
    index = torch.arange(400)
    level, seed = torch.full((400,), 0.2), torch.full((400,), 3)
    a = T.char_swap(codes, index, level, seed)
    assert torch.equal(a, T.char_swap(codes, index, level, seed))  # same noise every epoch
    assert not torch.equal(a, T.char_swap(codes, index, level, seed + 1))
    changed = a != codes
    assert not changed[:, 700:].any()  # padding stays padding
    assert abs(changed[:, :700].float().mean().item() - 0.2) < 0.01
    assert a[changed].min() >= 1 and a[changed].max() <= 26  # random letters a-z
    # A batch in another order gets the same noise per example.
    perm = torch.randperm(400)
    assert torch.equal(T.char_swap(codes[perm], index[perm], level, seed), a[perm])


# ------------------------------------------------------------------ AG-NEWS


AG_ROWS = r'''"3","Wall St. Bears Claw Back (Reuters)","Reuters - Short-sellers, Wall Street's dwindling\band of ultra-cynics, are seeing green again."
"4","Google IPO priced at #36;85","The search giant's shares, priced at #36;85, rose; see &lt;b&gt;here&lt;/b&gt;."
"1","He said ""no"" to a deal","Quotes ""inside"" fields, commas, and a\\backslash; café"
"2","Long","{long}"
'''


@pytest.fixture
def ag_dir(tmp_path):
    root = tmp_path / "ag_news_csv"
    root.mkdir()
    (root / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    (root / "train.csv").write_text(AG_ROWS.replace("{long}", "x" * 2000), encoding="utf-8")
    (root / "test.csv").write_text(AG_ROWS.splitlines()[0] + "\n", encoding="utf-8")
    return tmp_path


def test_ag_news_parser_handles_the_real_files_quirks(ag_dir):
    codes, labels = agnews.read_ag_news_csv(ag_dir / "ag_news_csv" / "train.csv")
    assert codes.shape == (4, 1024) and codes.dtype.name == "int16"
    assert labels.tolist() == [2, 3, 0, 1]
    assert decode(codes[0]) == ("wall st. bears claw back (reuters) reuters - short-sellers, wall street's "
                                "dwindling\\band of ultra-cynics, are seeing green again. ").replace("'", "?")
    assert decode(codes[1]).startswith("google ipo priced at #36;85 ")
    assert "&lt;b&gt;" in decode(codes[1])  # entities are kept as characters, as in the paper's code
    third = decode(codes[2])
    assert third.startswith('he said "no" to a deal quotes "inside" fields, commas, and a\\\\backslash; caf? ')
    assert int(codes[2][third.index("caf") + 3]) == D.UNKNOWN_CODE  # é is not in the alphabet
    long_text = "long " + "x" * 2000 + " "
    assert decode(codes[3]) == long_text[:1024] and int(codes[3][-1]) != 0  # truncated at 1024
    n0 = len("wall st. bears claw back (reuters) reuters - short-sellers, wall street's dwindling\\band of "
             "ultra-cynics, are seeing green again. ")
    assert (codes[0][n0:] == 0).all() and codes[0][n0 - 1] != 0  # zero padding after the text


def test_ag_news_dataset_loads_and_caches(ag_dir):
    spec = make_run_spec(dataset="ag-news", depth=9)
    data = D.load(spec, ag_dir)  # the parent of ag_news_csv/ works too
    assert data.classes == ("World", "Sports", "Business", "Sci/Tech")
    assert data.train_x.shape == (4, 1024) and data.test_x.shape == (1, 1024)
    caches = list((ag_dir / "ag_news_csv").glob(".robustres-cache-ag-news-*.pt"))
    assert len(caches) == 1
    again = D.load(spec, ag_dir / "ag_news_csv")
    assert torch.equal(again.train_x, data.train_x)


def test_ag_news_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(D.DataError, match="classes.txt, train.csv and test.csv not found"):
        D.load(make_run_spec(dataset="ag-news", depth=9), tmp_path)


# ------------------------------------------------------------------ image folders


def write_png(img, path):
    from PIL import Image

    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)


def write_folder(root, per_class=(3, 2), seed=0, empty_test=()):
    """Random 8x8 PNGs: per_class (train, test) images in each of cat and dog (none in the test
    folders of the classes in `empty_test`)."""
    g = torch.Generator().manual_seed(seed)
    images = {}
    for split, count in zip(("train", "test"), per_class):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(0 if split == "test" and c in empty_test else count):
                img = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
                path = root / split / c / f"{i:04d}.png"
                write_png(img, str(path))
                images[path] = img
    return images


def test_imagefolder_loads_pixels_labels_and_caches(tmp_path, monkeypatch):
    images = write_folder(tmp_path)
    spec = make_run_spec(dataset="imagefolder")
    data = D.load(spec, tmp_path)
    assert data.classes == ("cat", "dog") and data.train_x.shape == (6, 3, 8, 8)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1] and data.test_y.tolist() == [0, 0, 1, 1]
    assert torch.equal(data.train_x[4], images[tmp_path / "train" / "dog" / "0001.png"])
    caches = list(tmp_path.glob(".robustres-cache-imagefolder-*.pt"))
    assert len(caches) == 1

    def no_decoding(paths):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(D, "_decode_images", no_decoding)
    assert torch.equal(D.load(spec, tmp_path).train_x, data.train_x)  # served from the cache

    # A changed file invalidates the cache: it is decoded again.
    path = tmp_path / "train" / "cat" / "0000.png"
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AssertionError, match="decoded although"):
        D.load(spec, tmp_path)


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(D.DataError, match="does not exist"):
        D.load(make_run_spec(dataset="imagefolder"), tmp_path / "nope")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(D.DataError, match="test is missing"):
        D.load(make_run_spec(dataset="imagefolder"), tmp_path)


def test_imagefolder_rejects_mixed_image_sizes(tmp_path):
    write_folder(tmp_path)
    write_png(torch.zeros(3, 9, 9, dtype=torch.uint8), str(tmp_path / "train" / "dog" / "9999.png"))
    with pytest.raises(D.DataError, match="all images must share one size"):
        D.load(make_run_spec(dataset="imagefolder"), tmp_path)


def test_cifar10_offline_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTRES_OFFLINE", "1")
    with pytest.raises(D.DataError) as err:
        D.load(make_run_spec(dataset="cifar10"), tmp_path)
    assert str(tmp_path) in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)


# ------------------------------------------------------------------ AG-NEWS: encodings, classes.txt


def test_a_non_utf8_byte_in_an_ag_news_csv_is_one_error_naming_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b'"1","fine","ascii"\n"2","caf\xe9","latin-1"\n')
    with pytest.raises(D.DataError) as err:
        agnews.read_ag_news_csv(path)
    assert str(err.value) == f"ag-news: {path}:2: byte 0xe9 at column 9 is not UTF-8; save the file as UTF-8"


def test_ag_news_files_with_a_utf8_byte_order_mark_are_read_as_without(ag_dir):
    root = ag_dir / "ag_news_csv"
    plain = D.load(make_run_spec(dataset="ag-news", depth=9), ag_dir)
    for name in ("classes.txt", "train.csv", "test.csv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    marked = D.load(make_run_spec(dataset="ag-news", depth=9), ag_dir)
    assert marked.classes == ("World", "Sports", "Business", "Sci/Tech")
    assert marked.train_y.tolist() == [2, 3, 0, 1]
    assert torch.equal(marked.train_x, plain.train_x) and decode(marked.test_x[0]).startswith("wall st. bears")


def test_an_empty_classes_txt_is_named_as_empty(ag_dir):
    path = ag_dir / "ag_news_csv" / "classes.txt"
    path.write_text("\n \n")
    with pytest.raises(D.DataError) as err:
        D.load(make_run_spec(dataset="ag-news", depth=9), ag_dir)
    assert str(err.value).startswith(f"ag-news: {path} is empty;") and "1.." not in str(err.value)


# ------------------------------------------------------------------ data fingerprints


def test_an_image_folders_fingerprint_follows_its_content_not_its_place(tmp_path, monkeypatch):
    write_folder(tmp_path / "a")
    write_folder(tmp_path / "b", seed=1)
    spec = make_run_spec(dataset="imagefolder")
    first = D.load(spec, tmp_path / "a").fingerprint
    assert len(first) == 16 and D.load(spec, tmp_path / "b").fingerprint != first
    # A copy elsewhere, with new file times, is the same data.
    shutil.copytree(tmp_path / "a", tmp_path / "copy", copy_function=shutil.copyfile,
                    ignore=shutil.ignore_patterns(".robustres-cache-*"))
    assert D.load(spec, tmp_path / "copy").fingerprint == first
    # Computed once: later loads take it from the decoded cache.
    with monkeypatch.context() as m:
        m.setattr(D, "_content_hash", lambda *args: pytest.fail("hashed again"))
        assert D.load(spec, tmp_path / "a").fingerprint == first
    # Another image in place of one: other data.
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(tmp_path / "copy" / "test" / "dog" / "0001.png"))
    assert D.load(spec, tmp_path / "copy").fingerprint not in (None, first)


def test_ag_news_fingerprints_its_bytes_and_cifar10_its_checksum(ag_dir):
    from torchvision.datasets import CIFAR10

    spec = make_run_spec(dataset="ag-news", depth=9)
    first = D.load(spec, ag_dir).fingerprint
    train = ag_dir / "ag_news_csv" / "train.csv"
    train.write_bytes(train.read_bytes().replace(b"Wall St.", b"Wall Street"))
    assert D.load(spec, ag_dir).fingerprint not in (None, first)
    assert D.CIFAR10_MD5 == CIFAR10.tgz_md5  # the files torchvision accepts are these
    assert D.describe_source(make_run_spec(dataset="cifar10"), ag_dir).fingerprint == D.CIFAR10_FINGERPRINT
    assert D.describe_source(make_run_spec(dataset="two-moons"), ag_dir).fingerprint is None
    moons = make_run_spec(dataset="two-moons", h=0.1, seed=3)
    assert moons.with_(data_fingerprint="0" * 16).run_id != moons.run_id


def _train(cli, folder, *more):
    return cli("train", "--dataset", "imagefolder", "--data-dir", folder, "--depth", "8", "--epochs", "1",
               "--json", *more)


def test_runs_on_different_image_folders_are_different_runs(cli, tmp_path):
    write_folder(tmp_path / "a")
    write_folder(tmp_path / "b", seed=1)
    code, out, err = _train(cli, tmp_path / "a")
    assert code == 0, err
    (a,) = json.loads(out)["runs"]
    # noise-eval on other data than the run's: one line, exit 2, nothing written.
    code, out, err = cli("noise-eval", "--dataset", "imagefolder", "--data-dir", tmp_path / "b", "--levels", "0")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: imagefolder {tmp_path / 'b'} is not the data run {a['run_id']} was trained on")
    assert not (tmp_path / "store" / "noise_evals").exists()
    code, out, err = cli("noise-eval", "--dataset", "imagefolder", "--data-dir", tmp_path / "a", "--levels", "0",
                         "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)["noise_evals"]] == [a["run_id"]], err
    # Other images: another run, trained.
    code, out, err = _train(cli, tmp_path / "b")
    (b,) = json.loads(out)["runs"]
    assert code == 0 and b["run_id"] != a["run_id"] and b["status"] == "completed" and "not retrained" not in err
    runs = Store(tmp_path / "store").runs().set_index("run_id")
    assert sorted(runs.index) == sorted([a["run_id"], b["run_id"]])
    spec = make_run_spec(dataset="imagefolder")
    assert runs.data_fingerprint[b["run_id"]] == D.load(spec, tmp_path / "b").fingerprint
    # The same folder again: reported from the store.
    code, out, err = _train(cli, tmp_path / "a")
    assert code == 0 and json.loads(out)["runs"][0]["run_id"] == a["run_id"] and err.count("not retrained") == 1
    assert Store(tmp_path / "store").get_run(a["run_id"])["updated_at"] == runs.updated_at[a["run_id"]]


def test_a_run_stored_without_a_fingerprint_is_found_with_one_warning(cli, tmp_path, monkeypatch):
    from dataclasses import replace

    write_folder(tmp_path / "a")
    real = D.load_source
    with monkeypatch.context() as m:  # an older robustres: no fingerprint, and no column for it
        m.setattr(D, "load_source", lambda *args, **kwargs: replace(real(*args, **kwargs), fingerprint=None))
        code, out, err = _train(cli, tmp_path / "a", "--h", "0.1,1")
    assert code == 0, err
    old_ids = sorted(r["run_id"] for r in json.loads(out)["runs"])
    for run_id in old_ids:
        path = tmp_path / "store" / "runs" / f"{run_id}.parquet"
        pq.write_table(pq.read_table(path).drop(["data_fingerprint"]), path)
    code, out, err = _train(cli, tmp_path / "a", "--h", "0.1,1")
    assert code == 0, err
    assert sorted(r["run_id"] for r in json.loads(out)["runs"]) == old_ids and err.count("not retrained") == 2
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "2 run(s)" in warnings[0] and "without a data fingerprint" in warnings[0]
    assert sorted(p.stem for p in (tmp_path / "store" / "runs").glob("*.parquet")) == old_ids
    # noise-eval evaluates them and says once that their data cannot be checked.
    code, out, err = cli("noise-eval", "--dataset", "imagefolder", "--data-dir", tmp_path / "a", "--levels", "0",
                         "--json")
    assert code == 0 and sorted(r["run_id"] for r in json.loads(out)["noise_evals"]) == old_ids, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "2 run(s)" in warnings[0] and "not checked" in warnings[0]


# ------------------------------------------------------------------ sizes, classes, dry runs


def test_limits_larger_than_the_data_are_refused(tmp_path, ag_dir):
    for kwargs, message in ((dict(dataset="two-moons", limit_train=1001), "--limit-train 1001 is more than the "
                             "1,000 training examples of two-moons"),
                            (dict(dataset="cifar10", limit_test=10_001), "--limit-test 10001 is more than the "
                             "10,000 test examples of cifar10"),
                            (dict(dataset="synthetic", n_test=64, limit_test=65), "the 64 test examples")):
        with pytest.raises(SpecError) as err:
            make_run_spec(**kwargs)
        assert message in str(err.value)
    assert make_run_spec(dataset="two-moons", limit_train=1000).limit_train == 1000  # all of it is fine
    with pytest.raises(SpecError, match="--limit-test 1001 is more than the 1,000 test examples of two-moons"):
        D.load(make_run_spec(dataset="two-moons").with_(limit_test=1001), ".")  # as noise-eval --limit-test does
    write_folder(tmp_path / "pets")  # 6 training and 4 test images
    spec = make_run_spec(dataset="imagefolder", limit_train=7)
    with pytest.raises(SpecError) as err:
        D.load(spec, tmp_path / "pets")
    assert str(err.value) == f"--limit-train 7 is more than the 6 training examples of imagefolder {tmp_path / 'pets'}"
    assert not list((tmp_path / "pets").glob(".robustres-cache-*"))  # refused before decoding or caching
    assert len(D.load(spec.with_(limit_train=6, limit_test=4), tmp_path / "pets").train_y) == 6
    with pytest.raises(SpecError) as err:
        D.load(make_run_spec(dataset="ag-news", depth=9, limit_test=2), ag_dir)
    assert "--limit-test 2 is more than the 1 test examples of ag-news" in str(err.value)
    assert not list((ag_dir / "ag_news_csv").glob(".robustres-cache-*"))


def test_an_image_class_without_test_images_warns_and_a_test_split_without_any_is_refused(cli, tmp_path):
    write_folder(tmp_path / "pets", empty_test=("dog",))
    code, _, err = _train(cli, tmp_path / "pets")
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: imagefolder {tmp_path / 'pets'}: class 'dog' has no test examples (the test accuracy "
        f"covers the other classes only)"]
    write_folder(tmp_path / "bare", empty_test=("cat", "dog"))
    code, out, err = _train(cli, tmp_path / "bare", "--store", tmp_path / "other")
    assert code == 2 and out == ""
    assert err == f"error: imagefolder: no images (.jpg, .jpeg, .png) under {tmp_path / 'bare' / 'test'}\n"
    assert not (tmp_path / "other").exists()


def test_dry_runs_work_without_the_data_and_say_what_is_unknown(cli, tmp_path):
    code, out, err = cli("train", "--dataset", "ag-news", "--depth", "17", "--dry-run", "--json")
    assert code == 0, err
    (run,) = json.loads(out)["runs"]
    assert run["run_id"] is None and run["unknown_without_data"] == ["run_id", "data_fingerprint"]
    assert run["params"] == 9_100_452 and run["flops_per_image"] > 0  # AG-NEWS's 1024 characters, 4 classes
    assert "not found in" in run["data_note"]
    code, out, err = cli("train", "--dataset", "ag-news", "--depth", "17", "--dry-run")
    assert code == 0 and "note: ? is unknown without the data" in out, err
    code, out, err = cli("train", "--dataset", "imagefolder", "--depth", "8", "--dry-run", "--json")
    (run,) = json.loads(out)["runs"]
    assert code == 0 and (run["run_id"], run["params"], run["flops_per_image"]) == (None, None, None), err
    assert not (tmp_path / "store").exists() and not (tmp_path / "data").exists()


def test_a_dry_run_counts_and_fingerprints_an_image_folder_and_writes_nothing(cli, tmp_path):
    pets = tmp_path / "pets"
    write_folder(pets, per_class=(5, 2))  # 10 training images
    args = ("sweep", "--dataset", "imagefolder", "--data-dir", pets, "--depths", "8", "--h", "0.1,1", "--seeds", "1",
            "--epochs", "1", "--json")
    code, out, err = cli(*args, "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert [p["train_images"] for p in plan["packs"]] == [10] and plan["warnings"] == []
    code, out, err = cli(*args, "--dry-run", "--limit-train", "4")
    limited = json.loads(out)
    assert [p["train_images"] for p in limited["packs"]] == [4]
    assert plan["packs"][0]["tflop"] == pytest.approx(2.5 * limited["packs"][0]["tflop"])
    assert not list(pets.glob(".robustres-cache-*")) and not (tmp_path / "store").exists()
    # The run ids it planned are those training gives.
    code, out, err = cli(*args)
    assert code == 0 and sorted(r["run_id"] for r in json.loads(out)["runs"]) == sorted(plan["packs"][0]["run_ids"])


def test_a_preset_finds_its_runs_whatever_their_data_fingerprint(cli, tmp_path):
    write_folder(tmp_path / "pets")
    preset = tmp_path / "pets.yaml"
    preset.write_text(f"dataset: imagefolder\ndata_dir: {tmp_path / 'pets'}\ndepths: [8]\nh: [0.1, 1]\nepochs: 1\nseeds: 1\n"
                      f"precision: fp32\n")
    code, out, err = cli("sweep", "--config", preset, "--json")
    assert code == 0, err
    trained = sorted(r["run_id"] for r in json.loads(out)["runs"])
    assert all(Store(tmp_path / "store").get_run(r)["data_fingerprint"] for r in trained)
    code, out, err = cli("report", "--config", preset, "--require-complete", "--format", "json")
    assert code == 0, err
    assert sum(g["runs"] for g in json.loads(out)["groups"]) == 2
    code, out, err = cli("noise-eval", "--config", preset, "--data-dir", tmp_path / "pets", "--levels", "0", "--json")
    assert code == 0 and sorted({r["run_id"] for r in json.loads(out)["noise_evals"]}) == trained, err


def test_the_preflight_reads_each_source_once_and_checks_the_largest_limit_its_runs_ask(tmp_path, monkeypatch):
    from robustres.execution.preflight import preflight
    from robustres.spec import make_execution

    write_folder(tmp_path / "pets")  # 6 training and 4 test images
    execution = make_execution({"store": tmp_path / "store", "data_dir": tmp_path / "pets"})
    runs = [make_run_spec(dataset="imagefolder", depth=8, limit_train=n) for n in (3, 7, 5)]
    with pytest.raises(SpecError, match="--limit-train 7 is more than the 6 training examples"):
        preflight(runs, execution)  # the first run's limit fits: the check takes the largest
    assert not list((tmp_path / "pets").glob(".robustres-cache-*")) and not (tmp_path / "store").exists()

    decoded = []
    real = D._decode_images
    monkeypatch.setattr(D, "_decode_images", lambda paths: decoded.append(len(paths)) or real(paths))
    ready = preflight([spec.with_(limit_train=min(spec.limit_train, 6)) for spec in runs], execution)
    assert decoded == [6, 4]  # one read of the folder for three runs and three limits
    assert [len(ready.datasets[data_key(spec)].train_y) for spec in ready.runs] == [3, 6, 5]
    assert len({spec.data_fingerprint for spec in ready.runs}) == 1 and ready.runs[0].data_fingerprint
