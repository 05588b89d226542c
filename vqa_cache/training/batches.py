"""Batches of stage two. Features that fit are one tensor each (on the GPU when there is one), float16 as
the cache holds them, and a batch is an index gather made float32: no per-item Dataset, no DataLoader. Image features streamed from the shards come in
groups of row chunks (stream_batches). For finetune, `image` and `question` are Rows: a batch is then
the rows themselves, which its model encodes."""

from __future__ import annotations

import numpy as np
import torch

from ..cache.reader import ImageStream
from .splits import Split


def epoch_batches(
    split: Split,
    image,
    question,
    rows: torch.Tensor,
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_image: bool = False,
):
    """The epoch's training batches (question indices, image batch, question batch) over `rows` of `split`:
    in a random order drawn from (seed, epoch), the same on every rank (epoch_order); streamed image
    features in random groups of chunks."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if isinstance(image, ImageStream):
        for idx, img in stream_batches(image, split, rows, batch_size, rows.device, generator):
            yield idx, img, gather(question, split.q_row[idx])
        return
    yield from batches(split, image, question, epoch_order(split, rows, generator, group_by_image), batch_size)


def batches(split: Split, image, question, rows: torch.Tensor, batch_size: int):
    """(question indices, image batch, question batch) over `rows` of `split`, in their order.

    `image` is an in-memory tensor (a batch is an index gather), an ImageStream (chunks from disk, in file
    order) or Rows."""
    if isinstance(image, ImageStream):
        for idx, img in stream_batches(image, split, rows, batch_size, rows.device):
            yield idx, img, gather(question, split.q_row[idx])
        return
    for s in range(0, len(rows), batch_size):
        idx = rows[s : s + batch_size]
        yield idx, gather(image, split.img_row[idx]), gather(question, split.q_row[idx])


def gather(features, rows):
    """features[rows], float16 features (as the cache holds them, and memory keeps them) as float32: the
    values are exactly those a float32 copy of the whole would give."""
    out = features[rows]
    return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.float16 else out


def epoch_order(split: Split, rows: torch.Tensor, generator: torch.Generator, group_by_image: bool) -> torch.Tensor:
    """`rows` shuffled, or with group_by_image shuffled images with their questions together (finetune: each
    image encoded once per batch it is in, and batches cut between images)."""
    if not group_by_image:
        return rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
    rows_cpu = rows.cpu()[torch.randperm(len(rows), generator=generator)]
    img = split.img_row.cpu()[rows_cpu]
    rank = torch.randperm(int(img.max()) + 1, generator=generator)[img]
    order = torch.argsort(rank, stable=True)
    return rows_cpu[order].to(rows.device)


class Rows:
    """An identity indexer: Rows()[idx] is idx. As `image` and `question` it makes a batch of row indices
    (a finetune model encodes the rows' images and texts itself)."""

    def __getitem__(self, idx):
        return idx


def stream_batches(stream: ImageStream, split: Split, questions: torch.Tensor, batch_size: int, device, generator=None):
    """(question indices, image features [b, ...] float32, on `device`) for `questions` of `split`, the image
    features read from the shards by `stream`.

    With a generator: chunks in random order, `stream.group` chunks at a time, their questions shuffled;
    without: chunks in file order (evaluation)."""
    questions = questions.cpu()
    img_row = split.img_row.cpu()
    chunk = stream.chunk_of(img_row[questions])
    order = np.unique(chunk)
    if generator is not None:
        order = order[torch.randperm(len(order), generator=generator).numpy()]
    by_chunk = {c: questions[torch.from_numpy(np.nonzero(chunk == c)[0])] for c in order}
    group, base, pending = [], {}, 0

    def flush():
        feats = torch.cat([rows for _, _, rows in group]).to(device, non_blocking=True)
        group[:] = [(c, start, None) for c, start, _ in group]  # (the chunks go: only their copy in feats stays)
        q = torch.cat([by_chunk[c] for c, _, _ in group])
        local = torch.cat([img_row[by_chunk[c]] - start + base[c] for c, start, _ in group])
        if generator is not None:
            p = torch.randperm(len(q), generator=generator)
            q, local = q[p], local[p]
        for s in range(0, len(q), batch_size):
            yield q[s : s + batch_size].to(device), feats[local[s : s + batch_size].to(device)].float()

    for c, start, rows in stream.read(order):
        base[c] = pending
        pending += len(rows)
        group.append((c, start, rows))
        if len(group) == stream.group:
            yield from flush()
            group, base, pending = [], {}, 0
    if group:
        yield from flush()


def accumulation_groups(batches, accumulate: int):
    """Lists of `accumulate` consecutive batches (the last one maybe fewer): one optimizer step each."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == accumulate:
            yield group
            group = []
    if group:
        yield group
