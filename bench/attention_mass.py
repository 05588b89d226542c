"""Does the attention head look at the shape? On easy-VQA at 224 px with grid features (7 x 7 cells), the
mean over validation images of (attention mass inside the shape's box) / (the box's share of the image):
1.0 is what a uniform map (or one blind to the shape) gives, higher means the map concentrates on the shape.

    python bench/attention_mass.py                        # extract (224 px, grid), train attention, measure
    python bench/attention_mass.py --cache-dir C --run R  # measure an attention run trained on such a cache

Without --run it makes what it measures, with the commands docs/benchmarks.md gives: `extract
--image-size 224 --features grid --image-fraction F --data-seed 0` (weights auto: offline, the packaged
EfficientNet-Lite0 and MiniLM) and `train --head attention --set head.hidden=H --epochs E` on that cache.

The maps are the head's own (vqa_cache.explain.cached_maps: its softmax over the cells, averaged over its 2
glimpses), from the cached grid features of the run's validation split, for every question about N images
drawn with a fixed seed; an image's figure is the mean over its questions. The shape's box is found from
the pixels of the image as the encoder saw it (explain.display_image: resize and centre crop to 224 px):
easy-VQA draws one shape on a plain background, so the background colour is the top-left pixel's and the
shape is every pixel whose colour differs from it by more than THRESHOLD in some channel; the box is their
bounding box. A cell's mass counts in the share of the cell the box covers. Printed side by side: the same
maps scored against the box of another image (a control that should give about 1.0), the maps transposed
(a check of their row-major orientation: it should score lower), and per answer type.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
THRESHOLD = 40


def shape_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), bottom and right exclusive, of the pixels unlike the top-left one."""
    differs = np.abs(image.astype(np.int16) - image[0, 0].astype(np.int16)).max(-1) > THRESHOLD
    rows, cols = np.nonzero(differs.any(1))[0], np.nonzero(differs.any(0))[0]
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def box_ratio(attention: np.ndarray, box, size: tuple[int, int]) -> float:
    """(mass of a rows x cols map inside the box) / (the box's area share), cells covering the image evenly."""
    h, w = size
    rows, cols = attention.shape
    top, left, bottom, right = box
    ys, xs = np.linspace(0, h, rows + 1), np.linspace(0, w, cols + 1)
    cover_y = np.clip(np.minimum(ys[1:], bottom) - np.maximum(ys[:-1], top), 0, None) / np.diff(ys)
    cover_x = np.clip(np.minimum(xs[1:], right) - np.maximum(xs[:-1], left), 0, None) / np.diff(xs)
    mass = float((attention * np.outer(cover_y, cover_x)).sum())
    return mass / ((bottom - top) * (right - left) / (h * w))


def make_run(cache: str, out: Path, fraction: float, hidden: int, epochs: int) -> Path:
    import vqa_cache

    feats = dict(image_size=224, features="grid", image_fraction=fraction, data_seed=0)
    vqa_cache.extract(cache_dir=cache, **feats)
    run = vqa_cache.train(
        cache_dir=cache,
        head="attention",
        epochs=epochs,
        out=str(out / "attention224"),
        set=[f"head.hidden={hidden}"],
        **feats,
    )
    return run.dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="an attention run on a 224 px grid cache (default: make one)")
    ap.add_argument("--cache-dir", help="the cache root (default: a temporary one)")
    ap.add_argument("--images", type=int, default=100, help="validation images to measure")
    ap.add_argument("--image-fraction", type=float, default=0.4, help="share of easy-VQA's images to extract")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from vqa_cache.cache import cache_root
    from vqa_cache.explain import cached_maps, display_image
    from vqa_cache.predict import prepare

    cache = a.cache_dir or tempfile.mkdtemp(prefix="vqa-attention-cache-")
    run = (
        Path(a.run)
        if a.run
        else make_run(cache, Path(tempfile.mkdtemp(prefix="vqa-attention-runs-")), a.image_fraction, a.hidden, a.epochs)
    )
    t0 = time.time()
    p = prepare(run, cache_root(cache))
    if p.config["head"]["name"] != "attention":
        raise SystemExit(f"{run}: head {p.config['head']['name']}, not attention")
    t = p.table.to_pydict()
    spec = p.config["cache_specs"]["image"]
    images = sorted(set(t["image_id"]))
    chosen = sorted(np.random.default_rng(a.seed).choice(len(images), size=min(a.images, len(images)), replace=False))
    chosen = [images[i] for i in chosen]
    rows = {img: [i for i, m in enumerate(t["image_id"]) if m == img] for img in chosen}
    maps = cached_maps(p, [i for r in rows.values() for i in r])
    boxes, paths = {}, {img: t["image_path"][r[0]] for img, r in rows.items()}
    for img in chosen:
        pixels = display_image(paths[img], spec)
        boxes[img] = (shape_box(pixels), pixels.shape[:2])
    chosen = [img for img in chosen if boxes[img][0] is not None]
    per_image, control, transposed, by_type, shares = [], [], [], {}, []
    for k, img in enumerate(chosen):
        box, size = boxes[img]
        other = boxes[chosen[(k + 1) % len(chosen)]][0]  # the next image's box: blind to this one
        shares.append((box[2] - box[0]) * (box[3] - box[1]) / (size[0] * size[1]))
        ratios = []
        for i in rows[img]:
            r = box_ratio(np.asarray(maps[i]), box, size)
            ratios.append(r)
            by_type.setdefault(t["answer_type"][i], []).append(r)
        per_image.append(np.mean(ratios))
        control.append(np.mean([box_ratio(np.asarray(maps[i]), other, size) for i in rows[img]]))
        transposed.append(np.mean([box_ratio(np.asarray(maps[i]).T, box, size) for i in rows[img]]))
    grid = np.asarray(maps[rows[chosen[0]][0]]).shape
    per_image, control = np.array(per_image), np.array(control)
    print(
        f"run {run}: head attention, grid {grid[0]}x{grid[1]}, {len(chosen)} validation images "
        f"({sum(len(rows[i]) for i in chosen)} questions), shape box {np.mean(shares):.1%} of the image on average"
    )
    print(
        f"mass in the shape's box / its area share, mean over images: {per_image.mean():.2f} "
        f"(median {np.median(per_image):.2f}; > 1 on {np.mean(per_image > 1):.0%} of the images)"
    )
    print(f"the same maps against another image's box (control):       {control.mean():.2f}")
    print(f"ratio of the two: {per_image.mean() / control.mean():.2f}")
    print(f"the maps transposed (rows and columns swapped: checks their orientation): {np.mean(transposed):.2f}")
    for kind, values in sorted(by_type.items()):
        print(f"  {kind:7s} questions: {np.mean(values):.2f} ({len(values)})")
    print(
        f"measured in {time.time() - t0:.1f} s on {platform.machine()} with {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
