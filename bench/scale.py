"""Cost at VQA v2 shape (issue 22): a generated VQA v2-shaped dataset of N images (bench/vqa2_shape.py)
through extract, train in memory, train --stream under VQA_CACHE_MEMORY_BUDGET, predict and eval, each a
child process timed (wall) with its peak RSS (os.wait4's ru_maxrss: the largest process of the step, its
DataLoader workers included; this parent imports no torch, so that what a child inherits when forked stays
small), all side by side in one run. Printed per size:

  - each step's time and peak RSS, and a plain `python -c "import torch, numpy, h5py, pyarrow"` timed in
    the same run (the interpreter's own import time);
  - train's work outside its epochs (wall less the epochs' seconds in metrics.json), less that import time,
    against that import time (goal: at most 1x);
  - the image stage of extract against a forward-only loop of the same encoder on the same images decoded
    beforehand, and the epochs against forward+backward+AdamW steps of the same head on one batch already
    in memory (both ratios: 1.0 is the limit);
  - between consecutive sizes, each step's growth exponent log(t2/t1) / log(N2/N1) of its work (wall less
    the import time; goal <= 1.05).

--threads-check adds, at the largest size, train epochs with --threads 1, --threads 2 and the default,
interleaved twice, while --busy K CPU-bound processes run (goal: default within 1.15x of the best).

    python bench/scale.py --sizes 300,900                # make bench (small)
    python bench/scale.py --sizes 5000,20000 --epochs 2 --threads-check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
FAST = ["--image-encoder", "resnet18", "--weights", "random", "--image-size", "32", "--text-encoder", "bow"]


def child(argv: list, log: Path, env: dict | None = None) -> tuple[float, float]:
    """Run argv; (wall seconds, peak RSS in MiB). Its output goes to `log`; a failure ends the benchmark."""
    with open(log, "w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(
            list(map(str, argv)),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"FAILED ({proc.returncode}): {' '.join(map(str, argv))}\n{log.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def cli(cache: Path, *args) -> list:
    return [sys.executable, "-m", "vqa_cache", "--cache-dir", str(cache), *map(str, args)]


def epochs_seconds(run: Path) -> float:
    return sum(e["seconds"] for e in json.loads((run / "metrics.json").read_text())["epochs"])


def image_forward_only(cache: Path, dataset: str, batch: int = 64) -> tuple[float, float]:
    """(seconds of the encoder alone on the dataset's images, decoded beforehand; the image stage's seconds
    recorded in its manifest)."""
    import torch

    from vqa_cache.cache import Entry
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.encoders.image import ImageFiles, collate
    from vqa_cache.extraction.images import build_image_encoder, encode_images
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    recipe = ExtractRecipe(
        DatasetSettings(name=dataset),
        ImageSettings(encoder="resnet18", weights="random", size=32),
        TextSettings(encoder="bow", weights="random"),
        device="cpu",
    )
    plan = make_plan(recipe, allow_download=False, root=cache)
    files = ImageFiles(plan.image_paths, plan.image_choice.preprocess)
    decoded = collate([files[i] for i in range(len(files))])[1]
    encoder = build_image_encoder(plan, torch.device("cpu"))
    encode_images(encoder, decoded[:batch], torch.device("cpu"))
    t = time.perf_counter()
    for s in range(0, len(decoded), batch):
        encode_images(encoder, decoded[s : s + batch], torch.device("cpu"))
    forward = time.perf_counter() - t
    stage = Entry(cache, plan.image_key).manifest()["timings"]["seconds"]
    return forward, stage


def train_steps_only(run: Path, steps: int = 30) -> float:
    """Seconds per epoch of forward+backward+AdamW of the run's head on one batch already in memory, as many
    steps as the run's epochs take."""
    import torch

    from vqa_cache import heads

    config = json.loads((run / "config.json").read_text())
    head = heads.from_config(config["head"])
    batch = config["recipe"]["optim"]["batch_size"]
    h = config["head"]
    img = torch.randn(batch, h["image_dim"])
    q = torch.randn(batch, h["question_dim"])
    target = torch.rand(batch, h["num_answers"])
    opt = torch.optim.AdamW(head.parameters())

    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(img, q), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t) / steps
    return per_step * math.ceil(config["questions"]["train"] / batch)


def helper(what: str, *args) -> None:
    """The parts that import torch or build big objects run in a child process of their own (this one):
    a child's peak RSS counts what it inherited when forked, so the parent stays small."""
    if what == "gen":
        from vqa2_shape import make_dataset

        d, n, seed = Path(args[0]), int(args[1]), int(args[2])
        shutil.rmtree(d, ignore_errors=True)
        info = make_dataset(d, n, seed=seed)
        (d / "info.json").write_text(json.dumps({k: v for k, v in info.items() if k != "files"}))
    elif what == "limits":  # torch threads as vqa-cache picks them (no spinning, usable CPUs)
        from vqa_cache import threads

        threads.prefer_passive_wait()
        threads.set_threads(None)
        forward, stage = image_forward_only(Path(args[0]), args[1])
        Path(args[3]).write_text(
            json.dumps(
                {"image_forward": forward, "image_stage": stage, "steps_only_epoch": train_steps_only(Path(args[2]))}
            )
        )


def one_size(n: int, work: Path, a, data_dir: Path) -> dict:
    d, cache = data_dir / f"vqa2-{n}", work / f"cache-{n}"
    me = [sys.executable, str(Path(__file__).resolve()), "--helper"]
    if not (d / "info.json").is_file():
        child([*me, "gen", d, n, a.seed], work / "gen.log")
    info = json.loads((d / "info.json").read_text())
    ds = ["--dataset", f"vqa2:{d}"]
    train_args = [*ds, *FAST, "--epochs", a.epochs, "--head", "concat", "--set", "optim.patience=0"]
    r = {"images": n, "questions": info["questions"], "distinct_texts": info["distinct_texts"]}
    r["import"] = child([sys.executable, "-c", "import torch, numpy, h5py, pyarrow"], work / "import.log")
    r["extract"] = child(cli(cache, "extract", *ds, *FAST), work / f"extract-{n}.log")
    mem, stream = work / f"run-{n}", work / f"run-{n}-stream"
    r["train"] = child(cli(cache, "train", *train_args, "--no-stream", "--out", mem), work / f"train-{n}.log")
    r["train_epochs"] = epochs_seconds(mem)
    r["stream"] = child(
        cli(cache, "train", *train_args, "--stream", "--out", stream),
        work / f"stream-{n}.log",
        env={"VQA_CACHE_MEMORY_BUDGET": a.budget},
    )
    r["stream_epochs"] = epochs_seconds(stream)
    preds = work / f"predictions-{n}.json"
    r["predict"] = child(
        cli(cache, "predict", "--run", mem, "--split", "val", "--out", preds), work / f"predict-{n}.log"
    )
    files = {
        "questions": d / "v2_OpenEnded_mscoco_val2014_questions.json",
        "annotations": d / "v2_mscoco_val2014_annotations.json",
    }
    r["eval"] = child(
        cli(
            cache,
            "eval",
            "--questions",
            files["questions"],
            "--annotations",
            files["annotations"],
            "--predictions",
            preds,
        ),
        work / f"eval-{n}.log",
    )
    child([*me, "limits", cache, f"vqa2:{d}", mem, work / "limits.json"], work / f"limits-{n}.log")
    r.update(json.loads((work / "limits.json").read_text()))
    return r


def report(results: list, a) -> None:
    steps = ("import", "extract", "train", "stream", "predict", "eval")
    for r in results:
        imp = r["import"][0]
        print(
            f"\nN = {r['images']} images, {r['questions']} questions, {r['distinct_texts']} distinct texts "
            f"({r['distinct_texts'] / r['questions']:.0%})"
        )
        for s in steps:
            print(
                f"  {s:<8} {r[s][0]:8.1f} s   peak RSS {r[s][1] / 1024:6.2f} GiB"
                + (f" ({(r[s][1] - r['import'][1]) / 1024:+.2f} over the import's)" if s != "import" else "")
                + (f"   (budget {a.budget})" if s == "stream" else "")
            )
        for s, e in (("train", "train_epochs"), ("stream", "stream_epochs")):
            outside = r[s][0] - r[e]
            print(
                f"  {s}: epochs {r[e]:.1f} s, outside the epochs {outside:.1f} s; less the import time: "
                f"{outside - imp:.1f} s = {(outside - imp) / imp:.2f}x the import time (goal <= 1)"
            )
        print(
            f"  image stage {r['image_stage']:.1f} s vs forward-only {r['image_forward']:.1f} s: "
            f"{r['image_forward'] / r['image_stage']:.2f} of forward-only"
        )
        per_epoch = r["train_epochs"] / a.epochs
        print(
            f"  train epoch {per_epoch:.2f} s vs steps-only {r['steps_only_epoch']:.2f} s: "
            f"{r['steps_only_epoch'] / per_epoch:.2f} of steps-only (the epoch also evaluates)"
        )


def report_growth(results: list) -> None:
    steps = ("import", "extract", "train", "stream", "predict", "eval")
    for r1, r2 in zip(results, results[1:]):
        scale = math.log(r2["images"] / r1["images"])
        parts = []
        for s in steps[1:]:
            # eval imports no torch (the official metric: json and numpy): its work is its whole wall
            w1, w2 = (max(1e-3, r[s][0] - (0 if s == "eval" else r["import"][0])) for r in (r1, r2))
            parts.append(f"{s} {math.log(w2 / w1) / scale:.2f}")
        for e in ("train_epochs", "stream_epochs"):
            parts.append(f"{e.replace('_', ' ')} {math.log(r2[e] / r1[e]) / scale:.2f}")
        print(
            f"\ngrowth exponents {r1['images']} -> {r2['images']} (work = wall less the import time; eval's: its wall): "
            + ", ".join(parts)
        )


def threads_check(n: int, work: Path, a, data_dir: Path) -> None:
    """Epoch seconds with --threads 1, 2 and the default, interleaved, beside `a.busy` busy processes."""
    cache, d = work / f"cache-{n}", data_dir / f"vqa2-{n}"
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    times = {"1": [], "2": [], "default": [], "2, spinning": [], "2, no spin": []}
    # waiting threads that spin for good (OMP_WAIT_POLICY=ACTIVE), or that sleep at once (PASSIVE without the
    # default's short spin: the default before GOMP_SPINCOUNT=10000)
    waits = {"2, spinning": {"OMP_WAIT_POLICY": "ACTIVE"}, "2, no spin": {"GOMP_SPINCOUNT": "0"}}
    try:
        for rep in range(2):
            for t in times:
                run = work / f"threads-{t[0]}{len(t)}-{rep}"
                extra = [] if t == "default" else ["--threads", t[0]]
                env = waits.get(t, {})
                child(
                    cli(
                        cache,
                        "train",
                        "--dataset",
                        f"vqa2:{d}",
                        *FAST,
                        "--epochs",
                        1,
                        "--no-stream",
                        "--out",
                        run,
                        *extra,
                    ),
                    work / f"threads-{t[0]}{len(t)}-{rep}.log",
                    env=env,
                )
                times[t].append(epochs_seconds(run))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    line = next(x for x in (work / "threads-d7-0.log").read_text().splitlines() if x.startswith("run "))
    best = min(sum(times["1"]), sum(times["2"]))
    print(
        f"\nthreads under contention ({a.busy} busy processes, N = {n}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; default: {line.split(', ')[-1]}):"
    )
    for t, v in times.items():
        print(f"  --threads {t:<12} epoch {' / '.join(f'{x:.1f}' for x in v)} s")
    print(f"  default / best of 1 and 2: {sum(times['default']) / best:.2f} (goal <= 1.15)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="300,900", help="image counts, comma-separated")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--budget", default="256M", help="VQA_CACHE_MEMORY_BUDGET of the streamed train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="keep the generated datasets here (reused when present)")
    p.add_argument("--threads-check", action="store_true")
    p.add_argument("--threads-only", action="store_true", help="extract the largest size, then --threads-check")
    p.add_argument("--busy", type=int, default=2, help="busy processes during --threads-check")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--helper", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.helper:
        return helper(*a.helper)
    sizes = sorted(int(s) for s in a.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="vqa-cache-scale-"))
    data_dir = Path(a.data_dir) if a.data_dir else work
    print(
        f"bench/scale.py: sizes {sizes}, {a.epochs} epochs, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start"
    )
    try:
        if a.threads_only:
            d = data_dir / f"vqa2-{sizes[-1]}"
            if not (d / "info.json").is_file():
                child(
                    [sys.executable, str(Path(__file__).resolve()), "--helper", "gen", d, sizes[-1], a.seed],
                    work / "gen.log",
                )
            child(cli(work / f"cache-{sizes[-1]}", "extract", "--dataset", f"vqa2:{d}", *FAST), work / "extract.log")
            return threads_check(sizes[-1], work, a, data_dir)
        results = []
        for n in sizes:  # each size reported as soon as it is measured
            results.append(one_size(n, work, a, data_dir))
            report(results[-1:], a)
            sys.stdout.flush()
            if a.json:
                Path(a.json).write_text(json.dumps(results, indent=1))
        report_growth(results)
        if a.threads_check:
            threads_check(sizes[-1], work, a, data_dir)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
        print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
