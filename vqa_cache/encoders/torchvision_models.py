"""torchvision image encoders (`torchvision:NAME`, or a bare NAME): CNNs, ViT, Swin and MaxViT classifiers.

CNNs: the last feature map, pooled by its mean, grid = its positions (as vqa-cache always did; keys unchanged).
ViT: pooled = the class token after the encoder (what the classifier head reads), grid = the patch tokens.
Swin: pooled = the mean of the normalized last stage (the head's input), grid = that stage's positions.
MaxViT: pooled = the classifier up to its last Linear (pool, LayerNorm, Linear, Tanh), grid = the last stage.
Input: the recipe's image.size (ViT and MaxViT: the size their weights fix), bilinear square resize, ImageNet
mean and std. Pretrained weights are the official files (weights.official_file), identified by their enum.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .. import messages
from ..digest import sha256_file
from ..errors import BadInput
from .base import Preprocess, Trunk
from .weights import RANDOM_SEED, Choice, official_file, online, read_state_dict

PREFIX = ""  # keyed by the bare name: torchvision:resnet50 and resnet50 share their cache


def names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def default_weights(name: str):
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT


def architecture(name: str) -> str:
    """The torchvision.models module that builds the model: vision_transformer, swin_transformer, maxvit, or
    a CNN's (resnet, convnext, ...)."""
    import torchvision

    return torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1]


FIXED_SIZE = ("vision_transformer", "maxvit")  # position embeddings / attention partitions fix the input size
FIXED_SIZE_NAMES = ("vit_", "maxvit_")  # their models' names (tests/test_setup_cost.py checks every model's)
BUILDER_SIZE = 224  # the input size their builders make without weights


def fixed_size(name: str) -> bool:
    """Whether the model takes one input size (architecture in FIXED_SIZE), told by its name: stage two plans
    its cache without importing torchvision (two seconds at the start of every run)."""
    return name.startswith(FIXED_SIZE_NAMES)


def preprocess(name: str, size: int, weights=None) -> Preprocess:
    """ViT and MaxViT take one input size: their weights' (else the builders' 224); every other torchvision
    model takes the recipe's size."""
    if fixed_size(name):
        size = weights.meta["min_size"][0] if weights is not None else BUILDER_SIZE
    return Preprocess(size)


def random(name: str, size: int) -> Choice:
    return Choice(
        "random",
        f"random:{RANDOM_SEED}",
        None,
        encoder=name,
        preprocess=preprocess(name, size),
        note=f"random init (seed {RANDOM_SEED})",
    )


def from_file(name: str, path: Path, size: int) -> Choice:
    """A state-dict file, read and checked here (before any other work), keyed by its sha256."""
    read_state_dict(path)
    return Choice(
        "file",
        f"sha256:{sha256_file(path)}",
        path,
        encoder=name,
        preprocess=preprocess(name, size),
        note=f"the weights file {path}",
    )


def pretrained(name: str, size: int, allow_download: bool) -> tuple[Choice | None, str]:
    """Official weights of the model: its DEFAULT enum found installed anywhere, else downloaded to the torch
    hub directory when online, else any other of its enums found installed (resnet50's IMAGENET1K_V1 file
    when IMAGENET1K_V2 is the default). The key records the enum: the same cache a download would make."""
    import torchvision

    default = default_weights(name)
    path, looked = official_file(default.url)
    if path is None and allow_download and online(default.url):
        try:
            default.get_state_dict(progress=True, check_hash=True)
        except Exception as e:  # network, disk, checksum
            messages.warning(f"download of {default.url} failed: {e}")
        path, looked = official_file(default.url)
    weights = default
    for other in torchvision.models.get_model_weights(name):
        if path is None and other is not default:
            path, _ = official_file(other.url)
            weights = other
    if path is None:
        return None, (
            f"pretrained {name} weights ({type(default).__name__}.{default.name}, "
            f"{os.path.basename(default.url)}, or another of {type(default).__name__}) are not in "
            f"{looked} and cannot be downloaded"
        )
    enum_name = f"{type(weights).__name__}.{weights.name}"
    return Choice(
        "pretrained",
        enum_name,
        path,
        encoder=name,
        preprocess=preprocess(name, size, weights),
        note=f"{enum_name} from {path}",
    ), ""


@contextmanager
def hub_with(path: Path):
    """torch.hub sees `path` as its cached download: a temporary hub directory holding a link to it (the
    official file found elsewhere), so that torchvision's own builder loads it as after a download."""
    hub = Path(torch.hub.get_dir())
    if (hub / "checkpoints" / path.name).resolve() == path.resolve():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="vqa-cache-hub-") as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / path.name).symlink_to(path.resolve())
        previous = torch.hub._hub_dir  # None unless set_dir was called ($TORCH_HOME decides then)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous


def load(choice: Choice) -> nn.Module:
    """The torchvision classifier with the chosen weights."""
    import torchvision

    name = choice.encoder
    if choice.kind == "pretrained":
        with hub_with(Path(choice.source)):
            return torchvision.models.get_model(name, weights=torchvision.models.get_weight(choice.identity))
    torch.manual_seed(RANDOM_SEED)
    model = torchvision.models.get_model(name, weights=None)
    if choice.kind == "file":
        try:
            model.load_state_dict(read_state_dict(choice.source))
        except (RuntimeError, TypeError) as e:  # missing / unexpected keys, wrong shapes
            detail = " ".join(str(e).split())
            raise BadInput(
                f"--weights {choice.source}: does not fit {name}: {detail[:300]}{'...' if len(detail) > 300 else ''}"
            ) from None
    return model


def backbone(model: nn.Module) -> tuple[nn.Module, int]:
    """The part of a torchvision CNN classifier that makes the last feature map, and its channels."""
    if hasattr(model, "layer4") and hasattr(model, "fc"):  # ResNet, ResNeXt, Wide ResNet, RegNet-like
        body = nn.Sequential(*list(model.children())[:-2])
        width: int = model.fc.in_features
        return body, width
    if hasattr(model, "features"):  # VGG, DenseNet, EfficientNet, ConvNeXt, MobileNet
        body = model.features
        with torch.inference_mode():
            dim = body(torch.zeros(1, 3, 64, 64)).shape[1]
        return body, dim
    raise BadInput(
        f"image encoder {type(model).__name__}: no convolutional trunk found "
        f"(supported: torchvision CNN classifiers such as resnet50, convnext_tiny, efficientnet_b0, "
        f"and ViT, Swin and MaxViT)"
    )


class ViT(Trunk):
    """torchvision VisionTransformer: pooled = class token after the encoder's final LayerNorm, grid = patch tokens."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        x = m._process_input(x)  # [B, N, D] patch embeddings
        x = m.encoder(torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1))
        return x[:, 0], x[:, 1:]


class Swin(Trunk):
    """torchvision Swin (v1, v2): the normalized last stage [B, h, w, D]; pooled = its mean (the head's input)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        x = self.model.norm(self.model.features(x))  # [B, h, w, D]
        return x.float().mean(dim=(1, 2)), x.flatten(1, 2)


class MaxViT(Trunk):
    """torchvision MaxViT: pooled = classifier[:-1] (pool, LayerNorm, Linear, Tanh), grid = the last stage."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        x = self.model.stem(x)
        for block in self.model.blocks:
            x = block(x)  # [B, D, h, w]
        return self.model.classifier[:-1](x), x.flatten(2).transpose(1, 2)


def trunk(choice: Choice) -> tuple[nn.Module, int]:
    import torchvision.models as tvm

    model = load(choice)
    if isinstance(model, tvm.VisionTransformer):
        return ViT(model), model.hidden_dim
    if isinstance(model, tvm.SwinTransformer):
        return Swin(model), model.head.in_features
    if isinstance(model, tvm.MaxVit):
        return MaxViT(model), model.classifier[-1].in_features
    return backbone(model)
