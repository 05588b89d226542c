"""What trains in finetune: `train_encoders` = none | top:N | all picks the parts of each encoder (the N last
top-level stages with parameters of a CNN trunk, for ResNet layer4, layer3, ...; the N last transformer
layers of a ViT-like image tower or of the text encoder); `lora_r` > 0 puts peft LoRA adapters there instead
(text: query/value; image: query/value of the attention, or in a CNN every ungrouped Conv2d: image_lora_match).
Frozen BatchNorm layers, and modules with nothing trainable, stay in eval mode."""

from __future__ import annotations

import re
import warnings

from torch import nn

from ..errors import BadInput
from ..recipes import FinetuneSettings


def parse_scope(text: str, what: str) -> tuple[str, int]:
    """'none' | 'all' | 'top:N' -> (kind, N)."""
    t = text.strip().lower()
    if t in ("none", "all"):
        return t, 0
    m = re.fullmatch(r"top:(\d+)", t)
    if m and int(m.group(1)) > 0:
        return "top", int(m.group(1))
    raise BadInput(f"{what} {text!r}: expected none, top:N (N >= 1) or all")


ATTENTION_TARGETS = ("query", "value", "q_proj", "v_proj")  # separate query / value projections (HF ViT, CLIP, SigLIP)


def image_units(body: nn.Module, convolutional: bool) -> list[tuple[str, nn.Module]]:
    """What top:N counts in an image trunk: a CNN's top-level children that have parameters (ResNet: conv1,
    bn1, layer1..layer4); another trunk's layers (the longest run of blocks of one class: a ViT's encoder
    layers, an EfficientNet's stages)."""
    if convolutional:
        return [(n, m) for n, m in body.named_children() if any(True for _ in m.parameters())]
    best = ("", [])
    for name, m in body.named_modules():
        kids = list(m.children())
        if (
            isinstance(m, (nn.ModuleList, nn.Sequential))
            and kids
            and len({type(k) for k in kids}) == 1
            and len(kids) > len(best[1])
        ):
            best = (name, kids)
    return [(f"{best[0]}.{i}", m) for i, m in enumerate(best[1])]


def image_lora_match(body: nn.Module):
    """Which modules of an image trunk get LoRA adapters, match(name, module): the attention's query and value
    projections where they are separate Linear layers (ATTENTION_TARGETS); where they are packed in one,
    that one (torchvision ViT's nn.MultiheadAttention, with peft's LoRA for it; timm's and Swin's `qkv`);
    in a CNN every ungrouped Conv2d (peft's LoRA takes no grouped or depthwise convolution)."""
    linear = {n.rsplit(".", 1)[-1] for n, m in body.named_modules() if isinstance(m, nn.Linear)}
    if linear & set(ATTENTION_TARGETS):
        return lambda name, m: isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION_TARGETS
    if any(isinstance(m, nn.MultiheadAttention) for m in body.modules()):
        return lambda name, m: isinstance(m, nn.MultiheadAttention)
    if "qkv" in linear:
        return lambda name, m: isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] == "qkv"
    return lambda name, m: isinstance(m, nn.Conv2d) and m.groups == 1


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


def set_trainable(module: nn.Module, pairs, settings: FinetuneSettings, lora_match, what: str) -> list[str]:
    """Freeze `module`, then unfreeze the scoped parts (full weights), or inject LoRA there. Returns
    the LoRA target names (empty without LoRA)."""
    module.requires_grad_(False)
    if not pairs:
        return []
    if settings.lora_r <= 0:
        for _, m in pairs:
            m.requires_grad_(True)
        return []
    from peft import LoraConfig, inject_adapter_in_model  # (lazy: a heavy import, for LoRA only)

    targets = lora_targets(pairs, "", lora_match)
    if not targets:
        raise BadInput(f"LoRA: no target modules in the trained part of the {what} encoder")
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,  # type: ignore[arg-type]  # peft types it int; a float works lora_dropout=settings.lora_dropout,
        target_modules=targets,
        bias="none",
    )
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
