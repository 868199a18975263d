"""Does the default job's answer hold up when the seeds change? (issue 15)

Runs the `quick-moons` preset (make run's job) with three disjoint seed sets, 0-2, 3-5 and 6-8, each
into its own store, and reports each depth's recommended h, its indistinguishable set and its
stability edge. Checks the two properties the README claims:

- each seed set's recommended h lies inside the other sets' indistinguishable sets;
- the stability edge does not grow with depth.

Exit code 1 when either fails. From the repository root (about 1-2 minutes on 2 cores):

    .venv/bin/python -m benchmarks.seed_sets
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date

SEED_SETS = ("0..2", "3..5", "6..8")


def robustres(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "robustres", *args], env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout


def main() -> int:
    print(f"{date.today()} {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    answers: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seeds in SEED_SETS:
            env = dict(os.environ, ROBUSTRES_STORE=os.path.join(tmp, seeds.replace("..", "-")))
            started = time.perf_counter()
            robustres("sweep", "--config", "quick-moons", "--seeds", seeds, "--json", env=env)
            print(f"seeds {seeds}: sweep {time.perf_counter() - started:.1f} s")
            doc = json.loads(robustres("report", "--format", "json", env=env))
            for rec in doc["recommendations"]:
                answers.setdefault(rec["depth"], {})[seeds] = rec
    print("\n| depth | seeds | recommended h | indistinguishable set | stability edge |")
    print("|---|---|---|---|---|")
    failures = []
    for depth, by_seeds in sorted(answers.items()):
        for seeds, rec in by_seeds.items():
            hs = ", ".join(f"{h:g}" for h in rec["indistinguishable"])
            print(f"| {depth} | {seeds} | {rec['h']:g} | {{{hs}}} | {rec['stability_edge']:g} |")
            for other, other_rec in by_seeds.items():
                if other != seeds and rec["h"] not in other_rec["indistinguishable"]:
                    failures.append(f"depth {depth}: seeds {seeds} recommend {rec['h']:g}, outside seeds {other}'s set")
    for seeds in SEED_SETS:
        edges = [answers[d][seeds]["stability_edge"] for d in sorted(answers)]
        if any(b > a for a, b in zip(edges, edges[1:])):
            failures.append(f"seeds {seeds}: the stability edge grows with depth ({edges})")
    print("\n" + ("\n".join(failures) if failures else "both properties hold"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
