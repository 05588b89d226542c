"""A Model from a run directory: a `train` run's head with the encoders its cache recorded (found again on this
machine, exactly as they made the cache), or a `finetune` run's head with its own trained encoders (the
trained weights, or the LoRA adapters applied, from its checkpoint). And a finetune run's split, encoded live
through those encoders, as `predict` and `report` read a train run's split from its cache (prepare)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pyarrow.compute as pc
import torch

from .. import heads, messages
from ..cache import Entry
from ..cache.plan import make_plan
from ..device import autocast, pick_device
from ..encoders.families import reproduce_image, resolve_image
from ..encoders.image import ImageEncoder, ImageFiles, collate
from ..encoders.text import BagOfWords, HFEncoder, default_pooling, load_text_encoder, load_tokenizer
from ..encoders.text_family import reproduce_text, resolve_text
from ..encoders.weights import Choice
from ..errors import BadInput
from ..finetuning.live import FixedText, LiveImage, LiveText
from ..finetuning.model import load_encoder_state
from ..predict import Prepared, cache_root_for, is_finetune, load_run
from ..predict import predict as predict_run
from ..rundir import model_checkpoint
from ..predict import prepare as prepare_cached
from ..training.splits import make_split, with_features
from .core import Model


def source_info(run_dir, recipe, config: dict, ckpt: dict) -> dict:
    """Where a model came from (config.json "source" of an export; the model card reads it)."""
    from ..rundir import read_metrics

    try:
        best = read_metrics(run_dir)["best"]
    except BadInput:
        best = None
    dataset = recipe.features.dataset
    return {
        "run": str(Path(run_dir).resolve()),
        "mode": "finetune" if is_finetune(config) else "train",
        "checkpoint": model_checkpoint(run_dir).name,
        "cache_keys": ckpt.get("cache_keys") or ckpt.get("feature_keys"),
        "dataset": {"name": dataset.name, "limit": dataset.limit, "answer_types": list(dataset.answer_types)},
        "splits": config["splits"],
        "questions": config.get("questions"),
        "best": best,
        "recipe": config["recipe"],
    }


def image_info(choice: Choice, output: str, exif: bool, max_pixels: int, trained: str = "none") -> dict:
    return {
        "encoder": choice.encoder,
        "weights": choice.identity,
        "output": output,
        "preprocess": {
            **asdict(choice.preprocess),
            "mean": list(choice.preprocess.mean),
            "std": list(choice.preprocess.std),
        },
        "exif": exif,
        "max_pixels": max_pixels,
        "trained": trained,
    }


def text_info(
    kind: str,
    encoder: str,
    identity: str,
    question_input: str,
    pooling=None,
    max_length: int = 32,
    tokens: bool = False,
    ids: bool = False,
    words=None,
    trained: str = "none",
) -> dict:
    return {
        "kind": kind,
        "encoder": encoder,
        "weights": identity,
        "input": question_input,
        "pooling": pooling,
        "max_length": max_length,
        "tokens": tokens,
        "ids": ids,
        "words": words,
        "trained": trained,
    }


def from_train_run(run_dir, root: Path, device: str = "auto") -> Model:
    """The Model of a `train` run: its head, and the encoders its cache entries' specs record, found on this
    machine (BadInput when they are not here or changed)."""
    recipe, config, ckpt, head, vocab = load_run(run_dir)
    specs = config.get("cache_specs")
    if not specs:  # a run from before config.json recorded them: read the cache manifests
        root = cache_root_for(root, config, ckpt["cache_keys"])
        specs = {k: Entry(root, key).manifest()["spec"] for k, key in ckpt["cache_keys"].items()}
    ispec, qspec = specs.get("image", {}), specs.get("question", {})
    missing = [f"image.{k}" for k in ("encoder", "weights", "size", "mean", "std") if k not in ispec] + [
        f"question.{k}"
        for k in ("weights", "pooling", "max_length")
        if k not in qspec and (k == "weights" or qspec.get("encoder") != "bow")
    ]
    if missing:
        raise BadInput(f"{Path(run_dir) / 'config.json'}: cache_specs without {', '.join(missing)}")
    choice = reproduce_image(ispec, recipe.features.image.weights)  # the same encoder, weights, preprocessing
    need = heads.needs(ckpt["head"]["name"])
    bow = qspec.get("encoder") == "bow" or str(qspec["weights"]).startswith("bow:")
    words = config.get("words")
    if need["question"] == "ids" and bow and not words:
        raise BadInput(f"{Path(run_dir) / 'config.json'}: no `words` (the word vocabulary of its question ids)")
    device = pick_device(recipe.device if device == "auto" else device)
    text_choice = reproduce_text(qspec)
    text = load_text_encoder(
        text_choice,
        qspec.get("pooling"),
        qspec.get("max_length", 32),
        bool(qspec.get("tokens")),
        str(device),
        bool(qspec.get("ids")),
        words,
    )
    info = {
        "head": ckpt["head"],
        "vocab": ckpt["vocab"],
        "features_dtype": "float16",
        "image": image_info(choice, need["image"], ispec.get("exif") == "transpose", recipe.features.image.max_pixels),
        "text": text_info(
            "bow" if bow else "hf",
            qspec.get("encoder", "bow"),
            text_choice.identity,
            need["question"],
            qspec.get("pooling"),
            qspec.get("max_length", 32),
            bool(qspec.get("tokens")),
            bool(qspec.get("ids")),
            words if bow else None,
        ),
        "source": source_info(run_dir, recipe, config, ckpt),
    }
    model = Model(head, vocab, ImageEncoder(choice, (need["image"],)), text, info, device)
    model.sources = {"image": choice.source, "text": text_choice.source}  # the model directories, for export
    return model


class TrainedText(HFEncoder):
    """A finetune run's trained text model (its tokenizer as loaded) as a text encoder: texts -> pooled."""

    def __init__(self, tokenizer, model, dim: int, pooling: str, max_length: int, device: str):
        self.tokenizer, self.model, self.dim = tokenizer, model, dim
        self.pooling, self.max_length, self.tokens, self.ids, self.device = pooling, max_length, False, False, device


def finetune_parts(run_dir, device: str = "auto") -> tuple:
    """(recipe, config, Model) of a `finetune` run: the encoders its recipe names, found on this machine as
    the run found them, with the trained weights (or LoRA adapters) of its checkpoint; features float32."""
    recipe, config, ckpt, head, vocab = load_run(run_dir)
    features, settings = recipe.features, recipe.finetune
    image_choice = resolve_image(
        features.image.encoder, features.image.weights, features.image.size, allow_download=False
    )
    text_choice = resolve_text(features.text.encoder, features.text.weights, allow_download=False)
    recorded = config.get("encoders") or {}
    for what, choice in (("image", image_choice), ("text", text_choice)):
        if recorded.get(what) not in (None, choice.identity):
            raise BadInput(
                f"{run_dir}: its {what} encoder started from {recorded[what]}; this machine has {choice.identity}"
            )
    if not isinstance(ckpt.get("encoders"), dict):
        raise BadInput(f"{model_checkpoint(run_dir)}: a finetune checkpoint without its encoders' weights")
    need = heads.needs(ckpt["head"]["name"])
    device = pick_device(recipe.device if device == "auto" else device)
    with torch.random.fork_rng():  # LoRA's initial draws: overwritten by the checkpoint's adapters
        live_image = LiveImage(image_choice, need["image"], settings)
        if text_choice.kind == "bow":
            live_text, pooling = FixedText([""]), None
        else:
            pooling = default_pooling(text_choice.source) if features.text.pooling == "auto" else features.text.pooling
            live_text = LiveText(text_choice, [""], pooling, features.text.max_length, settings)
    load_encoder_state(
        SimpleNamespace(image_enc=live_image, text_enc=live_text), ckpt["encoders"], model_checkpoint(run_dir)
    )
    if text_choice.kind == "bow":
        text = BagOfWords()
    else:
        text = TrainedText(
            load_tokenizer(text_choice.source),
            live_text.model,
            live_text.dim,
            pooling,
            features.text.max_length,
            str(device),
        )
    lora = f", LoRA r={settings.lora_r}" if settings.lora_r else ""
    info = {
        "head": ckpt["head"],
        "vocab": ckpt["vocab"],
        "features_dtype": "float32",
        "image": image_info(
            image_choice,
            need["image"],
            True,
            features.image.max_pixels,
            live_image.scope + (lora if live_image.lora else ""),
        ),
        "text": text_info(
            text_choice.kind,
            text_choice.encoder,
            text_choice.identity,
            need["question"],
            pooling,
            features.text.max_length,
            trained=live_text.scope + (lora if live_text.lora else ""),
        ),
        "source": source_info(run_dir, recipe, config, ckpt),
    }
    model = Model(head, vocab, live_image.enc, text, info, device)
    model.sources = {"image": image_choice.source, "text": text_choice.source}
    return recipe, config, model


def from_run(run_dir, root: Path, device: str = "auto") -> Model:
    """The Model of a train or finetune run directory (on `device`; auto: the run's recipe's)."""
    from ..rundir import read_run_config

    if is_finetune(read_run_config(run_dir)):
        return finetune_parts(run_dir, device)[2]
    return from_train_run(run_dir, root, device)


def prepare_finetune(run_dir, split: str | None = None) -> Prepared:
    """A finetune run's best model and one split of its dataset (default: its validation split), every distinct
    image and question encoded once through the run's own trained encoders: a Prepared whose model is the
    head, as predict.prepare makes of a train run's cache."""
    recipe, config, model = finetune_parts(run_dir)
    plan = make_plan(recipe.features, allow_download=False)
    split = split or config["splits"][1]
    table = plan.samples
    names = sorted(set(table.column("split").to_pylist()))
    if split not in names:
        raise BadInput(f"--split {split!r}: not in this run's dataset (it has {', '.join(names)})")
    table = table.filter(pc.equal(table["split"], split))
    paths = dict(zip(table.column("image_id").to_pylist(), table.column("image_path").to_pylist()))
    ids = sorted(paths)
    size = recipe.finetune.eval_batch_size
    loader = torch.utils.data.DataLoader(
        ImageFiles([paths[i] for i in ids], model.preprocess, recipe.features.image.max_pixels),
        batch_size=size,
        num_workers=recipe.finetune.workers,
        collate_fn=collate,
    )
    found, parts = [], []
    # as the run's evaluation encoded them: its precision's autocast, a CNN channels-last on a GPU (LiveImage)
    with torch.inference_mode(), autocast(model.device, config.get("precision")):
        for idx, batch, failed in loader:
            for i, err in failed:
                if not recipe.features.skip_bad:
                    raise BadInput(f"{paths[ids[i]]}: cannot read image ({err}); --set features.skip_bad=true skips it")
            if len(idx):
                found += [ids[int(i)] for i in idx]
                batch = batch.to(model.device)
                if batch.is_cuda and model.image_encoder.convolutional:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                parts.append(model._cast(model.image_encoder(batch)[model.image_output].float()))
        texts = sorted(set(table.column("question").to_pylist()))
        question = torch.cat([model.encode_questions(texts[s : s + size]) for s in range(0, len(texts), size)])
    image = torch.cat(parts) if parts else torch.empty(0)
    table, dropped = with_features(table, found)
    if dropped:
        messages.info(f"{dropped} questions of {split} have unreadable images: they get no prediction")
    data = make_split(table, {"image": (found, image), "question": (texts, question)}, model.vocab)
    data.to(model.device)
    return Prepared(config, split, table, data, image, question, model.head, model.vocab, model.device)


def prepare(run_dir, root: Path, split: str | None = None, stream: bool | None = None) -> Prepared:
    """A run's best model and one split: a train run's from its cache, a finetune run's encoded live."""
    from ..rundir import read_run_config

    if is_finetune(read_run_config(run_dir)):
        return prepare_finetune(run_dir, split)
    return prepare_cached(run_dir, root, split, stream)


def predict(
    run_dir, root: Path, split: str | None = None, out=None, stream: bool | None = None, fmt: str = "json"
) -> dict:
    """Official-format predictions of a train or finetune run's best model for one split (default: its
    validation split), and their accuracy where the split has answers (predict.predict)."""
    return predict_run(run_dir, root, split, out, stream, fmt, prepared_by=prepare)
