"""`vqa-cache export RUN OUT_DIR`: a run's Model as a self-contained model directory in the Hugging Face Hub's
conventions (huggingface_hub can upload it as it is), usable with no cache, no run directory and no network:

  config.json                     what the model is: head name and config, the answer vocabulary, the image
                                  encoder's identity, output and preprocessing, the text encoder's settings,
                                  the features' dtype, and where it came from (run, dataset, cache keys, best)
  model.safetensors               the head's weights ("head.*")
  image_encoder/model.safetensors the image encoder's weights (trunk and normalization; a finetune run's trained
                                  weights, LoRA adapters merged), loaded into the architecture its name gives
                                  (torchvision, timm) or its config.json (hf: config.json and
                                  preprocessor_config.json copied from the model it started from)
  text_encoder/                   a Hugging Face model directory (save_pretrained: config, model.safetensors,
                                  tokenizer files; a finetune run's trained weights, LoRA merged); none for
                                  bag-of-words, whose word vocabulary (if any) is in config.json
  README.md                       the model card
No pickle anywhere: every tensor is in safetensors. The directory is written next to OUT_DIR and renamed into
place when whole; an existing OUT_DIR with files in it is refused."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..digest import write_file
from ..encoders.base import Trunk
from ..errors import BadInput
from ..version import __version__
from .core import Model

FORMAT = 1
LIBRARY = "vqa-cache"
TEXT_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")  # a model directory's files worth copying


def plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict with any peft LoRA adapters merged into the weights they adapt and the names
    as the plain architecture has them (X.base_layer.weight -> X.weight): loadable with no peft."""
    if any(hasattr(m, "merge") and hasattr(m, "base_layer") for m in module.modules()):
        module = copy.deepcopy(module)
        for m in module.modules():
            if hasattr(m, "merge") and hasattr(m, "base_layer"):
                m.merge()
    out = {}
    for k, v in module.state_dict().items():
        if "lora_" not in k:
            out[k.replace(".base_layer.", ".")] = v.detach().cpu().contiguous().clone()
    return out


def save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})


def save_image_encoder(model: Model, where: Path) -> dict:
    """image_encoder/: the encoder's weights (and an hf model's config files); the config.json record."""
    record = dict(model.info["image"])
    enc = model.image_encoder
    save_tensors(where / "model.safetensors", plain_state(enc))
    if record["encoder"].startswith("hf:"):
        source = Path(getattr(model, "sources", {}).get("image") or "")
        for name in ("config.json", "preprocessor_config.json"):
            if not (source / name).is_file():
                raise BadInput(f"export: the image encoder's {name} is not in {source} (its model directory)")
            shutil.copyfile(source / name, where / name)
        if isinstance(enc.body, Trunk) and hasattr(enc.body, "use_pooler"):
            record["hf_pooler"] = bool(enc.body.use_pooler)
    return record


def save_text_encoder(model: Model, where: Path) -> dict:
    """text_encoder/: a Hugging Face model directory (save_pretrained, or the model's own files copied when
    its text tower is not a PreTrainedModel and was not trained); the config.json record."""
    record = dict(model.info["text"])
    if record["kind"] == "bow":
        return record
    tower = model.text_encoder.model
    where.mkdir(parents=True)
    if hasattr(tower, "save_pretrained"):
        tower.save_pretrained(str(where), state_dict=plain_state(tower), safe_serialization=True)
        model.text_encoder.tokenizer.save_pretrained(str(where))
    elif record["trained"] == "none":
        source = Path(getattr(model, "sources", {}).get("text") or "")
        files = sorted({f for pattern in TEXT_FILES for f in source.glob(pattern) if f.is_file()})
        if not files:
            raise BadInput(f"export: the text encoder's model directory {source} is not here")
        for f in files:
            shutil.copyfile(f, where / f.name)
    else:
        raise BadInput(
            f"export: a trained {type(tower).__name__} text tower cannot be saved as a Hugging Face "
            f"model directory (it is not a PreTrainedModel)"
        )
    return record


def export(model: Model, out, command: str) -> Path:
    """Write `model` as a model directory at `out` (which must not exist, or be empty); returns its path."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"{out}: exists and is not an empty directory (export writes a new model directory)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_tensors(tmp / "model.safetensors", {f"head.{k}": v for k, v in plain_state(model.head).items()})
        config = {
            "library_name": LIBRARY,
            "model_type": "vqa-cache",
            "format": FORMAT,
            "vqa_cache_version": __version__,
            "head": model.info["head"],
            "vocab": model.info["vocab"],
            "features_dtype": model.info["features_dtype"],
            "image": save_image_encoder(model, tmp / "image_encoder"),
            "text": save_text_encoder(model, tmp / "text_encoder"),
            "source": {**model.info["source"], "command": command},
        }
        write_file(tmp / "config.json", json.dumps(config, indent=1).encode())
        write_file(tmp / "README.md", model_card(config).encode())
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def model_card(config: dict) -> str:
    """README.md: Hub metadata, then what the model is, how well it did, what made it and how to use it."""
    src, image, text, head = config["source"], config["image"], config["text"], config["head"]
    best = src.get("best") or {}
    acc = best.get("val_accuracy")
    per_type = ", ".join(f"{k} {v:.4f}" for k, v in (best.get("val_accuracy_per_type") or {}).items())
    keys = src.get("cache_keys") or {}
    answers = config["vocab"]["answers"]
    return f"""---
library_name: vqa-cache
pipeline_tag: visual-question-answering
tags:
- vqa-cache
- visual-question-answering
- {head["name"]}
metrics:
- accuracy
---

# {Path(src["run"]).name}: a vqa-cache `{head["name"]}` VQA model

A `{head["name"]}` fusion head ({src["mode"]} run) over the image encoder `{image["encoder"]}`
(weights `{image["weights"]}`, {image["output"]} features, trained: {image["trained"]}) and the text encoder
`{text["encoder"]}` (`{text["weights"]}`, {text["input"]} question input, trained: {text["trained"]}),
answering with one of {len(answers)} answers.

- **Dataset**: `{src["dataset"]["name"]}` (train split `{src["splits"][0]}`, validation split `{src["splits"][1]}`)
- **Best validation accuracy**: {"n/a" if acc is None else f"{acc:.4f}"} at epoch {best.get("epoch", "?")}{f" ({per_type})" if per_type else ""}
- **Cache keys**: image `{keys.get("image")}`, question `{keys.get("question")}`
- **Made by**: `{src["command"]}` (vqa-cache {config["vqa_cache_version"]}) from the run `{src["run"]}` ({src["checkpoint"]})

## Use

```
vqa-cache ask --model DIR --image IMAGE --question "What color is the shape?"
```

```python
import vqa_cache
model = vqa_cache.load("DIR")
model.ask("shape.png", "What color is the shape?", top=5)   # [(answer, score), ...]
```

Everything is in this directory (no cache, run directory or download is needed): `config.json` (head,
answers, encoders and preprocessing), `model.safetensors` (the head), `image_encoder/` (its weights) and
`text_encoder/` (a Hugging Face model directory{", absent: bag-of-words" if text["kind"] == "bow" else ""}).
No file is a pickle.
"""
