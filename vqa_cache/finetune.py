"""`vqa-cache finetune`: the heads of stage two trained end to end through live encoders (no cache).

Same samples, answer vocabulary, heads, loss, schedule, early stopping and run directory as `train`
(vqa_cache/training.py, reused). What differs:

- images are decoded once into one uint8 tensor [N_img, 3, S, S] (the same resize as `extract`), and
  each batch encodes each distinct image (and question text) once, then indexes the features;
- `train_encoders` = none | top:N | all picks what trains (N last top-level trunk stages with
  parameters, for ResNet layer4, layer3, ...; N last transformer layers of the text encoder);
  `lora_r` > 0 puts peft LoRA adapters there (text: query/value; image: every Conv2d) instead;
- BatchNorm layers whose parameters are frozen stay in eval mode (running statistics untouched);
  modules with nothing trainable run in eval mode (no dropout), so frozen == cached features;
- separate learning rates (head: optim.lr, encoders: finetune.encoder_lr), the same warm-up + cosine;
- mixed precision on CUDA (training.amp), gradient accumulation, gradient checkpointing;
- `init_head` starts the head from a cached `train` run (vocabulary and dimensions must match);
- checkpoints hold the head plus the trained encoder weights (or only the LoRA adapters), so
  `--resume` continues exactly;
- under torchrun, DistributedDataParallel with `train`'s batch split (see `finetune()`), trained BatchNorm
  layers on the global batch's statistics (RankSyncedBatchNorm).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed as dist
from . import heads
from .encoders.image import ImageEncoder, ImageFiles, collate
from .encoders.text import BagOfWords
from .errors import BadInput
from .device import amp, pick_device
from .cache.plan import make_plan
from .progress import progress
from .recipes import FinetuneRecipe, to_dict
from .training import (NEVER, batch_loss, build_splits, check_finite, evaluate, load_checkpoint, lr_lambda,
                       pick_run_dir, plot_curves, rank_part, read_run_config, record_epoch, rng_state, run_lock,
                       save_epoch, set_rng_state, trainable, write_metrics, write_predictions)

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.I)
_COLOUR = re.compile(r"\b(colou?rs?|colou?red|red|green|blue|yellow|teal|brown|gr[ae]y|black|white|orange|"
                     r"purple|pink|violet|cyan|magenta|beige|tan|gold|silver|dark|light|bright)\b", re.I)


# what `--init-head RUN` takes from RUN's recipe (features.*), unless given on the command line or with --set
ENCODER_KEYS = ("image.encoder", "image.weights", "image.size", "image.features",
                "text.encoder", "text.weights", "text.pooling", "text.max_length", "text.tokens")


def finetune_recipe(recipe, head, epochs, lr, batch_size, seed, sets, feature) -> FinetuneRecipe:
    """The CLI's options -> a FinetuneRecipe (the same overrides as `train`). With finetune.init_head = RUN,
    the image and text encoders are RUN's (ENCODER_KEYS), except the keys given on the command line or
    with --set, so that the head meets the features it was trained on; it prints what it took."""
    from .cli import feature_overrides, train_recipe
    r = train_recipe(recipe, head, epochs, lr, batch_size, seed, sets, feature, cls=FinetuneRecipe)[0]
    if not r.finetune.init_head:
        return r
    given = [item[0] if isinstance(item, tuple) else item.partition("=")[0].strip()   # typed pairs or --set text
             for item in feature_overrides("features.", **feature) + list(sets)]

    def explicit(key):
        return any(f"features.{key}" == g or f"features.{key}".startswith(g + ".") for g in given)
    run = run_encoders(r.finetune.init_head)
    taken = {k: v for k, v in run.items() if not explicit(k)}
    r = train_recipe(recipe, head, epochs, lr, batch_size, seed,
                     [(f"features.{k}", v) for k, v in taken.items()] + list(sets), feature,
                     cls=FinetuneRecipe)[0]
    if os.environ.get("RANK", "0") == "0":          # under torchrun, rank 0 alone says it
        kept = [f"{k}={json.dumps(feature_value(r, k))}" for k in run if k not in taken]
        print(f"--init-head {r.finetune.init_head}: encoders as that run's: "
              f"{', '.join(f'{k}={json.dumps(v)}' for k, v in taken.items()) or 'none'}"
              + (f"; given here: {', '.join(kept)}" if kept else ""))
    return r


def feature_value(r: FinetuneRecipe, key: str):
    """r.features.image.size for key "image.size"."""
    part, name = key.split(".")
    return getattr(getattr(r.features, part), name)


def run_encoders(run_dir) -> dict:
    """The ENCODER_KEYS values of a run's recipe (its config.json). Weights as its cache recorded them:
    `random`, `pretrained` or the weights file, so that `auto` cannot resolve to other weights now."""
    config = read_run_config(run_dir)
    features = config["recipe"].get("features")
    features = features if isinstance(features, dict) else {}
    out = {}
    for key in ENCODER_KEYS:
        part, name = key.split(".")
        value = features.get(part, {}).get(name) if isinstance(features.get(part), dict) else None
        if value is not None:
            out[key] = value
    specs = config.get("cache_specs", {})
    image, text = str(specs.get("image", {}).get("weights", "")), specs.get("question", {})
    if image:
        out["image.weights"] = ("random" if image.startswith("random:") else
                                out.get("image.weights") if image.startswith("sha256:") else "pretrained")
    if text:
        out["text.weights"] = "random" if text.get("encoder") == "bow" else "pretrained"
    return out


# ---------------------------------------------------------------- what trains

def parse_scope(text: str, what: str) -> tuple[str, int]:
    """'none' | 'all' | 'top:N' -> (kind, N)."""
    t = text.strip().lower()
    if t in ("none", "all"):
        return t, 0
    m = re.fullmatch(r"top:(\d+)", t)
    if m and int(m.group(1)) > 0:
        return "top", int(m.group(1))
    raise BadInput(f"{what} {text!r}: expected none, top:N (N >= 1) or all")


def image_units(body: nn.Module) -> list[tuple[str, nn.Module]]:
    """The trunk's top-level children that have parameters (ResNet: conv1, bn1, layer1..layer4)."""
    return [(n, m) for n, m in body.named_children() if any(True for _ in m.parameters())]


def text_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer layer list of a Hugging Face encoder (BERT: encoder.layer)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return name, m
    raise BadInput(f"text encoder {type(model).__name__}: cannot find its {n} transformer layers for top:N")


def scoped_modules(root: nn.Module, units: list[tuple[str, nn.Module]], kind: str, n: int):
    """(prefix, module) pairs that train under scope kind/n."""
    if kind == "none":
        return []
    if kind == "all":
        return [("", root)]
    if n > len(units):
        raise BadInput(f"top:{n}: this encoder has only {len(units)} trainable blocks")
    return units[-n:]


def lora_targets(pairs, root_prefix: str, match) -> list[str]:
    names = []
    for prefix, mod in pairs:
        for name, m in mod.named_modules():
            if match(name, m):
                full = ".".join(p for p in (root_prefix, prefix, name) if p)
                names.append(full)
    return names


def set_trainable(module: nn.Module, pairs, spec, lora_match, what: str) -> list[str]:
    """Freeze `module`, then unfreeze the scoped parts (full weights), or inject LoRA there. Returns
    the LoRA target names (empty without LoRA)."""
    module.requires_grad_(False)
    if not pairs:
        return []
    if spec.lora_r <= 0:
        for _, m in pairs:
            m.requires_grad_(True)
        return []
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(pairs, "", lora_match)
    if not targets:
        raise BadInput(f"LoRA: no target modules in the trained part of the {what} encoder")
    config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=targets, bias="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inject_adapter_in_model(config, module)
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)
    return targets


def freeze_modes(module: nn.Module) -> None:
    """After .train(): modules with nothing trainable go to eval mode (no dropout, BN statistics frozen);
    so does every BatchNorm whose own parameters are frozen (LoRA, partly trained trunks)."""
    if not any(p.requires_grad for p in module.parameters()):
        module.eval()
        return
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
        return
    for child in module.children():
        freeze_modes(child)


# ---------------------------------------------------------------- live encoders

class RankSyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A trained BatchNorm layer under DDP: in training, the batch statistics are those of the global batch
    (per-channel sums, sums of squares and counts summed over the ranks, differentiably), as in one process
    (torch's SyncBatchNorm, for the CPU too). Trained BatchNorm layers are switched to this class in place
    (same parameters, buffers and state-dict keys); in eval mode, or without torchrun, it is plain BatchNorm."""

    def _check_input_dim(self, input):
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.enabled()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = xf.new_full((1,), xf.numel() // max(1, c))
        stats = dist.sum_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)) * m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class LiveImage(nn.Module):
    """uint8 [B, 3, S, S] -> pooled [B, D] or grid [B, h*w, D], exactly as ImageEncoder (extract) does;
    the frozen bottom of the trunk runs without autograd, trained stages optionally checkpointed."""

    def __init__(self, name: str, choice, output: str, spec):
        super().__init__()
        self.enc = ImageEncoder(name, choice, (output,))
        self.output, self.checkpointing = output, spec.checkpointing
        kind, n = parse_scope(spec.train_image or spec.train_encoders, "train_image")
        self.scope = f"{kind}:{n}" if kind == "top" else kind
        pairs = [("enc.body." + p if p else "enc.body", m)
                 for p, m in scoped_modules(self.enc.body, image_units(self.enc.body), kind, n)]
        if spec.lora_r > 0 and not spec.lora_image:
            pairs = []
        self.lora = set_trainable(self, [(p, m) for p, m in pairs], spec,
                                  lambda nm, m: isinstance(m, nn.Conv2d), "image")
        self.dim = self.enc.dim
        self.batch_images = None     # under DDP: distinct images in the global batch (set by the loop)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training and (self.batch_images or images.shape[0]) == 1:
            # BatchNorm cannot take batch statistics of one image (at 1x1 they do not exist): this
            # micro-batch uses the running statistics, as at evaluation
            bns = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
            for m in bns:
                m.eval()
            try:
                return self._forward(images)
            finally:
                for m in bns:
                    m.train()
        return self._forward(images)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        enc = self.enc
        x = (images.float() - enc.mean) / enc.std
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        grad = False
        for unit in enc.body.children():
            trains = any(p.requires_grad for p in unit.parameters())
            grad = grad or (trains and torch.is_grad_enabled())
            if not grad:
                with torch.no_grad():
                    x = unit(x)
            elif trains and self.checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(unit, x, use_reentrant=False)
            else:
                x = unit(x)
        if self.output == "pooled":
            return x.float().mean(dim=(2, 3))
        return x.flatten(2).transpose(1, 2)


class LiveText(nn.Module):
    """Question rows -> pooled [B, D] through a live Hugging Face encoder, as HFEncoder (extract) does.
    Every unique text is tokenized once up front; a batch is trimmed to its longest question."""

    def __init__(self, choice, texts: list[str], pooling: str, max_length: int, spec):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(choice.source, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(choice.source, trust_remote_code=False)
        self.model.eval()
        self.dim = self.model.config.hidden_size
        self.pooling = pooling
        t = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        self.register_buffer("ids", t["input_ids"], persistent=False)
        self.register_buffer("mask", t["attention_mask"], persistent=False)
        kind, n = parse_scope(spec.train_text or spec.train_encoders, "train_text")
        self.scope = f"{kind}:{n}" if kind == "top" else kind
        pairs = []
        if kind != "none":
            prefix, layers = text_layers(self.model)
            units = [(f"{prefix}.{i}", m) for i, m in enumerate(layers)]
            pairs = [("model." + p if p else "model", m) for p, m in scoped_modules(self.model, units, kind, n)]
        suffixes = tuple(spec.lora_text_targets)
        self.lora = set_trainable(self, pairs, spec,
                                  lambda nm, m: isinstance(m, nn.Linear) and nm.split(".")[-1] in suffixes, "text")
        for name, p in self.model.named_parameters():
            if name.startswith("pooler."):
                p.requires_grad_(False)          # pooled features are mean/[CLS] of the states
        if spec.checkpointing and any(p.requires_grad for p in self.parameters()):
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        ids, mask = self.ids[rows], self.mask[rows]
        length = int(mask.sum(1).max())
        ids, mask = ids[:, :length], mask[:, :length]
        trains = any(p.requires_grad for p in self.parameters()) and torch.is_grad_enabled()
        with torch.set_grad_enabled(trains):
            states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(states.dtype)
        if self.pooling == "cls":
            return states[:, 0].float()
        return ((states * m).sum(1) / m.sum(1).clamp(min=1)).float()


class FixedText(nn.Module):
    """Bag-of-words: no parameters, so its features are computed once for every unique text."""

    def __init__(self, texts: list[str]):
        super().__init__()
        self.register_buffer("features", torch.from_numpy(BagOfWords().encode(texts)["pooled"]), persistent=False)
        self.dim, self.scope, self.lora = self.features.shape[1], "none", []

    def forward(self, rows):
        return self.features[rows]


# ---------------------------------------------------------------- augmentation

def augment_images(x: torch.Tensor, texts_per_image: list[list[str]], spec, gen: torch.Generator) -> torch.Tensor:
    """Random flips / shifts / brightness+contrast on uint8 images [B, 3, S, S], per image, never
    flipping an image a question in the batch asks left/right about, nor jittering the colours of
    one whose questions ask about colour."""
    b = x.shape[0]
    if b == 0:
        return x
    no_flip = torch.tensor([any(_LEFT_RIGHT.search(t) for t in ts) for ts in texts_per_image])
    no_colour = torch.tensor([any(_COLOUR.search(t) for t in ts) for ts in texts_per_image])
    r = torch.rand(b, 6, generator=gen)
    x = x.clone()
    h = (r[:, 0] < spec.hflip) & ~no_flip
    v = (r[:, 1] < spec.vflip) & ~no_flip
    if h.any():
        x[h.to(x.device)] = x[h.to(x.device)].flip(-1)
    if v.any():
        x[v.to(x.device)] = x[v.to(x.device)].flip(-2)
    if spec.translate > 0:
        t, s = spec.translate, x.shape[-1]
        padded = torch.nn.functional.pad(x.float(), (t, t, t, t), mode="replicate").to(x.dtype)
        dx = (r[:, 2] * (2 * t + 1)).long().clamp(max=2 * t)
        dy = (r[:, 3] * (2 * t + 1)).long().clamp(max=2 * t)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(b)])
    if (spec.brightness > 0 or spec.contrast > 0) and (~no_colour).any():
        f = x.float()
        bright = (1 + spec.brightness * (2 * r[:, 4] - 1)).to(x.device).view(b, 1, 1, 1)
        contrast = (1 + spec.contrast * (2 * r[:, 5] - 1)).to(x.device).view(b, 1, 1, 1)
        mean = f.mean(dim=(1, 2, 3), keepdim=True)
        j = ((f * bright - mean * bright) * contrast + mean * bright).clamp(0, 255).round().to(x.dtype)
        keep = no_colour.to(x.device).view(b, 1, 1, 1)
        x = torch.where(keep, x, j)
    return x


# ---------------------------------------------------------------- the model

class FinetuneModel(nn.Module):
    """(image rows, question rows) -> logits. Each distinct image and text of the batch is encoded once.

    Takes row indices (into the decoded image tensor and the unique text list), so training.evaluate's
    `model(image[img_row], question[q_row])` works with `image = question = ROWS` (an identity indexer)."""

    def __init__(self, images: torch.Tensor, texts: list[str], image_enc: LiveImage, text_enc: nn.Module,
                 head: nn.Module, augment=None, seed: int = 0):
        super().__init__()
        self.images = images                 # uint8 [N, 3, S, S] (CPU or device), not a parameter
        self.texts = texts
        self.image_enc, self.text_enc, self.head = image_enc, text_enc, head
        self.augment = augment if augment is not None and augment.enabled else None
        self.gen = torch.Generator().manual_seed(seed)
        self.encoded_images = 0              # distinct images encoded (for the dedupe test and the bench)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            freeze_modes(self.image_enc)
            freeze_modes(self.text_enc)
        return self

    def encoder_parameters(self):
        return [p for m in (self.image_enc, self.text_enc) for p in m.parameters() if p.requires_grad]

    def forward(self, img_rows: torch.Tensor, q_rows: torch.Tensor) -> torch.Tensor:
        device = next(self.head.parameters()).device
        u_img, inv_img = torch.unique(img_rows, return_inverse=True)
        u_q, inv_q = torch.unique(q_rows, return_inverse=True)
        x = self.images[u_img.to(self.images.device)].to(device, non_blocking=True)
        if self.augment is not None and self.training:
            per_image = [[] for _ in range(len(u_img))]
            for i, q in zip(inv_img.tolist(), q_rows.tolist()):
                per_image[i].append(self.texts[q])
            x = augment_images(x, per_image, self.augment, self.gen)
        self.encoded_images += len(u_img)
        img = self.image_enc(x)[inv_img.to(device)]
        q = self.text_enc(u_q.to(device))[inv_q.to(device)]
        return self.head(img, q)


class Rows:
    """An identity indexer: Rows()[idx] is idx (see FinetuneModel)."""

    def __getitem__(self, idx):
        return idx


# ---------------------------------------------------------------- building it

def decode_images(paths: list[str], size: int, workers: int, skip_bad: bool, limit_gb: float,
                  max_pixels: int):
    """All images as uint8 [N, 3, S, S], decoded once (DataLoader workers); plus the indices that failed."""
    need = len(paths) * 3 * size * size
    if need > limit_gb * 2**30:
        raise BadInput(f"finetune holds the decoded images in memory: {len(paths)} images at {size}px need "
                       f"{need / 2**30:.1f} GiB, over finetune.preload_gb = {limit_gb}; raise it or use a subset "
                       f"(--limit, --set features.dataset.image_fraction=...)")
    out = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    bad = []
    loader = torch.utils.data.DataLoader(ImageFiles(paths, size, max_pixels), batch_size=256, num_workers=workers,
                                         collate_fn=collate)
    for idx, batch, failed in progress(loader, desc="decoding images", unit="batch", leave=False, file=sys.stderr):
        if len(idx):
            out[idx] = batch
        for i, err in failed:
            if not skip_bad:
                raise BadInput(f"{paths[i]}: cannot read image ({err}); --set features.skip_bad=true skips it")
            bad.append(i)
    return out, bad


def build(recipe: FinetuneRecipe, device: torch.device, verbose: bool = True):
    """Plan, splits, vocabulary and the model (encoders + head) on `device`."""
    fr, spec = recipe.features, recipe.finetune
    need = heads.needs(recipe.head.name)
    if need["question"] != "pooled":
        raise BadInput(f"head {recipe.head.name!r} reads question {need['question']}; finetune supports heads "
                       f"that read pooled question features")
    if spec.accumulate < 1:
        raise BadInput(f"finetune.accumulate {spec.accumulate}: expected >= 1")
    with dist.main_first():             # under torchrun rank 0 downloads and parses first, the others read that
        plan = make_plan(fr, allow_download=True)
    images, bad = decode_images(plan.image_paths, fr.image.size, spec.workers, fr.skip_bad, spec.preload_gb,
                                fr.image.max_pixels)
    bad_set = set(bad)
    ok_ids = [i for k, i in enumerate(plan.image_ids) if k not in bad_set]
    if bad:
        keep = torch.ones(len(plan.image_ids), dtype=torch.bool)
        keep[bad] = False
        images = images[keep]
    tensors = {"image": (ok_ids, None), "question": (plan.texts, None)}
    splits, vocab, split_names, dropped = build_splits(plan, tensors, recipe)
    torch.manual_seed(recipe.seed)
    image_enc = LiveImage(fr.image.encoder, plan.image_choice, need["image"], spec)
    if plan.text_choice.kind == "bow":
        text_enc = FixedText(plan.texts)
    else:
        text_enc = LiveText(plan.text_choice, plan.texts, fr.text.pooling, fr.text.max_length, spec)
    torch.manual_seed(recipe.seed)
    head = heads.build(recipe.head.name, image_enc.dim, text_enc.dim, len(vocab), recipe.head.hidden,
                       recipe.head.dropout)
    if device.type == "cuda" and images.numel() < 4 * 2**30:
        images = images.to(device)
    elif device.type == "cuda":
        images = images.pin_memory()
    model = FinetuneModel(images, plan.texts, image_enc, text_enc, head, spec.augment, recipe.seed).to(device)
    for s in splits.values():
        s.to(device)
    return plan, splits, vocab, split_names, dropped, model


def encoder_state(model: FinetuneModel) -> dict:
    """What of the encoders changes in training: trained parameters (or LoRA adapters) and the buffers
    (BatchNorm statistics) of the modules that train."""
    out = {}
    for part in ("image_enc", "text_enc"):
        enc = getattr(model, part)
        names = {n for n, p in enc.named_parameters() if p.requires_grad}
        for mname, m in enc.named_modules():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                for bname, _ in m.named_buffers(recurse=False):
                    names.add(f"{mname}.{bname}" if mname else bname)
        state = enc.state_dict()
        out[part] = {k: v for k, v in state.items() if k in names}
    return out


def wrap_ddp(model: FinetuneModel, device: torch.device, img_rows: torch.Tensor, q_rows: torch.Tensor) -> nn.Module:
    """DistributedDataParallel over what trains: the head and the trained encoder parameters (full
    weights or LoRA adapters); frozen parameters are left out. Trained BatchNorm layers become
    RankSyncedBatchNorm (global batch statistics, so their running statistics are the same on every
    rank), so no buffer needs DDP's broadcasts (the decoded texts, bag-of-words features and frozen
    statistics are identical on every rank by construction).

    find_unused_parameters only where needed: one eval-mode forward and backward of (img_rows, q_rows)
    (the same on every rank) tells whether some trained parameter gets no gradient."""
    trained = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    model(img_rows, q_rows).float().sum().backward()
    unused = any(p.grad is None for p in trained)
    for p in trained:
        p.grad = None
    model.train(was)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters(False)):
            m.__class__ = RankSyncedBatchNorm
    ignore = [n for n, p in model.named_parameters() if not p.requires_grad]
    ignore += [n for n, _ in model.named_buffers()]
    DDP = torch.nn.parallel.DistributedDataParallel
    DDP._set_params_and_buffers_to_ignore_for_model(model, ignore)
    # not static_graph: it cannot start under no_sync (gradient accumulation)
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)


def load_encoder_state(model: FinetuneModel, state: dict, where) -> None:
    for part, values in state.items():
        enc = getattr(model, part)
        missing, unexpected = enc.load_state_dict(values, strict=False)
        if unexpected:
            raise BadInput(f"{where}: encoder weights {unexpected[:3]} do not fit this recipe's encoders")


def init_head(model: FinetuneModel, run_dir: str, vocab, head_config: dict, plan, recipe: FinetuneRecipe) -> str:
    """Load a cached run's head; its vocabulary and head shape must match this run's."""
    path = Path(run_dir) / "best.pt"
    ckpt = load_checkpoint(path)
    if ckpt["vocab"].get("answers") != vocab.answers:
        raise BadInput(f"--init-head {run_dir}: its answer vocabulary ({len(ckpt['vocab'].get('answers', []))} "
                       f"answers) differs from this run's ({len(vocab)}): train it on the same samples and "
                       f"[answers] settings")
    for k in ("name", "image_dim", "question_dim", "num_answers", "hidden"):
        if ckpt["head"].get(k) != head_config[k]:
            setting = {"image_dim": "image.encoder", "question_dim": "text.encoder"}.get(k)
            there = f" (features.{setting} = {json.dumps(run_encoders(run_dir).get(setting))})" if setting else ""
            here = f" (features.{setting} = {json.dumps(feature_value(recipe, setting))})" if setting else ""
            raise BadInput(f"--init-head {run_dir}: head {k} is {ckpt['head'].get(k)!r} there{there}, "
                           f"{head_config[k]!r} here{here}: the same head and encoders are needed")
    keys = ckpt.get("cache_keys") or ckpt.get("feature_keys") or {}
    note = ""
    if keys and keys != {"image": plan.image_key, "question": plan.question_key}:
        note = " (NOTE: it was trained on features of other encoder settings)"
        print(f"warning: --init-head {run_dir} was trained on features {keys}, this run's encoders "
              f"correspond to {plan.image_key} / {plan.question_key}", file=sys.stderr)
    model.head.load_state_dict(ckpt["model"])
    return f"{run_dir}{note}"


# ---------------------------------------------------------------- the loop

def epoch_order(split, rows: torch.Tensor, seed: int, epoch: int, group_by_image: bool) -> torch.Tensor:
    """The epoch's question order: shuffled (as `train`), or shuffled images with their questions together."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if not group_by_image:
        return rows[torch.randperm(len(rows), generator=g).to(rows.device)]
    rows_cpu = rows.cpu()[torch.randperm(len(rows), generator=g)]
    img = split.img_row.cpu()[rows_cpu]
    rank = torch.randperm(int(img.max()) + 1, generator=g)[img]
    order = torch.argsort(rank, stable=True)
    return rows_cpu[order].to(rows.device)


def finetune(recipe: FinetuneRecipe, out: str | None = None, resume: bool = False) -> dict:
    """Fine-tune end to end; returns the metrics dict.

    Under torchrun: DistributedDataParallel over the head and the trained encoder parts, exactly as
    `train` splits its batches (training.rank_part): every rank draws the same epoch order and the same
    global batches of optim.batch_size, rank r takes the r-th near-equal part of each with its loss weighted
    by its share; with group_by_image the cuts fall between images, so each image is encoded by one rank.
    Accumulated micro-batches sync gradients only on the last one. Rank 0 evaluates and broadcasts the
    validation metrics, and alone writes the run directory; every rank decodes the images itself.
    """
    if dist.init():
        dist.quiet_others()
    run_dir = dist.broadcast(pick_run_dir(recipe, out, resume))     # rank 0's choice (runs/NAME-N)
    with run_lock(run_dir, resume, take=dist.is_main()):
        return _finetune(recipe, run_dir, resume)


def _finetune(recipe: FinetuneRecipe, run_dir: Path, resume: bool) -> dict:
    """finetune() in its locked run directory."""
    t_start = time.time()
    o, spec = recipe.optim, recipe.finetune
    device = dist.device(pick_device(recipe.device).type)
    plan, splits, vocab, split_names, dropped, model = build(recipe, device)
    K = len(vocab)
    train_split, val_split = splits["train"], splits["val"]
    train_rows = trainable(train_split, K)
    if len(train_rows) == 0:
        raise BadInput("no training question has an answer in the vocabulary")
    head_config = {"name": recipe.head.name, "image_dim": model.image_enc.dim, "question_dim": model.text_enc.dim,
                   "num_answers": K, "hidden": recipe.head.hidden, "dropout": recipe.head.dropout}
    feature_keys = {"image": plan.image_key, "question": plan.question_key}
    enc_params = model.encoder_parameters()
    groups = [{"params": list(model.head.parameters()), "lr": o.lr, "name": "head"}]
    if enc_params:
        groups.append({"params": enc_params, "lr": spec.encoder_lr, "name": "encoders"})
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    batches = math.ceil(len(train_rows) / o.batch_size)
    steps = math.ceil(batches / spec.accumulate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o, steps))
    ctx, scaler = amp(device)
    params = [p for g in groups for p in g["params"]]
    n_enc = sum(p.numel() for p in enc_params)
    config = {"mode": "finetune", "recipe": to_dict(recipe), "feature_keys": feature_keys, "splits": split_names,
              "vocabulary": {"size": K, "top_k": vocab.top_k, "min_count": vocab.min_count,
                             "coverage": round(vocab.coverage(train_split.table.column("answers").to_pylist()), 4)},
              "questions": {"train": len(train_split), "val": len(val_split), "dropped": dropped},
              "head": head_config, "device": str(device),
              "encoders": {"image": plan.image_choice.identity, "text": plan.text_choice.identity,
                           "train_image": model.image_enc.scope, "train_text": model.text_enc.scope,
                           "lora_r": spec.lora_r, "lora_targets": len(model.image_enc.lora) + len(model.text_enc.lora),
                           "trainable_encoder_params": n_enc}}

    history, best, bad_epochs, start_epoch = [], {"epoch": 0, "val_accuracy": -1.0}, 0, 0
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt", resume=True)
        if ckpt.get("mode") != "finetune":
            raise BadInput(f"--resume: {run_dir} is not a finetune run")
        if ckpt.get("vocab", {}).get("answers") != vocab.answers or ckpt.get("head") != head_config:
            raise BadInput(f"--resume: {run_dir} was made with another vocabulary or head than this recipe's")
        model.head.load_state_dict(ckpt["model"])
        load_encoder_state(model, ckpt["encoders"], run_dir / "last.pt")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history, best, bad_epochs, start_epoch = ckpt["history"], ckpt["best"], ckpt["bad_epochs"], ckpt["epoch"]
        set_rng_state(ckpt["rng"])
        model.gen.set_state(ckpt["aug_rng"])
        config["init_head"] = ckpt.get("init_head")
        print(f"resuming {run_dir} after epoch {start_epoch}")
    elif spec.init_head:
        config["init_head"] = init_head(model, spec.init_head, vocab, head_config, plan, recipe)
    main, world = dist.is_main(), dist.world()
    ddp = model
    if dist.enabled():
        if not main:   # own dropout masks and augmentation draws (rank 0 keeps the single-process streams)
            torch.manual_seed(recipe.seed * 1_000_003 + dist.rank() * 7919 + start_epoch)
            model.gen.manual_seed(recipe.seed * 1_000_033 + dist.rank() * 7919 + start_epoch)
        config["world_size"] = world
        probe = train_rows[:2]
        ddp = wrap_ddp(model, device, train_split.img_row[probe], train_split.q_row[probe])
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    rows = Rows()
    n_head = sum(p.numel() for p in model.head.parameters())
    print(f"run {run_dir}: finetune, head {recipe.head.name} ({n_head / 1e6:.2f}M params), image encoder "
          f"{recipe.features.image.encoder} [{model.image_enc.scope}], text {plan.text_choice.identity} "
          f"[{model.text_enc.scope}], {'LoRA r=%d, ' % spec.lora_r if spec.lora_r else ''}"
          f"{n_enc / 1e6:.2f}M trainable encoder params, {K} answers, {len(train_rows)} train / {len(val_split)} "
          f"val questions, batch {o.batch_size} x {spec.accumulate}, device {device}")
    if spec.init_head and not resume and main:
        _, acc0, _, _ = evaluate(model, val_split, rows, rows, spec.eval_batch_size, K, ctx)
        print(f"epoch   0  val acc {acc0:.4f} (head from {spec.init_head}, live encoders)")
        config["init_head_val_accuracy"] = round(acc0, 6)
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))

    def payload(epoch):
        return {"mode": "finetune", "model": model.head.state_dict(), "encoders": encoder_state(model),
                "head": head_config, "vocab": vocab.to_dict(), "feature_keys": feature_keys,
                "recipe": to_dict(recipe), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "epoch": epoch, "history": history,
                "best": best, "bad_epochs": bad_epochs, "rng": rng_state(), "aug_rng": model.gen.get_state(),
                "init_head": config.get("init_head")}

    for epoch in range(start_epoch + 1, o.epochs + 1):
        if o.patience and bad_epochs >= o.patience:
            break
        t0 = time.time()
        ddp.train()
        perm = epoch_order(train_split, train_rows, recipe.seed, epoch, spec.group_by_image)
        chunks = [perm[s:s + o.batch_size] for s in range(0, len(perm), o.batch_size)]
        total, seen, first_bad = 0.0, 0, NEVER         # first_bad: first batch with a NaN or infinite loss
        bar = progress(range(len(chunks)), desc=f"epoch {epoch}/{o.epochs}", unit="batch", leave=False,
                       file=sys.stderr, disable=not main)
        optimizer.zero_grad(set_to_none=True)
        for b in bar:
            idx = chunks[b]
            g0 = b - b % spec.accumulate
            group = chunks[g0:g0 + spec.accumulate]
            weight = len(idx) / sum(len(c) for c in group)        # the group's loss is the mean over its questions
            count, last = len(idx), b == g0 + len(group) - 1
            if world > 1:                 # this rank's part of the global batch (whole images with group_by_image)
                keys = train_split.img_row[idx] if spec.group_by_image else None
                model.image_enc.batch_images = len(torch.unique(train_split.img_row[idx]))
                part, share, count = rank_part(len(idx), world, dist.rank(), keys)
                idx, weight = idx[part], weight * share
            with ddp.no_sync() if world > 1 and not last else nullcontext():   # sync on the group's last batch
                with ctx:
                    logits = ddp(train_split.img_row[idx], train_split.q_row[idx])
                loss = batch_loss(logits, train_split, idx, K)
                (scaler.scale(loss * weight) if scaler else loss * weight).backward()
            if last:
                if scaler:
                    scaler.unscale_(optimizer)
                if o.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
                (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            value = loss.item()                  # (the bar's running loss syncs each batch anyway)
            total += value * count
            seen += count
            if not math.isfinite(value):
                first_bad = min(first_bad, b + 1)
                if world == 1:                   # under torchrun every rank ends the epoch, then all stop
                    break
            if main:
                bar.set_postfix(loss=f"{total / seen:.4f}")
        bar.close()
        total, seen = dist.all_reduce([float(total), float(seen)])
        check_finite(total, dist.all_reduce(float(first_bad), "min"), epoch, len(chunks), run_dir, "batch")
        train_seconds = time.time() - t0
        if main:
            val_loss, val_acc, _, per_type = evaluate(model, val_split, rows, rows, spec.eval_batch_size, K, ctx)
        else:
            val_loss = val_acc = per_type = None
        val_loss, val_acc, per_type = dist.broadcast((val_loss, val_acc, per_type))   # rank 0's
        lrs = {"lr": optimizer.param_groups[0]["lr"],
               "encoder_lr": optimizer.param_groups[1]["lr"] if len(optimizer.param_groups) > 1 else 0.0}
        row, best, bad_epochs, improved = record_epoch(history, best, bad_epochs, epoch, total / seen, val_loss,
                                                       val_acc, per_type, lrs, t0,
                                                       {"train_seconds": round(train_seconds, 3)})
        if main:
            save_epoch(run_dir, payload(epoch), improved, history, best)

    if not history:
        raise BadInput(f"{run_dir}: nothing to train (already at epoch {start_epoch} of {o.epochs})")
    if not main:
        return {"epochs": history, "best": best}
    best_ckpt = load_checkpoint(run_dir / "best.pt")
    model.head.load_state_dict(best_ckpt["model"])
    load_encoder_state(model, best_ckpt["encoders"], run_dir / "best.pt")
    _, _, preds, _ = evaluate(model, val_split, rows, rows, spec.eval_batch_size, K, ctx)
    write_predictions(run_dir / "predictions.json", val_split.table.column("question_id").to_pylist(),
                      [vocab.answers[int(p)] for p in preds])
    metrics = write_metrics(run_dir, history, best)
    plot_curves(run_dir / "curves.png", history)
    print(f"\nbest val accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    print(f"{history[-1]['epoch']} epochs, {np.mean([h['seconds'] for h in history]):.2f} s/epoch, "
          f"{time.time() - t_start:.1f} s in all")
    print(f"results in {run_dir}/: metrics.json curves.png predictions.json best.pt last.pt config.json")
    return metrics
