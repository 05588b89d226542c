"""Stage-one benchmark: end-to-end extraction vs the encoder alone, on the same images.

    end to end    = vqa_cache.extraction.images.extract_images on N image files: DataLoader workers decode and
                    resize, the encoder runs (autocast + channels_last on CUDA), features go to float16
                    HDF5 shards written by a background thread, checksums, manifest, index
    forward only  = the same encoder on the same images already decoded into memory as uint8 tensors
                    (pinned on CUDA), same batches, one warm-up batch not timed
    ratio         = end to end / forward only   (goal: <= 1.2)

CPU (the default): easy-VQA's PNGs at their native 64 px through ResNet50.
GPU:  python bench/extract.py --device cuda --jpeg --size 224 --images 20000 --batch-size 256 --workers 8
      re-encodes the easy-VQA images as 224 px JPEG files in a temporary directory (cycled to reach
      --images) and reports images/s and the ratio. Weights are random (no download): speed is the same.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--encoder", default="resnet50")
    p.add_argument("--size", type=int, default=None, help="input size (default 64 on CPU, 224 on CUDA)")
    p.add_argument("--images", type=int, default=1000, help="number of image files (easy-VQA, cycled)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader decode processes")
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--features", default="pooled", choices=["pooled", "grid", "pooled+grid"])
    p.add_argument("--jpeg", action="store_true", help="re-encode the images as JPEG at --size first")
    a = p.parse_args()
    size = a.size or (224 if a.device == "cuda" else 64)

    import easy_vqa
    import torch
    from PIL import Image

    from vqa_cache import data
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.device import pick_device
    from vqa_cache.encoders.image import ImageFiles, collate
    from vqa_cache.extraction.images import build_image_encoder, encode_images, extract_images
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    src = list(easy_vqa.get_train_image_paths().values()) + list(easy_vqa.get_test_image_paths().values())
    tmp = Path(tempfile.mkdtemp(prefix="vqa-cache-bench-"))
    paths = []
    for i in range(a.images):
        path = src[i % len(src)]
        if a.jpeg:
            out = tmp / "jpeg" / f"{i:06d}.jpg"
            if i < len(src):
                out.parent.mkdir(exist_ok=True)
                with Image.open(path) as im:
                    im.convert("RGB").resize((size, size), Image.BILINEAR).save(out, quality=90)
                path = str(out)
            else:
                path = str(tmp / "jpeg" / f"{i % len(src):06d}.jpg")
        paths.append(path)
    ids = [f"img{i:06d}" for i in range(a.images)]
    table = data.make_table(
        {
            "question_id": ids,
            "image_id": ids,
            "image_path": paths,
            "question": ["q?"] * len(ids),
            "answers": [["a"]] * len(ids),
            "answer_type": ["other"] * len(ids),
            "question_type": ["q"] * len(ids),
            "split": ["train"] * len(ids),
        }
    )
    recipe = ExtractRecipe(
        DatasetSettings(),
        ImageSettings(
            encoder=a.encoder,
            weights="random",
            size=size,
            features=a.features,
            batch_size=a.batch_size,
            workers=a.workers,
        ),
        TextSettings(encoder="bow", weights="random"),
        device=a.device,
        shard_size=a.shard_size,
    )
    plan = make_plan(recipe, samples=table)
    kind = "JPEG" if a.jpeg else "PNG"
    print(
        f"{a.images} {kind} files -> {a.encoder} {a.features} at {size} px, batch {a.batch_size}, "
        f"{a.workers} decode workers, device {device}, torch threads {torch.get_num_threads()}"
    )

    # ---- end to end: files -> cache entry
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    extract_images(plan, tmp / "cache", device)
    sync()
    e2e = time.perf_counter() - t

    # ---- forward only: the same images, decoded beforehand, same batches
    files = ImageFiles(plan.image_paths, plan.image_choice.preprocess)
    decoded = collate([files[i] for i in range(len(files))])[1]
    if device.type == "cuda":
        decoded = decoded.pin_memory()
    encoder = build_image_encoder(plan, device)
    batches = [decoded[i : i + a.batch_size] for i in range(0, len(decoded), a.batch_size)]
    encode_images(encoder, batches[0], device)  # warm-up (not timed)
    sync()
    t = time.perf_counter()
    for b in batches:
        out = encode_images(encoder, b, device)
    sync()
    fwd = time.perf_counter() - t

    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    machine = (torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()) + f", {os.cpu_count()} CPU cores"
    print(f"machine        {machine}")
    print(
        f"end to end     {e2e:8.2f} s  {a.images / e2e:9.1f} images/s  (files -> complete cache entry, "
        f"model build included)"
    )
    print(f"forward only   {fwd:8.2f} s  {a.images / fwd:9.1f} images/s  (pre-decoded uint8 tensors in memory)")
    print(f"ratio          {e2e / fwd:8.2f}    (goal <= 1.2)")


if __name__ == "__main__":
    sys.exit(main())
