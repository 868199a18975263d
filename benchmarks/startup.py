"""Start-up time of the CLI: `--help` and answers to bad input, which must come before torch loads.

Targets (issue 14): `robustres --help` at most 0.3 s, a bad-input answer at most 0.5 s, on 2 quiet
cores. Each command runs `--repeat` times in a fresh process (after one warm-up run that fills the
OS file cache); prints the median and the range, and whether torch was imported (checked by running
the same argv in-process under `python -X importtime`).

From the repository root:

    .venv/bin/python -m benchmarks.startup --repeat 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

COMMANDS = {
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "train --lr 0": ["train", "--lr", "0"],
    "sweep --seeds 0..10000000 --dry-run": ["sweep", "--depths", "3", "--h", "0.1", "--seeds", "0..10000000",
                                            "--dry-run"],
    "report --store missing/": ["report", "--store", "missing"],
    "noise-eval --levels 2": ["noise-eval", "--levels", "2"],
    "train --device cuda (no GPU here)": ["train", "--device", "cuda", "--dry-run"],
    # Bad input that only the store's rows reveal: pandas and pyarrow must load to read them.
    "noise-eval --kinds mosaic --store moons": ["noise-eval", "--kinds", "mosaic", "--store", "moons"],
}
TARGETS = {"--help": 0.3, "train --help": 0.3}  # the others are bad input: 0.5 s


def robustres() -> list[str]:
    return [sys.executable, "-c", "import sys; from robustres.cli import run; sys.argv[0] = 'robustres'; run()"]


def timed(argv: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(robustres() + argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def imports_torch(argv: list[str], cwd: str) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime"] + robustres()[1:] + argv, cwd=cwd,
                          capture_output=True, text=True, check=False)
    return any(line.rstrip().endswith("| torch") for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{date.today()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print("| command | median s | min-max s | target s | torch imported |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run(robustres() + ["train", "--depth", "3", "--epochs", "1", "--store", "moons"], cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # two-moons runs to read
        for name, argv in COMMANDS.items():
            timed(argv, cwd)  # warm the file cache
            times = [timed(argv, cwd) for _ in range(args.repeat)]
            target = TARGETS.get(name, 0.5)
            print(f"| `robustres {name}` | {statistics.median(times):.2f} | {min(times):.2f}-{max(times):.2f} "
                  f"| {target} | {'yes' if imports_torch(argv, cwd) else 'no'} |")
        assert not Path(cwd, "robustres-store").exists(), "a bad-input command wrote a store"


if __name__ == "__main__":
    main()
