"""The per-dimension statistics of the training split's image features, computed once from the cache for
heads that standardize their image input (heads/norm.py); the head keeps them, so checkpoints carry them."""

from __future__ import annotations

import numpy as np
import torch

from ..cache.reader import ImageStream

CHUNK_ROWS = 4096


def image_statistics(image, img_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [Di] (float32, on the CPU) of the features of the images in `img_rows` (each image once,
    however many questions it has): pooled rows [N, Di], or every cell of grid rows [N, h*w, Di]. Summed
    in float64, CHUNK_ROWS rows at a time; an ImageStream is read chunk by chunk from the shards."""
    rows = torch.unique(img_rows.cpu())
    total = square = None
    count = 0

    def add(x: torch.Tensor) -> None:
        nonlocal total, square, count
        x = x.reshape(-1, x.shape[-1]).double()
        s, q = x.sum(0).cpu(), (x * x).sum(0).cpu()
        total, square = (s, q) if total is None else (total + s, square + q)
        count += len(x)

    if isinstance(image, ImageStream):
        chunks = np.unique(image.chunk_of(rows))
        for _, start, feats in image.read(chunks):
            local = rows[(rows >= start) & (rows < start + len(feats))] - start
            add(feats[local])
    else:
        for s in range(0, len(rows), CHUNK_ROWS):
            add(image[rows[s : s + CHUNK_ROWS].to(image.device)])
    mean = total / count
    std = (square / count - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.float()
