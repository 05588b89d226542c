"""`sweep --parallel K` against trials one after another (issue 22), side by side in one run.

A VQA v2-shaped set of N images (bench/vqa2_shape.py) is extracted once (ResNet18 random init at 32 px,
bag-of-words; the heads' work does not depend on the encoders), then the same sweep of T trials runs in
each mode, each a child process, the modes interleaved `--repeat` times:

  - `--jobs 1`: one trial at a time (torch's threads: vqa-cache's default);
  - `--jobs 2`: two trials at a time in threads (what train/easyvqa-sweep.toml asks for);
  - `--parallel K`: K trials trained together in one pass over the cache;
  - with `--denormals`, `--jobs 1` and `--parallel K` again with VQA_CACHE_DENORMALS=keep (denormal floats
    computed as they are, as before vqa-cache flushed them to zero): what the flush saves;
  - with `--bound`, `--jobs 1 --threads 1`: the trials' arithmetic on one CPU. Spread perfectly over all
    the CPUs, with nothing shared, it would take that time / CPUs: printed as a ratio to `--jobs 1`, the
    best that running trials side by side can do here.

The pruner is off and every trial is a quasi-random startup trial, so each mode runs the very same
trials; the run checks that every trial's best validation accuracy agrees across the modes (to 1e-4:
the modes take their ops on different thread counts). Printed: each mode's seconds for the trials (the
sweep's own "N trials in S s" line: the cache load and imports excluded) and wall, and each mode's
ratio to `--jobs 1` (goal for --parallel 4 and 8 trials: <= 0.6).

    python bench/sweep_parallel.py --images 2000 --trials 8            # a few minutes
    python bench/sweep_parallel.py --images 20000 --trials 8 --data-dir /tmp/vqa2   # the issue's size
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale import FAST, child, cli  # noqa: E402  (bench/scale.py: timed child processes)

from vqa_cache.threads import usable_cpus  # noqa: E402


def sweep_args(d: Path, trials: int, epochs: int, out: Path) -> list:
    return [
        "sweep",
        "train/easyvqa-sweep.toml",
        "--dataset",
        f"vqa2:{d}",
        *FAST,
        "--trials",
        trials,
        "--set",
        f"sweep.epochs={epochs}",
        "--set",
        f"sweep.startup_trials={trials}",  # quasi-random: the same parameters in every mode
        "--set",
        "sweep.prune_startup_trials=1000000",  # no pruning: every mode runs every trial to the end
        "--out",
        out,
    ]


def best_accuracies(out: Path) -> list[float]:
    with open(out / "trials.csv") as f:
        return [float(row["best_val_accuracy"]) for row in csv.DictReader(f)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2, help="times each mode runs, interleaved")
    p.add_argument("--data-dir", help="keep the generated dataset here (reused when present)")
    p.add_argument("--denormals", action="store_true", help="also run two modes with denormals kept")
    p.add_argument("--bound", action="store_true", help="also run --jobs 1 --threads 1 (the arithmetic on one CPU)")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vqa-cache-sweep-"))
    data_dir = Path(a.data_dir) if a.data_dir else work
    d, cache = data_dir / f"vqa2-{a.images}", work / "cache"
    print(
        f"bench/sweep_parallel.py: {a.images} images, {a.trials} trials of {a.epochs} epochs, {os.cpu_count()} "
        f"CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start"
    )
    modes = {  # name -> (sweep options, environment)
        "--jobs 1": (["--jobs", 1], None),
        "--jobs 2": (["--jobs", 2], None),
        f"--parallel {a.parallel}": (["--parallel", a.parallel], None),
    }
    if a.denormals:
        keep = {"VQA_CACHE_DENORMALS": "keep"}
        modes["--jobs 1, denormals kept"] = (["--jobs", 1], keep)
        modes[f"--parallel {a.parallel}, denormals kept"] = (["--parallel", a.parallel], keep)
    if a.bound:
        modes["--jobs 1 --threads 1"] = (["--jobs", 1, "--threads", 1], None)
    try:
        if not (d / "info.json").is_file():
            child([sys.executable, str(HERE / "scale.py"), "--helper", "gen", d, a.images, 0], work / "gen.log")
        child(cli(cache, "extract", "--dataset", f"vqa2:{d}", *FAST), work / "extract.log")
        seconds: dict = {m: [] for m in modes}
        walls: dict = {m: [] for m in modes}
        accuracies: dict = {}
        for rep in range(a.repeat):
            for i, (m, (extra, env)) in enumerate(modes.items()):
                out, log = work / f"sweep-{rep}-{i}", work / "sweep.log"
                wall, _ = child(cli(cache, *sweep_args(d, a.trials, a.epochs, out), *extra), log, env)
                said = re.search(r"(\d+) trials in ([\d.]+)s", log.read_text())
                seconds[m].append(float(said.group(2)))
                walls[m].append(wall)
                accuracies.setdefault(m, best_accuracies(out))
                shutil.rmtree(out)
                print(f"  {m:<28} run {rep + 1}: trials {seconds[m][-1]:.0f} s, wall {wall:.1f} s", flush=True)
        base = sum(seconds["--jobs 1"])
        print(f"\n{a.trials} trials, {a.epochs} epochs each ({a.images} images), summed over {a.repeat} runs:")
        for m in modes:
            print(
                f"  {m:<28} trials {sum(seconds[m]):7.0f} s  wall {sum(walls[m]):7.1f} s  "
                f"ratio to --jobs 1: {sum(seconds[m]) / base:.2f}"
            )
        if a.bound:
            cpus = usable_cpus()
            print(
                f"  the --threads 1 time spread perfectly over {cpus} CPUs: "
                f"{sum(seconds['--jobs 1 --threads 1']) / cpus / base:.2f} of --jobs 1"
            )
        first, together = accuracies["--jobs 1"], accuracies[f"--parallel {a.parallel}"]
        agree = len(first) == len(together) and all(abs(x - y) <= 1e-4 for x, y in zip(first, together))
        print(f"  every trial's best val accuracy equal in --jobs 1 and --parallel (to 1e-4): {agree}")
        if a.denormals:
            kept = accuracies["--jobs 1, denormals kept"]
            diff = max(abs(x - y) for x, y in zip(first, kept))
            print(f"  largest difference of a trial's best val accuracy, denormals kept against flushed: {diff:.6f}")
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
