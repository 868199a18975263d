"""report --html: one self-contained page, checked as a file and rendered in a real browser."""

import re
import shutil
import subprocess

import pytest

SWEEPS = __import__("pathlib").Path(__file__).resolve().parents[1] / "sweeps"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from robustres.cli import main

    root = tmp_path_factory.mktemp("page")
    store = root / "store"
    assert main(["sweep", "--config", str(SWEEPS / "ci-smoke.yaml"), "--seeds", "3", "--store", str(store)]) == 0
    path = root / "report.html"
    assert main(["report", "--store", str(store), "--html", str(path)]) == 0
    return path


def test_the_page_is_self_contained_and_holds_the_answer(page):
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") >= 3  # Fig. 6, Fig. 3, learning curves
    assert not re.search(r"<script|<link|<img|@import|url\((?!#)", text)  # nothing fetched, nothing run
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)
    assert text.count("Recommended: h = ") == 2  # one answer per depth of ci-smoke (3 and 5)
    assert "indistinguishable" in text and "95 % CI" in text and "divergence rate" in text


def test_the_page_renders_in_a_real_browser(page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package when it can)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "Recommended: h = " in dom and "<svg" in dom
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    colours = len({tuple(p) for p in (pixels[::8, ::8].reshape(-1, 3) * 255).astype(int)})
    assert pixels.shape[:2] == (1600, 1280) and not_white > 0.02 and colours > 20  # text, tables, figures


def test_the_title_names_the_preset_reported_on_and_only_one(page, tmp_path, monkeypatch):
    from robustres.cli import main

    assert "<h1>robustres report</h1>" in page.read_text(encoding="utf-8")  # no --config: no name
    monkeypatch.chdir(tmp_path)
    shutil.copy(SWEEPS / "ci-smoke.yaml", "None")  # a preset that names itself as no preset once did
    store = page.parent / "store"
    assert main(["report", "--config", "None", "--store", str(store), "--html", "named.html"]) == 0
    assert "<h1>robustres report: None</h1>" in (tmp_path / "named.html").read_text(encoding="utf-8")
