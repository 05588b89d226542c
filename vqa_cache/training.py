"""Stage two: train a fusion head on cached features.

Features that fit go into one tensor each (on the GPU when there is one); a batch is an index slice
of them: no per-item Dataset, no DataLoader. One epoch of easy-VQA is a few seconds on a laptop CPU.

A run directory holds config.json, metrics.json, best.pt, last.pt, curves.png, predictions.json.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data, heads
from .cache import Entry
from .cache.reader import check_complete, load_rows
from .data.answers import Vocabulary, build_vocabulary, normalize_answer, soft_scores
from .errors import BadInput
from .extract import make_plan, pick_device
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
            for j, (a, s) in enumerate(soft_scores([normalize_answer(x) for x in raw]).items()):
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


def load_features(recipe: TrainRecipe, root: Path, extract_cmd: str):
    """Samples, image and question feature tensors (float32, CPU) and the cache keys, from a complete cache."""
    need = heads.needs(recipe.head.name)
    plan = make_plan(recipe.features, allow_download=False)
    tensors, keys = {}, {}
    for kind, key in (("image", plan.image_key), ("question", plan.question_key)):
        entry = Entry(root, key)
        manifest = check_complete(entry, extract_cmd)
        what = need[kind]
        if kind == "image" and what not in manifest["spec"]["outputs"]:
            raise BadInput(f"head {recipe.head.name!r} needs {what} image features; this cache has "
                           f"{'+'.join(manifest['spec']['outputs'])}: extract with --features {what}")
        if kind == "question" and what == "tokens" and not manifest["spec"].get("tokens"):
            raise BadInput(f"head {recipe.head.name!r} needs question token states: extract with --set text.tokens=true")
        ids, arr = load_rows(entry, manifest, FEATURE_DATASET[what] if kind == "image" else
                             ("embedding" if what == "pooled" else "tokens"))
        tensors[kind] = (ids, torch.from_numpy(arr.astype(np.float32)))
        keys[kind] = key
    return plan, tensors, keys


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


def amp(device: torch.device):
    """(autocast context, GradScaler or None): bf16 where supported, fp16 + scaler on older GPUs, none on CPU."""
    if device.type != "cuda":
        return nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def batch_loss(logits, split: Split, idx, K: int):
    """Soft-score BCE for 10-answer data (x K, the usual scaling), cross-entropy for one answer."""
    ti, tv = split.target_idx[idx], split.target_val[idx]
    if split.multi:
        target = torch.zeros(len(idx), K + 1, device=logits.device).scatter_(1, ti, tv)[:, :K]
        return F.binary_cross_entropy_with_logits(logits.float(), target) * K
    return F.cross_entropy(logits.float(), ti[:, 0])


def trainable(split: Split, K: int) -> torch.Tensor:
    """Rows that have at least one answer in the vocabulary (the others teach nothing)."""
    return torch.nonzero((split.target_idx < K).any(1)).squeeze(1)


@torch.no_grad()
def evaluate(model, split: Split, image, question, batch_size: int, K: int, ctx):
    """(mean loss, accuracy, predicted class per question, per-answer-type accuracy)."""
    model.eval()
    preds, losses, scores = [], [], []
    for s in range(0, len(split), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(split)), device=split.img_row.device)
        with ctx:
            logits = model(image[split.img_row[idx]], question[split.q_row[idx]])
        losses.append(batch_loss(logits, split, idx, K).item() * len(idx))
        p = logits.argmax(1)
        hit = (split.target_idx[idx] == p[:, None]).float() * split.target_val[idx]
        scores.append(hit.sum(1).cpu())
        preds.append(p.cpu())
    score = torch.cat(scores)
    per_type = {}
    for t in sorted(set(split.answer_type)):
        mask = torch.tensor([x == t for x in split.answer_type])
        per_type[t] = round(float(score[mask].mean()), 4)
    return sum(losses) / max(1, len(split)), float(score.mean()), torch.cat(preds), per_type


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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


def save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def train(recipe: TrainRecipe, root: Path, out: str | None = None, resume: bool = False,
          extract_cmd: str = "vqa-cache extract", features=None) -> dict:
    """Train one head; returns the metrics dict. `features` (from load_features) lets a sweep
    load the cache once and share it between trials."""
    t_start = time.time()
    plan, tensors, keys = features or load_features(recipe, root, extract_cmd)
    splits, vocab, split_names, dropped = build_splits(plan, tensors, recipe)
    run_dir = pick_run_dir(recipe, out, resume)
    device = pick_device(recipe.device)
    image = tensors["image"][1].to(device)
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
              "vocabulary": {"size": K, "top_k": vocab.top_k, "min_count": vocab.min_count,
                             "coverage": round(vocab.coverage(train_split.table.column("answers").to_pylist()), 4)},
              "questions": {"train": len(train_split), "val": len(val_split), "dropped": dropped},
              "head": head_config, "device": str(device)}

    history, best, bad_epochs, start_epoch = [], {"epoch": 0, "val_accuracy": -1.0}, 0, 0
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt", keys)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, best, bad_epochs, start_epoch = ckpt["history"], ckpt["best"], ckpt["bad_epochs"], ckpt["epoch"]
        set_rng_state(ckpt["rng"])
        print(f"resuming {run_dir} after epoch {start_epoch}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"run {run_dir}: head {recipe.head.name} ({n_params / 1e6:.2f}M params), {K} answers "
          f"(coverage {config['vocabulary']['coverage']:.2%}), {len(train_rows)} train / {len(val_split)} val "
          f"questions, device {device}")

    def payload(epoch):
        return {"model": model.state_dict(), "head": head_config, "vocab": vocab.to_dict(), "cache_keys": keys,
                "recipe": to_dict(recipe), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "history": history, "best": best, "bad_epochs": bad_epochs, "rng": rng_state()}

    for epoch in range(start_epoch + 1, o.epochs + 1):
        if o.patience and bad_epochs >= o.patience:
            break
        t0 = time.time()
        model.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(
            recipe.seed * 100_003 + epoch)).to(device)]
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(perm), o.batch_size), desc=f"epoch {epoch}/{o.epochs}", unit="batch",
                   leave=False, file=sys.stderr)
        for s in bar:
            idx = perm[s:s + o.batch_size]
            with ctx:
                logits = model(image[train_split.img_row[idx]], question[train_split.q_row[idx]])
            loss = batch_loss(logits, train_split, idx, K)
            optimizer.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if o.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        bar.close()
        val_loss, val_acc, _, per_type = evaluate(model, val_split, image, question, 1024, K, ctx)
        row = {"epoch": epoch, "train_loss": round(total / seen, 6), "val_loss": round(val_loss, 6),
               "val_accuracy": round(val_acc, 6), "val_accuracy_per_type": per_type,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 3)}
        history.append(row)
        improved = round(val_acc, 6) > best["val_accuracy"]
        if improved:
            best, bad_epochs = {"epoch": epoch, "val_accuracy": round(val_acc, 6)}, 0
        else:
            bad_epochs += 1
        print(f"epoch {epoch:>3}  train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
              f"val acc {val_acc:.4f}{' *' if improved else ''}  {row['seconds']:.1f}s")
        ckpt = payload(epoch)
        if improved:
            save_checkpoint(run_dir / "best.pt", ckpt)
        save_checkpoint(run_dir / "last.pt", ckpt)
        write_metrics(run_dir, history, best)

    if not history:
        raise BadInput(f"{run_dir}: nothing to train (already at epoch {start_epoch} of {o.epochs})")
    # predictions of the best model on the validation split, in the official results format
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=False)["model"])
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


def load_checkpoint(path: Path, keys: dict | None = None) -> dict:
    """A checkpoint; refuses one made on another cache than `keys`."""
    if not path.is_file():
        raise BadInput(f"no checkpoint {path}")
    try:
        # our own checkpoints hold numpy RNG state and plain Python objects
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise BadInput(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if keys is not None and ckpt.get("cache_keys") != keys:
        raise BadInput(f"{path} was trained on cache {ckpt.get('cache_keys')}, not on {keys}: "
                       f"refusing to mix caches")
    return ckpt


def write_metrics(run_dir: Path, history: list, best: dict) -> dict:
    metrics = {"epochs": history, "best": best}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def write_predictions(path: Path, question_ids: list[str], answers: list[str]) -> None:
    """Official results format: [{"question_id", "answer"}], integer ids where the dataset's are."""
    rows = [{"question_id": int(q) if q.isdigit() else q, "answer": a} for q, a in zip(question_ids, answers)]
    path.write_text(json.dumps(rows))


def plot_curves(path: Path, history: list) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend()
    b.plot(ep, [h["val_accuracy"] for h in history], color="C2")
    b.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
