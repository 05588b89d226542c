"""Per-run setup and peak RSS of stage two, two code trees side by side (issue 22): the plain import line
`python -c "import torch, numpy, h5py, pyarrow"`, then `vqa-cache train` in memory and `--stream` (under
VQA_CACHE_MEMORY_BUDGET) with each tree, interleaved (the order alternates between rounds), each a child
process timed (wall) with its peak RSS (os.wait4's ru_maxrss). Per train: the epochs' seconds (metrics.json),
the work outside them less the import line's time, and that as a multiple of the import time (goal <= 1),
with the load average when it started.

    git archive COMMIT | tar -x -C /tmp/before          # the tree to compare with
    python bench/setup_ab.py --before /tmp/before --cache-dir CACHE --dataset vqa2:DIR [train options]
    (--before-cache-dir CACHE2: the before tree reads its own cache, e.g. one its extract wrote)

Train options (after the known ones) go to every train, e.g. the encoders the cache was made with; by
default bench/scale.py's: --image-encoder resnet18 --weights random --image-size 32 --text-encoder bow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--image-encoder", "resnet18", "--weights", "random", "--image-size", "32", "--text-encoder", "bow"]


def child(argv: list, env: dict, cwd) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in GiB, load average at the start), run in `cwd` (`python -m` puts it first on
    sys.path: the tree's own root); a failure ends the benchmark."""
    load = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen(
        list(map(str, argv)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env}, cwd=cwd
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"FAILED: {' '.join(map(str, argv))}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 2**20, load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="the other code tree (a checkout or `git archive` of it)")
    p.add_argument("--after", default=str(ROOT), help="this tree (default: the one this script is in)")
    p.add_argument("--cache-dir", required=True)
    p.add_argument(
        "--before-cache-dir", help="the before tree's own cache (default --cache-dir): to compare cache formats too"
    )
    p.add_argument("--dataset", required=True, help="the dataset spec, its path absolute")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--budget", default="256M", help="VQA_CACHE_MEMORY_BUDGET of the streamed train")
    a, extra = p.parse_known_args()
    trees = {"before": Path(a.before).resolve(), "after": Path(a.after).resolve()}
    caches = {"after": Path(a.cache_dir).resolve(), "before": Path(a.before_cache_dir or a.cache_dir).resolve()}
    train = [
        "train",
        "--dataset",
        a.dataset,
        *(extra or FAST),
        "--epochs",
        a.epochs,
    ]
    train += ["--head", "concat", "--set", "optim.patience=0"]
    work = Path(tempfile.mkdtemp(prefix="setup-ab-"))
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for tree, path in trees.items():
        env = {"PYTHONPATH": str(path)}
        code = "import vqa_cache; print(vqa_cache.__file__)"
        where = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=path, capture_output=True)
        print(f"{tree}: {where.stdout.decode().strip()}")
    try:
        for r in range(a.rounds):
            imp = child([sys.executable, "-c", "import torch, numpy, h5py, pyarrow"], threads, work)
            print(f"round {r + 1}: import line {imp[0]:.2f} s, peak RSS {imp[1]:.3f} GiB (load {imp[2]:.2f})")
            for mode in ("memory", "stream"):
                for tree in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    run = work / f"{tree}-{mode}-{r}"
                    env = {**threads, "PYTHONPATH": str(trees[tree])}
                    if mode == "stream":
                        env["VQA_CACHE_MEMORY_BUDGET"] = a.budget
                    flag = "--stream" if mode == "stream" else "--no-stream"
                    argv = [sys.executable, "-m", "vqa_cache", "--cache-dir", caches[tree], *train, flag, "--out", run]
                    wall, rss, load = child(argv, env, trees[tree])
                    epochs = sum(e["seconds"] for e in json.loads((run / "metrics.json").read_text())["epochs"])
                    own = wall - epochs - imp[0]
                    print(
                        f"  {tree:<6} {mode:<6} wall {wall:6.2f} s, epochs {epochs:6.2f} s, outside less the import "
                        f"{own:5.2f} s = {own / imp[0]:.2f}x (goal <= 1); peak RSS {rss:.3f} GiB "
                        f"({rss - imp[1]:+.3f} over the import line's; load {load:.2f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
