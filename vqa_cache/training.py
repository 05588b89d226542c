"""Stage two: train a fusion head on cached features.

Features that fit go into one tensor each (on the GPU when there is one); a batch is an index slice
of them: no per-item Dataset, no DataLoader. One epoch of easy-VQA is a few seconds on a laptop CPU.

A run directory holds config.json, metrics.json, best.pt, last.pt, curves.png, predictions.json (and .lock
while a process writes it). Checkpoints hold tensors and plain Python values only: they load with
torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from . import data, heads
from . import distributed as dist
from .cache import Entry
from .cache.reader import check_complete, check_ids, damaged, load_rows
from .cache.store import Lock
from .answers import Vocabulary, build_vocabulary, ground_truth, soft_scores
from .errors import BadInput, Diverged
from .device import amp, pick_device
from .cache.plan import make_plan
from .progress import progress
from .recipes import TrainRecipe, to_dict

FEATURE_DATASET = {"pooled": "features", "grid": "grid", "tokens": "tokens"}


# ---------------------------------------------------------------- data on the device

class Split:
    """One split's samples as row indices into the feature tensors, plus answer targets.

    img_row, q_row: [N] long     rows of the image / question feature tensors
    target_idx, target_val: [N, M]   each question's candidate answers (class ids, K = none) and soft scores
    """

    def __init__(self, table, img_row, q_row, vocab: Vocabulary):
        self.table = table
        self.img_row = torch.as_tensor(img_row, dtype=torch.long)
        self.q_row = torch.as_tensor(q_row, dtype=torch.long)
        answers = table.column("answers").to_pylist()
        m = max(1, max((len(set(a)) for a in answers), default=1))
        K = len(vocab)
        idx = np.full((len(answers), m), K, dtype=np.int64)
        val = np.zeros((len(answers), m), dtype=np.float32)
        for i, raw in enumerate(answers):
            if not raw:
                continue
            for j, (a, s) in enumerate(soft_scores(ground_truth(raw)).items()):
                c = vocab.index(a)
                if c is not None:
                    idx[i, j], val[i, j] = c, s
        self.target_idx, self.target_val = torch.from_numpy(idx), torch.from_numpy(val)
        self.multi = max((len(a) for a in answers), default=1) > 1   # 10 human answers -> soft BCE
        self.answer_type = table.column("answer_type").to_pylist()

    def __len__(self):
        return len(self.img_row)

    def to(self, device):
        for name in ("img_row", "q_row", "target_idx", "target_val"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def memory_budget(device: torch.device | None = None) -> int:
    """Bytes that in-memory features may take: $VQA_CACHE_MEMORY_BUDGET (bytes, or with a K/M/G suffix),
    else half the available RAM (and half the free GPU memory when training on a GPU)."""
    env = os.environ.get("VQA_CACHE_MEMORY_BUDGET", "").strip()
    if env:
        mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(env[-1].upper(), 1)
        try:
            value = float(env[:-1] if mult > 1 else env) * mult
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise BadInput(f"VQA_CACHE_MEMORY_BUDGET={env!r}: expected a positive number of bytes, e.g. 8G or 500M")
        return int(value)
    import psutil
    budget = psutil.virtual_memory().available // 2
    if device is not None and device.type == "cuda":
        budget = min(budget, torch.cuda.mem_get_info(device)[0] // 2)
    return int(budget)


def load_features(recipe: TrainRecipe, root: Path, extract_cmd: str, stream: bool | None = None):
    """(plan, tensors, keys) from a complete cache: tensors[kind] = (ids, features).

    Images: pooled [N, Di] or grid [N, h*w, Di] float32 on the CPU, or, when `stream` is true (None: when
    they would take more than memory_budget()), an ImageStream that reads row chunks from the shards.
    Questions: pooled [M, Dq], or token states [M, L, Dq] with padding positions zeroed (the mask).
    """
    need = heads.needs(recipe.head.name)
    plan = make_plan(recipe.features, allow_download=False, root=root)
    entries = {kind: Entry(root, key) for kind, key in (("image", plan.image_key), ("question", plan.question_key))}
    manifests = {kind: check_complete(e, extract_cmd) for kind, e in entries.items()}
    missing, fix = [], []
    ispec, qspec = manifests["image"]["spec"], manifests["question"]["spec"]
    if need["image"] not in ispec["outputs"]:
        missing.append(f"{need['image']} image features (this cache has {'+'.join(ispec['outputs'])})")
        fix.append(f"--features {need['image']} (or pooled+grid)")
    if need["question"] == "tokens" and not qspec.get("tokens"):
        missing.append("question token states (this cache has pooled "
                       f"{'bag-of-words vectors' if qspec.get('encoder') == 'bow' else 'vectors only'})")
        fix.append(("a Hugging Face --text-encoder and " if qspec.get("encoder") == "bow" else "")
                   + "--set text.tokens=true")
    if missing:
        raise BadInput(f"head {recipe.head.name!r} needs {' and '.join(missing)}: extract with {' and '.join(fix)}")
    tensors, keys = {}, {}
    for kind, key in (("image", plan.image_key), ("question", plan.question_key)):
        entry, manifest = entries[kind], manifests[kind]
        what = need[kind]
        keys[kind] = key
        if kind == "image":
            img = ImageStream(entry, manifest, FEATURE_DATASET[what])
            use_stream = stream if stream is not None else img.nbytes(4) > memory_budget(pick_device(recipe.device))
            if use_stream:
                tensors[kind] = (img.ids, img)
                continue
            ids, arr = load_rows(entry, manifest, FEATURE_DATASET[what])
            tensors[kind] = (ids, torch.from_numpy(arr.astype(np.float32)))
        elif what == "tokens":
            ids, arr = load_rows(entry, manifest, "tokens")
            _, mask = load_rows(entry, manifest, "mask")
            states = arr.reshape(len(ids), mask.shape[1], -1).astype(np.float32) * mask[:, :, None]
            tensors[kind] = (ids, torch.from_numpy(states))
        else:
            ids, arr = load_rows(entry, manifest, "embedding")
            tensors[kind] = (ids, torch.from_numpy(arr.astype(np.float32)))
    return plan, tensors, keys


# ---------------------------------------------------------------- streaming (caches larger than memory)

class _Chunks(torch.utils.data.Dataset):
    """Item c = (c, float16 rows of chunk c); one h5py handle per file per worker process."""

    def __init__(self, files, dataset, chunks):
        self.files, self.dataset, self.chunks = files, dataset, chunks
        self._handles = {}

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, c):
        import h5py
        f, start, stop = self.chunks[c]
        pid = os.getpid()
        if self._handles.get("pid") != pid:          # a fresh process (DataLoader worker): own handles
            self._handles = {"pid": pid}
        h = self._handles.get(f)
        if h is None:
            h = self._handles[f] = h5py.File(self.files[f], "r")
        return c, torch.from_numpy(h[self.dataset][start:stop])

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}


class ImageStream:
    """Image features left on disk: shards are read in row chunks (of about `chunk_mib` MiB) by
    `workers` DataLoader processes, each with its own h5py handles. Peak memory is bounded by
    (group + prefetch) chunks, whatever the size of the cache.

    ids: image ids in row order; shape: (N, *row shape) like the in-memory tensor it replaces.
    The ids are checked when it opens (check_ids), each chunk's features as it is read (finite).
    """

    def __init__(self, entry: Entry, manifest: dict, dataset: str, chunk_mib: float = 16, workers: int | None = None,
                 group: int = 4):
        import h5py
        from .cache.shards import read_shard_ids
        self.entry, self.files = entry, [entry.path / s["file"] for s in manifest["shards"]]
        self.dataset, self.ids, self.chunks, self.group = dataset, [], [], group
        self.workers = min(2, os.cpu_count() or 1) if workers is None else workers
        row_shape = None
        for f, path in enumerate(self.files):
            try:
                with h5py.File(path, "r") as h:
                    d = h[dataset]
                    n, row_shape = d.shape[0], d.shape[1:]
            except (OSError, KeyError) as e:
                raise damaged(entry, f"{path.name}: unreadable shard ({type(e).__name__}: {e})") from None
            self.ids += read_shard_ids(path)
            step = max(1, int(chunk_mib * 2**20) // (2 * int(np.prod(row_shape or (1,))) or 1))
            self.chunks += [(f, s, min(s + step, n)) for s in range(0, n, step)]
        check_ids(entry, manifest, self.ids)
        self.starts = np.cumsum([0] + [c[2] - c[1] for c in self.chunks])   # global first row of each chunk
        self.shape = (len(self.ids), *(row_shape or (manifest.get("dim", 0),)))

    def __len__(self):
        return self.shape[0]

    def nbytes(self, itemsize: int = 4) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize

    def chunk_of(self, rows: torch.Tensor) -> np.ndarray:
        return np.searchsorted(self.starts, rows.cpu().numpy(), side="right") - 1

    def read(self, order):
        """(chunk, global start row, float16 rows) for the chunks in `order`, read ahead by the workers."""
        loader = torch.utils.data.DataLoader(_Chunks(self.files, self.dataset, self.chunks), batch_size=None,
                                             sampler=list(order), num_workers=self.workers,
                                             prefetch_factor=2 if self.workers else None)
        for c, rows in loader:
            if not torch.isfinite(rows).all():
                raise damaged(self.entry, f"{self.files[self.chunks[c][0]].name} holds non-finite values "
                                          f"(NaN or inf) in rows {self.chunks[c][1]}..{self.chunks[c][2]}")
            yield int(c), int(self.starts[c]), rows

    def batches(self, split: "Split", questions: torch.Tensor, batch_size: int, device, generator=None):
        """(question indices, image features [b, ...] float32, on `device`) for `questions` of `split`.

        With a generator: chunks in random order, `group` chunks at a time, their questions shuffled;
        without: chunks in file order (evaluation)."""
        questions = questions.cpu()
        chunk = self.chunk_of(split.img_row.cpu()[questions])
        order = np.unique(chunk)
        if generator is not None:
            order = order[torch.randperm(len(order), generator=generator).numpy()]
        by_chunk = {c: questions[torch.from_numpy(np.nonzero(chunk == c)[0])] for c in order}
        group, base = [], {}
        pending = 0

        def flush():
            feats = torch.cat([g[2] for g in group]).to(device, non_blocking=True)
            q = torch.cat([by_chunk[g[0]] for g in group])
            local = torch.cat([split.img_row.cpu()[by_chunk[c]] - s + base[c] for c, s, _ in group])
            if generator is not None:
                p = torch.randperm(len(q), generator=generator)
                q, local = q[p], local[p]
            for s in range(0, len(q), batch_size):
                yield q[s:s + batch_size].to(device), feats[local[s:s + batch_size].to(device)].float()

        for c, start, rows in self.read(order):
            base[c] = pending
            pending += len(rows)
            group.append((c, start, rows))
            if len(group) == self.group:
                yield from flush()
                group, base, pending = [], {}, 0
        if group:
            yield from flush()


def build_splits(plan, tensors, recipe: TrainRecipe):
    """Train and validation splits, the answer vocabulary, and how many questions were dropped."""
    table = plan.samples
    img_pos = {k: i for i, k in enumerate(tensors["image"][0])}
    q_pos = {k: i for i, k in enumerate(tensors["question"][0])}
    have = np.array([i in img_pos for i in table.column("image_id").to_pylist()])
    dropped = int((~have).sum())
    if dropped:
        print(f"dropping {dropped} questions whose images were skipped as unreadable at extraction")
        table = table.filter(have)
    train_name, val_name = data.train_val_splits(table)
    parts = {s: table.filter(pc.equal(table["split"], s)) for s in (train_name, val_name)}
    a = recipe.answers
    vocab = build_vocabulary(parts[train_name].column("answers").to_pylist(), top_k=a.top_k, min_count=a.min_count)
    splits = {}
    for role, name in (("train", train_name), ("val", val_name)):
        t = parts[name]
        splits[role] = Split(t, [img_pos[i] for i in t.column("image_id").to_pylist()],
                             [q_pos[q] for q in t.column("question").to_pylist()], vocab)
    return splits, vocab, (train_name, val_name), dropped


# ---------------------------------------------------------------- the loop

def lr_lambda(optim, steps_per_epoch: int):
    """Linear warm-up for warmup_epochs, then cosine decay from lr to min_lr at the last epoch."""
    warm = max(0, int(optim.warmup_epochs * steps_per_epoch))
    total = max(1, optim.epochs * steps_per_epoch)
    floor = optim.min_lr / optim.lr if optim.lr else 0.0

    def f(step):
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def batch_loss(logits, split: Split, idx, K: int):
    """Soft-score BCE for 10-answer data (x K, the usual scaling), cross-entropy for one answer.
    A validation answer outside the vocabulary (class K) has no cross-entropy: it is left out of the mean."""
    ti, tv = split.target_idx[idx], split.target_val[idx]
    if split.multi:
        target = torch.zeros(len(idx), K + 1, device=logits.device).scatter_(1, ti, tv)[:, :K]
        return F.binary_cross_entropy_with_logits(logits.float(), target) * K
    target = ti[:, 0]
    known = (target < K).float()
    losses = F.cross_entropy(logits.float(), target.clamp(max=K - 1), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def rank_part(n: int, world: int, rank: int, keys: torch.Tensor | None = None) -> tuple[slice, float, float]:
    """This rank's part of a global batch of `n`: (slice of the batch, loss weight, questions it counts for).

    Without `keys`: the r-th of `world` near-equal contiguous parts (torch.tensor_split's). With `keys`
    (one per item, equal keys adjacent, e.g. the image rows of a group_by_image batch): cuts fall only
    where the key changes, each as near as possible to the equal-split point, every rank at least one
    group. A batch that cannot give every rank something (fewer items, or groups, than ranks) goes whole
    to every rank (weight 1, each counting 1/world of it). The weight len(part) * world / n makes DDP's
    gradient average the gradient of the whole batch's mean loss."""
    if world <= 1:
        return slice(0, n), 1.0, n
    if keys is None:
        if n < world:
            return slice(0, n), 1.0, n / world
        starts = [r * (n // world) + min(r, n % world) for r in range(world + 1)]
    else:
        keys = keys.reshape(-1).cpu()
        bounds = [0] + (torch.nonzero(keys[1:] != keys[:-1]).reshape(-1) + 1).tolist() + [n]
        groups = len(bounds) - 1
        if groups < world:
            return slice(0, n), 1.0, n / world
        starts, j = [0], 0
        for r in range(1, world):           # the boundary nearest r*n/world, leaving a group to each later rank
            lo, hi = j + 1, groups - (world - r)
            j = min(range(lo, hi + 1), key=lambda k: (abs(bounds[k] * world - r * n), k))
            starts.append(bounds[j])
        starts.append(n)
    a, b = starts[rank], starts[rank + 1]
    return slice(a, b), (b - a) * world / n, b - a


def record_epoch(history: list, best: dict, bad_epochs: int, epoch: int, train_loss: float, val_loss: float,
                 val_acc: float, per_type: dict, lrs: dict, t0: float, extra: dict | None = None):
    """One epoch's metrics row (appended to `history`), early-stopping bookkeeping and the epoch line.

    lrs: {"lr": ...} (and more learning rates), placed before "seconds"; extra: keys after it.
    Returns (row, best, bad_epochs, improved)."""
    row = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
           "val_accuracy": round(val_acc, 6), "val_accuracy_per_type": per_type, **lrs,
           "seconds": round(time.time() - t0, 3), **(extra or {})}
    history.append(row)
    improved = round(val_acc, 6) > best["val_accuracy"]
    if improved:
        best, bad_epochs = {"epoch": epoch, "val_accuracy": round(val_acc, 6)}, 0
    else:
        bad_epochs += 1
    print(f"epoch {epoch:>3}  train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
          f"val acc {val_acc:.4f}{' *' if improved else ''}  {row['seconds']:.1f}s")
    return row, best, bad_epochs, improved


def trainable(split: Split, K: int) -> torch.Tensor:
    """Rows that have at least one answer in the vocabulary (the others teach nothing)."""
    return torch.nonzero((split.target_idx < K).any(1)).squeeze(1)


def batches(split: Split, image, question, rows: torch.Tensor, batch_size: int, generator=None):
    """(question indices, image batch, question batch) over `rows` of `split`; shuffled with a generator.

    `image` is an in-memory tensor (a batch is an index gather) or an ImageStream (chunks from disk)."""
    if isinstance(image, ImageStream):
        for idx, img in image.batches(split, rows, batch_size, rows.device, generator):
            yield idx, img, question[split.q_row[idx]]
        return
    if generator is not None:
        rows = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
    for s in range(0, len(rows), batch_size):
        idx = rows[s:s + batch_size]
        yield idx, image[split.img_row[idx]], question[split.q_row[idx]]


@torch.no_grad()
def evaluate(model, split: Split, image, question, batch_size: int, K: int, ctx):
    """(mean loss, accuracy, predicted class per question, per-answer-type accuracy)."""
    model.eval()
    preds = torch.zeros(len(split), dtype=torch.long)
    score = torch.zeros(len(split))
    loss_sum = 0.0
    rows = torch.arange(len(split), device=split.img_row.device)
    for idx, img, q in batches(split, image, question, rows, batch_size):
        with ctx:
            logits = model(img, q)
        loss_sum += batch_loss(logits, split, idx, K).item() * len(idx)
        p = logits.argmax(1)
        hit = (split.target_idx[idx] == p[:, None]).float() * split.target_val[idx]
        score[idx.cpu()] = hit.sum(1).cpu()
        preds[idx.cpu()] = p.cpu()
    per_type = {}
    types = np.array(split.answer_type, dtype=object)
    for t in sorted(set(split.answer_type)):
        per_type[t] = round(float(score[torch.from_numpy(types == t)].mean()), 4)
    return loss_sum / max(1, len(split)), float(score.mean()) if len(split) else 0.0, preds, per_type


def rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values (a checkpoint loads with weights_only=True);
    numpy's: (kind, keys as an int64 tensor, pos, has_gauss, cached_gaussian)."""
    kind, keys, *rest = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]       # keys: a tensor, or a uint32 array in older checkpoints
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_run_dir(recipe: TrainRecipe, out: str | None, resume: bool) -> Path:
    """--out as given; else runs/NAME, or runs/NAME-2, -3 ... if taken (resume: the latest of them)."""
    if out:
        return Path(out)
    base = Path(recipe.out) / recipe.name
    taken = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
    existing = [p for p in taken if p.exists()]
    if resume:
        if not existing:
            raise BadInput(f"--resume: no run {base} to resume")
        return existing[-1]
    return next(p for p in taken if not p.exists())


_FORK_CLOSE: set[int] = set()     # file descriptors of the run-directory locks this process holds


def _close_in_child() -> None:
    """In a forked child (DataLoader workers): let go of the parent's run-directory locks, so that they
    are the parent's alone and die with it."""
    for fd in _FORK_CLOSE:
        os.close(fd)
    _FORK_CLOSE.clear()


os.register_at_fork(after_in_child=_close_in_child)


@contextmanager
def run_lock(run_dir: Path, resume: bool = False, take: bool = True):
    """One process at a time writes a run directory (train, finetune, --resume): RUN/.lock, the cache's
    entry Lock (an flock the kernel frees when its holder dies, kill -9 included), taken without waiting.
    Its descriptor is close-on-exec and closed in forked children, so only this process holds it.
    take=False (torchrun ranks other than 0, which write nothing) does nothing. A run directory made
    here that is still empty at the end (setup failed) is removed again."""
    if not take:
        yield
        return
    if resume and not (run_dir / "last.pt").is_file():
        raise BadInput(f"--resume: no checkpoint {run_dir / 'last.pt'} to continue from")
    fresh = not run_dir.exists()
    lock = Lock(run_dir / ".lock", wait=False)
    try:
        lock.__enter__()
    except BadInput:
        raise BadInput(f"{run_dir} is in use by another process (host, pid: {lock.holder()}; lock "
                       f"{lock.path}): wait for it to finish, or choose another --out") from None
    _FORK_CLOSE.add(lock.fd)
    try:
        yield
    finally:
        _FORK_CLOSE.discard(lock.fd)
        lock.__exit__(None, None, None)
        if fresh and not any(run_dir.iterdir()):
            run_dir.rmdir()


def save_epoch(run_dir: Path, ckpt: dict, improved: bool, history: list, best: dict) -> None:
    """After each epoch: last.pt, best.pt when the epoch improved, and metrics.json."""
    if improved:
        save_checkpoint(run_dir / "best.pt", ckpt)
    save_checkpoint(run_dir / "last.pt", ckpt)
    write_metrics(run_dir, history, best)


def save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def train(recipe: TrainRecipe, root: Path, out: str | None = None, resume: bool = False,
          extract_cmd: str = "vqa-cache extract", features=None, stream: bool | None = None,
          on_epoch=None) -> dict:
    """Train one head; returns the metrics dict.

    features: (plan, tensors, keys) from load_features, so that a sweep loads the cache once and shares it.
    stream: True reads image features from the shards in chunks; None decides by memory_budget().
    on_epoch(epoch, row): called after each epoch's checkpoints and metrics are written (an exception
    it raises ends the run there, exactly like a kill: `--resume` continues from last.pt).

    Under torchrun: DistributedDataParallel. Every rank draws the same permutation and the same global
    batches of optim.batch_size; rank r takes the r-th of `world` near-equal contiguous parts of each batch
    (a batch smaller than `world` goes whole to every rank), its loss weighted by its share so that DDP's
    gradient average is the single-process batch's gradient. Same steps, same schedule. Rank 0 evaluates,
    broadcasts the validation metrics (early stopping stays in step) and alone writes the run directory.
    """
    if dist.init():
        dist.quiet_others()
    run_dir = dist.broadcast(pick_run_dir(recipe, out, resume))     # rank 0's choice (runs/NAME-N)
    with run_lock(run_dir, resume, take=dist.is_main()):
        return _train(recipe, root, run_dir, resume, extract_cmd, features, stream, on_epoch)


def _train(recipe: TrainRecipe, root: Path, run_dir: Path, resume: bool, extract_cmd: str, features, stream,
           on_epoch) -> dict:
    """train() in its locked run directory."""
    t_start = time.time()
    plan, tensors, keys = features or load_features(recipe, root, extract_cmd, stream)
    splits, vocab, split_names, dropped = build_splits(plan, tensors, recipe)
    device = dist.device(pick_device(recipe.device).type)
    image = tensors["image"][1]
    streaming = isinstance(image, ImageStream)
    if not streaming:
        image = image.to(device)
    question = tensors["question"][1].to(device)
    for s in splits.values():
        s.to(device)
    K = len(vocab)
    train_split, val_split = splits["train"], splits["val"]
    train_rows = trainable(train_split, K)
    if len(train_rows) == 0:
        raise BadInput("no training question has an answer in the vocabulary")

    torch.manual_seed(recipe.seed)
    model = heads.build(recipe.head.name, image.shape[-1], question.shape[-1], K,
                        recipe.head.hidden, recipe.head.dropout).to(device)
    o = recipe.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                  weight_decay=o.weight_decay)
    steps = math.ceil(len(train_rows) / o.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o, steps))
    ctx, scaler = amp(device)
    head_config = {"name": recipe.head.name, "image_dim": image.shape[-1], "question_dim": question.shape[-1],
                   "num_answers": K, "hidden": recipe.head.hidden, "dropout": recipe.head.dropout}
    config = {"recipe": to_dict(recipe), "cache_keys": keys, "cache_dir": str(root), "splits": split_names,
              "cache_specs": {"image": plan.image_spec, "question": plan.question_spec},
              "vocabulary": {"size": K, "top_k": vocab.top_k, "min_count": vocab.min_count,
                             "coverage": round(vocab.coverage(train_split.table.column("answers").to_pylist()), 4)},
              "questions": {"train": len(train_split), "val": len(val_split), "dropped": dropped},
              "head": head_config, "device": str(device), "stream": streaming}

    history, best, bad_epochs, start_epoch = [], {"epoch": 0, "val_accuracy": -1.0}, 0, 0
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt", keys, resume=True)
        if ckpt["vocab"].get("answers") != vocab.answers:
            raise BadInput(f"{run_dir / 'last.pt'}: its answer vocabulary differs from this recipe's "
                           f"({len(ckpt['vocab'].get('answers') or [])} vs {K} answers): resume with the run's own recipe")
        if ckpt["head"] != head_config:
            raise BadInput(f"{run_dir / 'last.pt'}: head {ckpt['head']} differs from this recipe's {head_config}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, best, bad_epochs, start_epoch = ckpt["history"], ckpt["best"], ckpt["bad_epochs"], ckpt["epoch"]
        if scaler and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        print(f"resuming {run_dir} after epoch {start_epoch}")
    main, world = dist.is_main(), dist.world()
    ddp = model
    if dist.enabled():
        if not main:   # own dropout masks (rank 0 keeps the single-process stream)
            torch.manual_seed(recipe.seed * 1_000_003 + dist.rank() * 7919 + start_epoch)
        config["world_size"] = world
        # static_graph: heads whose unused parameters are the same every step are fine
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"run {run_dir}: head {recipe.head.name} ({n_params / 1e6:.2f}M params), {K} answers "
          f"(coverage {config['vocabulary']['coverage']:.2%}), {len(train_rows)} train / {len(val_split)} val "
          f"questions, device {device}{', streaming image features from the shards' if streaming else ''}")

    def payload(epoch):
        return {"model": model.state_dict(), "head": head_config, "vocab": vocab.to_dict(), "cache_keys": keys,
                "recipe": to_dict(recipe), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "history": history, "best": best, "bad_epochs": bad_epochs, "rng": rng_state(),
                "scaler": scaler.state_dict() if scaler else None}

    for epoch in range(start_epoch + 1, o.epochs + 1):
        if o.patience and bad_epochs >= o.patience:
            break
        t0 = time.time()
        model.train()
        gen = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        total, seen = 0.0, 0
        first_bad = torch.tensor(NEVER, device=device)      # first step with a NaN or infinite loss
        bar = progress(batches(train_split, image, question, train_rows, o.batch_size, gen), total=steps,
                       desc=f"epoch {epoch}/{o.epochs}", unit="batch", leave=False, file=sys.stderr,
                       disable=not main)
        for step, (idx, img, q) in enumerate(bar, 1):
            share, count = 1.0, len(idx)
            if world > 1:                 # this rank's part of the global batch
                part, share, count = rank_part(len(idx), world, dist.rank())
                idx, img, q = idx[part], img[part], q[part]
            with ctx:
                logits = ddp(img, q)
            loss = batch_loss(logits, train_split, idx, K)
            optimizer.zero_grad(set_to_none=True)
            step_loss = loss * share if share != 1.0 else loss
            if scaler:
                scaler.scale(step_loss).backward()
                scaler.unscale_(optimizer)
            else:
                step_loss.backward()
            if o.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
            scheduler.step()
            total = total + loss.detach() * count           # no host sync per step
            first_bad = note_bad_step(first_bad, loss.detach(), step)
            seen += count
            if main and bar.n % 50 == 0:
                bar.set_postfix(loss=f"{float(total) / seen:.4f}")
        bar.close()
        total, seen = dist.all_reduce([float(total), float(seen)])
        check_finite(total, dist.all_reduce(float(first_bad), "min"), epoch, steps, run_dir)
        if main:
            val_loss, val_acc, _, per_type = evaluate(model, val_split, image, question, 1024, K, ctx)
        else:
            val_loss = val_acc = per_type = None
        val_loss, val_acc, per_type = dist.broadcast((val_loss, val_acc, per_type))   # rank 0's
        row, best, bad_epochs, improved = record_epoch(history, best, bad_epochs, epoch, total / seen, val_loss,
                                                       val_acc, per_type, {"lr": optimizer.param_groups[0]["lr"]}, t0)
        if main:
            save_epoch(run_dir, payload(epoch), improved, history, best)
        if on_epoch is not None:
            on_epoch(epoch, row)

    if not history:
        raise BadInput(f"{run_dir}: nothing to train (already at epoch {start_epoch} of {o.epochs})")
    if not main:
        return {"epochs": history, "best": best}
    # predictions of the best model on the validation split, in the official results format
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    _, _, preds, _ = evaluate(model, val_split, image, question, 1024, K, ctx)
    write_predictions(run_dir / "predictions.json", val_split.table.column("question_id").to_pylist(),
                      [vocab.answers[int(p)] for p in preds])
    metrics = write_metrics(run_dir, history, best)
    plot_curves(run_dir / "curves.png", history)
    last = history[-1]
    print(f"\nbest val accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']} "
          f"({', '.join(f'{k} {v:.4f}' for k, v in history[best['epoch'] - history[0]['epoch']]['val_accuracy_per_type'].items())})"
          if history[0]["epoch"] <= best["epoch"] else f"\nbest val accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    print(f"{last['epoch']} epochs, {np.mean([h['seconds'] for h in history]):.2f} s/epoch, "
          f"{time.time() - t_start:.1f} s in all")
    print(f"results in {run_dir}/: metrics.json curves.png predictions.json best.pt last.pt config.json")
    return metrics


NEVER = 2**62     # "no bad step" (exact in float64, for the all-reduce)


def note_bad_step(first_bad: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """`first_bad` (0-dim long, on the loss's device) becomes `step` at the first non-finite loss. Computed on
    the device: no host sync per step (the epoch's end reads it once)."""
    return torch.where(torch.isfinite(loss) | (first_bad != NEVER), first_bad, step)


def check_finite(loss_sum: float, first_bad: float, epoch: int, steps: int, run_dir: Path, what: str = "step") -> None:
    """Raise Diverged when the epoch's summed train loss is NaN or infinite, naming the epoch and the first
    bad step, before anything of the epoch is written."""
    if math.isfinite(loss_sum):
        return
    where = f"epoch {epoch}" + (f", {what} {int(first_bad)} of {steps}" if first_bad < NEVER else "")
    kept = (f"{run_dir / 'last.pt'} (epoch {epoch - 1}) and best.pt are kept" if (run_dir / "last.pt").is_file()
            else "no checkpoint was written")
    raise Diverged(f"train loss is NaN or infinite at {where}: run stopped; {kept}. Lower optim.lr "
                   f"(or set optim.grad_clip) and train again")


CHECKPOINT_KEYS = ("model", "head", "vocab")
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "history", "best", "bad_epochs", "rng")
_LOADING = threading.Lock()     # safe_globals() below edits torch's process-wide allowlist


def _numpy_rng_globals() -> list:
    """What the pickle of a uint32 numpy array names: older checkpoints held numpy's RNG state as
    np.random.get_state() returns it. Arrays only (data: the dtype of an object array is not allowed),
    under numpy 1's and numpy 2's module names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:     # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [(_reconstruct, "numpy.core.multiarray._reconstruct"), (_reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: Path, keys: dict | None = None, resume: bool = False) -> dict:
    """A run checkpoint, loaded with weights_only=True: tensors and plain Python values only, so a crafted
    file cannot run code (it is bad input). Checks it holds a head, its weights and its vocabulary (and,
    for `resume`, the training state); refuses one made on another cache than `keys`."""
    if not path.is_file():
        raise BadInput(f"no checkpoint {path}")
    try:
        with _LOADING, torch.serialization.safe_globals(_numpy_rng_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = re.search(r"GLOBAL (\S+)", str(e))          # what it would have called or built
        raise BadInput(f"{path}: not a vqa-cache checkpoint (unpickling refused"
                       f"{': it names ' + name.group(1) if name else ''})") from None
    except Exception as e:
        raise BadInput(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    need = CHECKPOINT_KEYS + (RESUME_KEYS if resume else ())
    missing = [k for k in need if k not in ckpt] if isinstance(ckpt, dict) else list(need)
    if missing or not all(isinstance(ckpt[k], dict) for k in CHECKPOINT_KEYS):
        raise BadInput(f"{path}: not a vqa-cache checkpoint ({'no ' + ', '.join(missing) if missing else 'malformed'})")
    if keys is not None and ckpt.get("cache_keys") != keys:
        raise BadInput(f"{path} was trained on cache {ckpt.get('cache_keys')}, not on {keys}: "
                       f"refusing to mix caches")
    return ckpt


def read_run_config(run_dir) -> dict:
    """RUN/config.json, checked: a JSON object with the run's recipe and its (train, val) split names."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise BadInput(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{path}: expected a JSON object, got {type(config).__name__}")
    splits, specs = config.get("splits"), config.get("cache_specs", {})
    problem = ("no recipe" if not isinstance(config.get("recipe"), dict) else
               "no [train, val] splits" if not (isinstance(splits, list) and len(splits) == 2 and
                                                all(isinstance(x, str) for x in splits)) else
               "malformed cache_specs" if not (isinstance(specs, dict) and
                                               all(isinstance(specs.get(k, {}), dict) for k in ("image", "question"))) else
               "malformed cache_dir" if not isinstance(config.get("cache_dir", ""), str) else "")
    if problem:
        raise BadInput(f"{path}: not a vqa-cache run config ({problem})")
    return config


def write_metrics(run_dir: Path, history: list, best: dict) -> dict:
    metrics = {"epochs": history, "best": best}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def write_predictions(path: Path, question_ids: list[str], answers: list[str]) -> None:
    """Official results format: [{"question_id", "answer"}], integer ids where the dataset's are."""
    rows = [{"question_id": int(q) if q.isdigit() else q, "answer": a} for q, a in zip(question_ids, answers)]
    path.write_text(json.dumps(rows))


def plot_curves(path: Path, history: list) -> None:
    from matplotlib.figure import Figure   # no pyplot: thread-safe (sweep trials run in threads)

    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend()
    b.plot(ep, [h["val_accuracy"] for h in history], color="C2")
    b.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
