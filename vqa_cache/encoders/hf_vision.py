"""Hugging Face image encoders (`hf:ID_OR_DIR`): a vision model, or the vision tower of a CLIP / SigLIP
checkpoint, through AutoModel.

Pooled: the model's pooler output when the checkpoint defines one (CLIP's post-LayerNorm class token,
SigLIP's attention pooling, a ViT pooler that was trained), else the class token, else the mean of the grid.
Grid: the patch tokens, without the class, distillation or register tokens before them (or a CNN's map).
Input: its image processor config (preprocessor_config.json, or processor_config.json's nested one): size, resize and crop, resample, rescale,
mean and std. Like text models, a directory must hold safetensors and no custom code (check_model_dir).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..digest import sha256_file
from ..errors import BadInput
from .base import Preprocess, Trunk
from .shapes import load_failure
from .text import quiet_loading
from .weights import RANDOM_SEED, Choice, check_model_dir, directory_identity, hub_snapshot, online, read_state_dict

PREFIX = "hf:"


def check(name: str) -> None:
    if Path(name).is_dir():
        check_model_dir(Path(name), f"image encoder hf:{name}")
        return
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except Exception:  # HFValidationError (a ValueError), whatever the hub version calls it
        raise BadInput(
            f"image encoder hf:{name}: not a directory, nor a Hugging Face model id (expected hf:ORG/NAME or hf:DIR)"
        ) from None


def locate(name: str, allow_download: bool) -> tuple[Path | None, str]:
    """(model directory or None, its identity): the directory named, or the hub snapshot (cache, download)."""
    if Path(name).is_dir():
        return Path(name).resolve(), directory_identity(Path(name))
    found = hub_snapshot(name, local_only=True)
    if found is None and allow_download and online("https://huggingface.co"):
        found = hub_snapshot(name, local_only=False)
    if found is None:
        return None, ""
    check_model_dir(found, f"image encoder hf:{name}")
    return found, f"hf:{name}@{found.name}"


def _get(size, key):
    """A processor's size field: a dict, or a SizeDict (transformers 5)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def image_processor(path: Path, what: str):
    """The model's image processor through transformers' own readers, which know both layouts:
    preprocessor_config.json (transformers 4), and processor_config.json with the image processor nested
    in it (what ProcessorMixin.save_pretrained writes under transformers 5)."""
    from transformers import AutoImageProcessor, AutoProcessor

    if not any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise BadInput(
            f"{what}: no image processor config (preprocessor_config.json or processor_config.json, "
            f"which give its input size, resize, mean and std)"
        )
    errors = []
    for reader in (AutoImageProcessor, AutoProcessor):
        try:
            with quiet_loading(report=False):
                proc = reader.from_pretrained(str(path), trust_remote_code=False)
        except Exception as e:  # OSError, ValueError, KeyError, TypeError, ...: whatever the version raises
            errors.append(f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")
            continue
        proc = getattr(proc, "image_processor", proc)
        if hasattr(proc, "image_mean"):
            return proc
        errors.append(f"{type(proc).__name__} has no image mean and std")
    raise BadInput(f"{what}: cannot load its image processor ({'; '.join(errors)})")


def preprocess(path: Path, name: str) -> Preprocess:
    """The image processor config as a Preprocess: square resize ({height, width}), or the shorter side
    ({shortest_edge}, ConvNeXt's crop_pct) then a centre crop; resample, rescale factor, mean and std."""
    from PIL import Image

    what = f"image encoder hf:{name}"
    proc = image_processor(path, what)
    size, crop = getattr(proc, "size", None) or {}, getattr(proc, "crop_size", None) or {}
    height, width, shortest = _get(size, "height"), _get(size, "width"), _get(size, "shortest_edge")
    do_crop = getattr(proc, "do_center_crop", False)
    if height and height == width:
        out, side, square = (_get(crop, "height") if do_crop else height), height, True
    elif shortest and getattr(proc, "crop_pct", None):  # ConvNeXt: shorter side to size / crop_pct, crop size
        out, side, square = shortest, int(shortest / proc.crop_pct), False
    elif shortest and do_crop and _get(crop, "height") == _get(crop, "width"):
        out, side, square = _get(crop, "height"), shortest, False
    else:
        raise BadInput(
            f"{what}: image processor size {dict(size) if size else size} crop "
            f"{dict(crop) if crop else crop}: vqa-cache takes square inputs (height = width, or the "
            f"shortest edge and a square centre crop)"
        )
    resample = getattr(proc, "resample", None)
    interpolation = Image.Resampling(int(resample)).name.lower() if resample is not None else "bilinear"
    normalize = getattr(proc, "do_normalize", True)
    return Preprocess(
        int(out),
        int(side),
        square,
        interpolation,
        tuple(float(v) for v in proc.image_mean) if normalize else (0.0, 0.0, 0.0),
        tuple(float(v) for v in proc.image_std) if normalize else (1.0, 1.0, 1.0),
        float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0,
    )


def architecture(name: str) -> tuple[Path, str]:
    """(model directory, sha256 of its config.json): what a random init or a weights file is built on."""
    path, _ = locate(name, allow_download=True)
    if path is None:
        raise BadInput(
            f"image encoder hf:{name}: not in the Hugging Face cache and cannot be downloaded "
            f"(its config and image processor are needed for any weights)"
        )
    return path, sha256_file(path / "config.json")[:16]


def random(name: str, size: int) -> Choice:
    model_dir, config = architecture(name)
    return Choice(
        "random",
        f"random:{RANDOM_SEED}+config:{config}",
        None,
        encoder=PREFIX + name,
        preprocess=preprocess(model_dir, name),
        note=f"random init (seed {RANDOM_SEED}) of the architecture in {model_dir}",
    )


def from_file(name: str, path: Path, size: int) -> Choice:
    read_state_dict(path)
    model_dir, config = architecture(name)
    return Choice(
        "file",
        f"sha256:{sha256_file(path)}+config:{config}",
        path,
        encoder=PREFIX + name,
        preprocess=preprocess(model_dir, name),
        note=f"the weights file {path} in the architecture of {model_dir}",
    )


def pretrained(name: str, size: int, allow_download: bool) -> tuple[Choice | None, str]:
    path, identity = locate(name, allow_download)
    if path is None:
        return None, f"hf:{name} is not in the Hugging Face cache and cannot be downloaded"
    return Choice(
        "hf", identity, path, encoder=PREFIX + name, preprocess=preprocess(path, name), note=f"the model in {path}"
    ), ""


def load(choice: Choice) -> tuple[nn.Module, bool]:
    """(the vision model or tower, whether its pooler output is to be used)."""
    from transformers import AutoConfig, AutoModel

    name = choice.encoder[len(PREFIX) :]
    model_dir = choice.source if choice.kind == "hf" else architecture(name)[0]
    torch.manual_seed(RANDOM_SEED)
    try:
        with quiet_loading(report=False):  # the missing keys are judged below
            if choice.kind == "hf":
                model, info = AutoModel.from_pretrained(
                    str(model_dir), trust_remote_code=False, use_safetensors=True, output_loading_info=True
                )
                missing = sorted(info["missing_keys"])
            else:
                model, missing = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir))), []
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # missing or malformed files, unknown
        raise BadInput(
            f"image encoder hf:{name}: cannot load the model "  # model type, mis-shaped tensors
            f"({load_failure(e, model_dir)})"
        ) from None
    if choice.kind == "file":
        try:
            model.load_state_dict(read_state_dict(choice.source))
        except (RuntimeError, TypeError) as e:
            detail = " ".join(str(e).split())
            raise BadInput(f"--weights {choice.source}: does not fit hf:{name}: {detail[:300]}") from None
    if hasattr(model.config, "vision_config") and hasattr(model, "vision_model"):  # CLIP, SigLIP, ...
        model = model.vision_model
        missing = [k for k in missing if k.startswith("vision_model.")]
    if getattr(model, "main_input_name", None) != "pixel_values":
        raise BadInput(
            f"image encoder hf:{name}: {type(model).__name__} is not a vision model "
            f"(it reads {getattr(model, 'main_input_name', '?')}, not pixel_values)"
        )
    untrained = [k for k in missing if "pooler" not in k]
    if untrained:
        raise BadInput(
            f"image encoder hf:{name}: the checkpoint has no weights for {', '.join(untrained[:3])}"
            f"{' ...' if len(untrained) > 3 else ''}"
        )
    return model, not missing  # a pooler the checkpoint never trained is not its representation


class HFTrunk(Trunk):
    """pixel_values [B, 3, S, S] -> (pooler output | class token | grid mean, patch tokens or map positions).
    The tokens before the patches (class, distillation, registers) are counted as the sequence length minus
    the patch count of the model's patch embedding (`num_patches`), when it has one."""

    def __init__(self, model, use_pooler: bool):
        super().__init__()
        self.model, self.use_pooler = model, use_pooler
        self.patches = next(
            (m.num_patches for m in model.modules() if isinstance(getattr(m, "num_patches", None), int)), 0
        )

    def forward(self, x):
        out = self.model(pixel_values=x)
        states = out.last_hidden_state
        if states.ndim == 4:  # [B, D, h, w]: a CNN
            prefix, grid = 0, states.flatten(2).transpose(1, 2)
        else:
            prefix = states.shape[1] - self.patches if 0 < self.patches <= states.shape[1] else 0
            grid = states[:, prefix:]
        pooler = getattr(out, "pooler_output", None)
        if self.use_pooler and pooler is not None:
            pooled = pooler.flatten(1)
        else:
            pooled = states[:, 0] if prefix else grid.float().mean(dim=1)
        return pooled, grid


def trunk(choice: Choice) -> tuple[nn.Module, int]:
    model, use_pooler = load(choice)
    model.eval()
    body = HFTrunk(model, use_pooler)
    with torch.inference_mode():
        size = choice.preprocess.size
        pooled, _ = body(torch.zeros(1, 3, size, size))
    return body, pooled.shape[-1]
