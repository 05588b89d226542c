"""Answer-preserving image augmentation for finetune (finetune.augment, off by default): flips, a shift, a
RandomResizedCrop-style crop (scale and aspect ranges), and colour jitter (brightness, contrast, saturation,
hue), drawn per image from the model's own generator.

The question-aware rules (finetune.augment.question_rules, on by default) hold a transform back for an
image when a question on it in the batch could change its answer: no flip when one mentions left/right, no
crop when one counts or asks where (how many, left, top, corner, ...), no colour jitter when one asks about
colour. `counts` tallies, per epoch, how many images got each transform and how many a rule held back.

None of this applies to cached features (`train`): a cache holds one encoding of each image, so a transform
drawn anew each epoch would need the encoder live, which is what `finetune` is for.
"""

from __future__ import annotations

import math
import re

import torch

from ..recipes import AugmentSettings

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.I)
_COLOUR = re.compile(
    r"\b(colou?rs?|colou?red|red|green|blue|yellow|teal|brown|gr[ae]y|black|white|orange|"
    r"purple|pink|violet|cyan|magenta|beige|tan|gold|silver|dark|light|bright)\b",
    re.I,
)
_WHERE = re.compile(
    r"\b(how many|number of|count|left|right|top|bottom|above|below|corner|edge|side|"
    r"where|cut off|whole|entire)\b",
    re.I,
)
TRANSFORMS = ("hflip", "vflip", "translate", "crop", "colour")


def new_counts() -> dict:
    """The tally of one epoch: images seen, and per transform applied / held back by a rule."""
    return {"images": 0, **dict.fromkeys(TRANSFORMS, 0), **{f"{t}_held": 0 for t in ("flip", "crop", "colour")}}


def augment_images(
    x: torch.Tensor,
    texts_per_image: list[list[str]],
    augment: AugmentSettings,
    gen: torch.Generator,
    counts: dict | None = None,
) -> torch.Tensor:
    """Random flips / shifts / crops / colour jitter on uint8 images [B, 3, S, S], per image, with the
    question-aware rules above unless augment.question_rules is false; `counts` (new_counts()) is added to."""
    b = x.shape[0]
    if b == 0:
        return x
    rules = augment.question_rules

    def held(pattern):
        return torch.tensor([rules and any(pattern.search(t) for t in ts) for ts in texts_per_image])

    no_flip, no_colour, no_crop = held(_LEFT_RIGHT), held(_COLOUR), held(_WHERE)
    draws = torch.rand(b, 9, generator=gen)  # hflip, vflip, dx, dy, brightness, contrast, (unused), saturation, hue
    x = x.clone()
    tally = {"images": b}
    want_h, want_v = draws[:, 0] < augment.hflip, draws[:, 1] < augment.vflip
    hflip, vflip = want_h & ~no_flip, want_v & ~no_flip
    tally.update(hflip=int(hflip.sum()), vflip=int(vflip.sum()), flip_held=int(((want_h | want_v) & no_flip).sum()))
    if hflip.any():
        x[hflip.to(x.device)] = x[hflip.to(x.device)].flip(-1)
    if vflip.any():
        x[vflip.to(x.device)] = x[vflip.to(x.device)].flip(-2)
    if augment.translate > 0:
        t, size = augment.translate, x.shape[-1]
        padded = torch.nn.functional.pad(x.float(), (t, t, t, t), mode="replicate").to(x.dtype)
        dx = (draws[:, 2] * (2 * t + 1)).long().clamp(max=2 * t)
        dy = (draws[:, 3] * (2 * t + 1)).long().clamp(max=2 * t)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(b)])
        tally["translate"] = b
    if augment.crop < 1.0:
        want = torch.ones(b, dtype=torch.bool)  # RandomResizedCrop crops every image
        crop = want & ~no_crop
        tally.update(crop=int(crop.sum()), crop_held=int((want & no_crop).sum()))
        for i in torch.nonzero(crop).reshape(-1).tolist():
            x[i] = resized_crop(x[i], augment, gen)
    jitter = augment.brightness > 0 or augment.contrast > 0 or augment.saturation > 0 or augment.hue > 0
    if jitter:
        tally.update(colour=int((~no_colour).sum()), colour_held=int(no_colour.sum()))
    if jitter and (~no_colour).any():
        f = x.float()
        bright = (1 + augment.brightness * (2 * draws[:, 4] - 1)).to(x.device).view(b, 1, 1, 1)
        contrast = (1 + augment.contrast * (2 * draws[:, 5] - 1)).to(x.device).view(b, 1, 1, 1)
        mean = f.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((f * bright - mean * bright) * contrast + mean * bright).clamp(0, 255).round().to(x.dtype)
        if augment.saturation > 0 or augment.hue > 0:
            from torchvision.transforms.v2 import functional as TF  # (lazy: `predict` imports this module)

            sat = 1 + augment.saturation * (2 * draws[:, 7] - 1)
            hue = augment.hue * (2 * draws[:, 8] - 1)
            jittered = torch.stack(
                [TF.adjust_hue(TF.adjust_saturation(jittered[i], float(sat[i])), float(hue[i])) for i in range(b)]
            )
        x = torch.where(no_colour.to(x.device).view(b, 1, 1, 1), x, jittered)
    if counts is not None:
        for k, v in tally.items():
            counts[k] = counts.get(k, 0) + v
    return x


def resized_crop(img: torch.Tensor, augment: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop on one uint8 image [3, S, S]: a box of area share in [augment.crop, 1] and aspect
    ratio in [3/4, 4/3] (log-uniform), found in 10 tries as torchvision does (else the whole image), resized
    back to S x S."""
    h, w = img.shape[-2:]
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        area = h * w * (augment.crop + (1 - augment.crop) * u[0])
        ratio = math.exp(lo + (hi - lo) * u[1])
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            from torchvision.transforms.v2 import functional as TF  # (lazy: `predict` imports this module)

            top, left = int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1))
            return TF.resized_crop(img, min(top, h - ch), min(left, w - cw), ch, cw, [h, w], antialias=True)
    return img


def describe_augment(augment: AugmentSettings) -> str:
    """The run line's account of the augmentation: what is on, and whether the question rules are."""
    parts = [f"{k} {getattr(augment, k):g}" for k in ("hflip", "vflip") if getattr(augment, k) > 0]
    if augment.translate:
        parts.append(f"translate {augment.translate}px")
    if augment.crop < 1:
        parts.append(f"crop scale {augment.crop:g}-1")
    parts += [
        f"{k} {getattr(augment, k):g}"
        for k in ("brightness", "contrast", "saturation", "hue")
        if getattr(augment, k) > 0
    ]
    rules = "question rules on" if augment.question_rules else "question rules off"
    return f"augment {', '.join(parts) or 'nothing'} ({rules})"


def augment_line(counts: dict, rules: bool) -> str:
    """The epoch's tally: of the images drawn, how many got each transform, and how many a rule held back."""
    got = ", ".join(f"{t} {counts[t]}" for t in TRANSFORMS if counts.get(t))
    held = ", ".join(f"{t} {counts[f'{t}_held']}" for t in ("flip", "crop", "colour") if counts.get(f"{t}_held"))
    return f"augmented {counts['images']} images: {got or 'none transformed'}" + (
        f"; held back by the question rules: {held}" if held else "; no rule held one back" if rules else ""
    )
