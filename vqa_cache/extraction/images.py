"""Stage one for images: DataLoader workers decode (and resize) the image files, the frozen encoder runs
on the device, and the writer thread lands each shard of float16 features (ids in row order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import distributed as dist
from .. import messages
from ..cache import Entry
from ..cache.plan import OUTPUTS, Plan
from ..cache.shards import write_image_shard
from ..device import autocast
from ..encoders.image import ImageEncoder, ImageFiles, collate
from ..errors import BadInput, Unencodable
from .writer import Job, ShardWriter, shard_writing, writing


def extract_images(
    plan: Plan, root: Path, device: torch.device, wait: bool = True, encoder: ImageEncoder | None = None
) -> Entry:
    """Write (or finish, or find complete) the plan's image entry; returns it."""
    entry = Entry(root, plan.image_key)
    with writing(
        entry,
        plan.image_spec,
        len(plan.image_ids),
        plan.recipe.shard_size,
        wait,
        "images",
        skipped=[],
        encoder=plan.image_choice.record(),
    ) as job:
        if job.complete:
            messages.info(f"images: cached ({entry.key}, {job.manifest['rows']} images)")
            return entry
        encoder = encoder or build_image_encoder(plan, device)
        job.manifest["dim"] = encoder.dim
        with shard_writing(job, write_image_shard, "images", "img") as (writer, bar):
            encode_shards(plan, job, encoder, device, writer, bar)
    if dist.is_main() and job.manifest.get("skipped"):
        messages.info(
            f"images: skipped {len(job.manifest['skipped'])} unreadable images (listed in the manifest, "
            f"`skipped`); train drops their questions"
        )
    return entry


def encode_shards(plan: Plan, job: Job, encoder: ImageEncoder, device: torch.device, writer: ShardWriter, bar) -> None:
    """Encode the job's shards batch by batch and hand each full shard to the writer. A batch is collected
    one batch late: the copy of its features to the CPU overlaps the next batch's forward."""
    recipe = plan.recipe
    loader = torch.utils.data.DataLoader(
        ImageFiles(plan.image_paths, plan.image_choice.preprocess, recipe.image.max_pixels),
        collate_fn=collate,
        num_workers=recipe.image.workers,
        batch_sampler=list(shard_batches(job.shards, recipe.image.batch_size)),
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if recipe.image.workers else None,
    )
    buffer = ShardBuffer(OUTPUTS[recipe.image.features], lambda: row_shapes(encoder, plan, device))
    previous, shards_done = None, 0
    for idx, batch, bad in loader:
        for i, err in bad:
            if not recipe.skip_bad:
                raise BadInput(
                    f"{plan.image_paths[i]}: cannot read image {plan.image_ids[i]!r} ({err}); "
                    f"the shards finished before it are kept; --skip-bad skips unreadable images"
                )
            buffer.skipped.append(plan.image_ids[i])
        current = launch(encoder, batch, device, [plan.image_ids[int(i)] for i in idx]) if len(idx) else None
        if previous is not None:
            buffer.add(*previous)
        previous = current
        bar.update(len(idx) + len(bad))
        number, start, stop = job.shards[shards_done]
        if max([int(i) for i in idx] + [i for i, _ in bad]) + 1 == stop:
            if previous is not None:
                buffer.add(*previous)
                previous = None
            writer.submit(start, stop, *buffer.take(), number=number)
            shards_done += 1


class ShardBuffer:
    """The shard being filled: image ids, float16 features per output (checked finite), skipped images.
    `row_shapes()` gives each output's row shape ([D], or [N, D] for a grid) when a shard has no image at
    all (every one skipped) before any batch showed them."""

    def __init__(self, outputs, row_shapes):
        self.row_shapes, self.shapes = row_shapes, None
        self.ids, self.parts, self.skipped = [], {k: [] for k in outputs}, []

    def add(self, ids: list[str], host: dict[str, torch.Tensor], done) -> None:
        """Wait for a launched batch's copy (launch); check its features and add them."""
        if done is not None:
            done.synchronize()
        for k, v in host.items():
            v = v.numpy()
            if not np.isfinite(v).all():
                raise Unencodable(
                    f"{k} image features overflow float16 for images near {ids[0]!r} (values past "
                    f"65504: are the weights scaled?)"
                )
            self.parts[k].append(v)
        self.shapes = self.shapes or {k: v.shape[1:] for k, v in host.items()}
        self.ids.extend(ids)

    def take(self) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
        """(ids, {output: features}, skipped ids) of the full shard; the buffer starts the next one."""
        if self.shapes is None:  # no image encoded yet: every image of this shard was skipped
            self.shapes = self.row_shapes()
        arrays = {
            k: np.concatenate(v) if v else np.zeros((0, *self.shapes[k]), np.float16) for k, v in self.parts.items()
        }
        out = (self.ids, arrays, self.skipped)
        self.ids, self.parts, self.skipped = [], {k: [] for k in self.parts}, []
        return out


def launch(encoder: ImageEncoder, batch: torch.Tensor, device: torch.device, ids: list[str]):
    """Encode a batch and queue the copy of its features back to the CPU, without waiting:
    (ids, {output: CPU tensor}, CUDA event to wait for, or None on the CPU)."""
    out = encode_images(encoder, batch, device)
    if device.type != "cuda":
        return ids, {k: v.cpu() for k, v in out.items()}, None
    host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True).copy_(v, non_blocking=True) for k, v in out.items()}
    done = torch.cuda.Event()
    done.record()
    return ids, host, done


def shard_batches(shards, batch_size: int):
    """Index batches that never cross a shard boundary, over `shards` [(number, start, stop)]."""
    for _, s0, s1 in shards:
        for b0 in range(s0, s1, batch_size):
            yield list(range(b0, min(b0 + batch_size, s1)))


def row_shapes(encoder: ImageEncoder, plan: Plan, device: torch.device) -> dict[str, tuple]:
    """{output: the shape of one image's features}, from one blank image through the encoder."""
    size = plan.image_choice.preprocess.size
    out = encode_images(encoder, torch.zeros(1, 3, size, size, dtype=torch.uint8), device)
    return {k: tuple(v.shape[1:]) for k, v in out.items()}


def build_image_encoder(plan: Plan, device: torch.device) -> ImageEncoder:
    image = plan.recipe.image
    encoder = ImageEncoder(plan.image_choice, OUTPUTS[image.features]).to(device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def encode_images(encoder: ImageEncoder, batch: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 [B, 3, S, S] (pinned on CUDA) -> float16 features, still on the device."""
    with torch.inference_mode(), autocast(device):
        x = batch.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out = encoder(x)
        return {k: v.to(torch.float16) for k, v in out.items()}
