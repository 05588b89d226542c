"""Answer-preserving image augmentation for finetune (finetune.augment, off by default)."""
from __future__ import annotations

import re

import torch

from ..recipes import AugmentSettings

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.I)
_COLOUR = re.compile(r"\b(colou?rs?|colou?red|red|green|blue|yellow|teal|brown|gr[ae]y|black|white|orange|"
                     r"purple|pink|violet|cyan|magenta|beige|tan|gold|silver|dark|light|bright)\b", re.I)


def augment_images(x: torch.Tensor, texts_per_image: list[list[str]], augment: AugmentSettings,
                   gen: torch.Generator) -> torch.Tensor:
    """Random flips / shifts / brightness+contrast on uint8 images [B, 3, S, S], per image, never
    flipping an image a question in the batch asks left/right about, nor jittering the colours of
    one whose questions ask about colour."""
    b = x.shape[0]
    if b == 0:
        return x
    no_flip = torch.tensor([any(_LEFT_RIGHT.search(t) for t in ts) for ts in texts_per_image])
    no_colour = torch.tensor([any(_COLOUR.search(t) for t in ts) for ts in texts_per_image])
    draws = torch.rand(b, 6, generator=gen)           # per image: hflip, vflip, dx, dy, brightness, contrast
    x = x.clone()
    hflip = (draws[:, 0] < augment.hflip) & ~no_flip
    vflip = (draws[:, 1] < augment.vflip) & ~no_flip
    if hflip.any():
        x[hflip.to(x.device)] = x[hflip.to(x.device)].flip(-1)
    if vflip.any():
        x[vflip.to(x.device)] = x[vflip.to(x.device)].flip(-2)
    if augment.translate > 0:
        t, size = augment.translate, x.shape[-1]
        padded = torch.nn.functional.pad(x.float(), (t, t, t, t), mode="replicate").to(x.dtype)
        dx = (draws[:, 2] * (2 * t + 1)).long().clamp(max=2 * t)
        dy = (draws[:, 3] * (2 * t + 1)).long().clamp(max=2 * t)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(b)])
    if (augment.brightness > 0 or augment.contrast > 0) and (~no_colour).any():
        f = x.float()
        bright = (1 + augment.brightness * (2 * draws[:, 4] - 1)).to(x.device).view(b, 1, 1, 1)
        contrast = (1 + augment.contrast * (2 * draws[:, 5] - 1)).to(x.device).view(b, 1, 1, 1)
        mean = f.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((f * bright - mean * bright) * contrast + mean * bright).clamp(0, 255).round().to(x.dtype)
        x = torch.where(no_colour.to(x.device).view(b, 1, 1, 1), x, jittered)
    return x
