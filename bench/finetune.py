"""Seconds per epoch of `finetune` (encoders frozen, and top:1 trained) against `train` on the cache,
on the same easy-VQA data, as ratios measured in one run, beside the accuracy each reaches.

    python bench/finetune.py                       # CPU-sized default: ResNet18 random init, 64 px, 10% of images
    python bench/finetune.py --image-fraction 1 --epochs 5 --device cuda

The cache is extracted first (not timed as part of train); finetune decodes the images once (not in
the per-epoch time either). Per-epoch seconds include the validation pass for all three.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-encoder", default="resnet18")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--image-fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--group-by-image",
        action="store_true",
        help="finetune batches hold all questions of few images (each image once per epoch)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--cache-dir", help="reuse this cache root (default: a temporary one)")
    a = ap.parse_args()

    import numpy as np
    import torch

    from vqa_cache import recipes
    from vqa_cache.extraction import extract
    from vqa_cache.finetuning import finetune
    from vqa_cache.finetuning.recipe import finetune_recipe
    from vqa_cache.options import feature_overrides
    from vqa_cache.training import train

    if a.threads:
        torch.set_num_threads(a.threads)
    os.chdir(ROOT)
    feature = {"image_encoder": a.image_encoder, "weights": a.weights, "image_size": a.image_size}
    common = [
        f"features.dataset.image_fraction={a.image_fraction}",
        f"optim.epochs={a.epochs}",
        f"optim.batch_size={a.batch_size}",
        "optim.patience=0",
        f'device="{a.device}"',
        f'features.device="{a.device}"',
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    root = Path(a.cache_dir) if a.cache_dir else work / "cache"

    # the cache that `train` reads: the same features as the finetune recipe
    ft0 = finetune_recipe("train/easyvqa-finetune.toml", {**feature, "set": common})
    t0 = time.time()
    extract(ft0.features, root)
    extract_s = time.time() - t0

    rows = []
    tr_data = recipes.load_train_dict("train/easyvqa-finetune.toml")
    tr_data.pop("finetune", None)
    recipes.apply_overrides(tr_data, feature_overrides("features.", **feature) + common)
    tr = recipes.build(recipes.TrainRecipe, tr_data)
    m = train(tr, root, out=str(work / "train"))
    rows.append(("train (cache)", m))
    for scope in ("none", "top:1"):
        group = "true" if a.group_by_image else "false"
        r = finetune_recipe(
            "train/easyvqa-finetune.toml",
            {**feature, "set": common + [f'finetune.train_encoders="{scope}"', f"finetune.group_by_image={group}"]},
        )
        m = finetune(r, out=str(work / f"finetune-{scope.replace(':', '')}"))
        rows.append((f"finetune {scope}", m))

    def per_epoch(m):
        return float(np.mean([e["seconds"] for e in m["epochs"]]))

    base = per_epoch(rows[0][1])
    print(
        f"\n{a.image_encoder} ({a.weights}) at {a.image_size}px, image_fraction {a.image_fraction}, batch "
        f"{a.batch_size}, {a.epochs} epochs, device {a.device}, torch threads {torch.get_num_threads()}, "
        f"group_by_image {a.group_by_image}; extract took {extract_s:.1f}s"
    )
    print(f"{'mode':<18}{'s/epoch':>10}{'x train':>10}{'best val acc':>14}")
    for name, m in rows:
        s = per_epoch(m)
        print(f"{name:<18}{s:>10.2f}{s / base:>10.1f}{m['best']['val_accuracy']:>14.4f}")
    print(f"(runs in {work})")


if __name__ == "__main__":
    sys.exit(main())
