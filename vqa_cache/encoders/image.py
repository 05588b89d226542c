"""Frozen image encoders -> pooled [B, D] and/or grid [B, N, D] features, and the image decoding they share.

Images are decoded (decode_image) and resized (and cropped) to uint8 [3, S, S] in DataLoader workers, as the
encoder's Preprocess says; normalization happens on the device (a quarter of the bytes cross the bus).
`ImageEncoder.forward` takes that uint8 batch. The families (torchvision, hf, timm) are in families.py,
the Preprocess and Trunk they build in base.py.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..recipes import ImageSettings
from .base import Preprocess, Trunk
from .families import build_trunk
from .weights import Choice


class ImageEncoder(nn.Module):
    """uint8 images [B, 3, S, S] -> {"pooled": [B, D], "grid": [B, N, D]} (one forward for both).

    A convolutional trunk (torchvision CNNs; `body` makes the last feature map [B, D, h, w], `convolutional`
    is true) is pooled by the map's mean and its grid is the map's h*w positions; any other trunk (a Trunk)
    returns its own pooled (pre-logits) representation and grid (patch tokens)."""

    def __init__(self, choice: Choice, outputs: tuple[str, ...] = ("pooled",)):
        super().__init__()
        self.body, self.dim = build_trunk(choice)
        self.convolutional = not isinstance(self.body, Trunk)
        self.outputs = outputs
        prep = choice.preprocess
        self.register_buffer("mean", torch.tensor(prep.mean).view(1, 3, 1, 1) * (1 / prep.rescale))
        self.register_buffer("std", torch.tensor(prep.std).view(1, 3, 1, 1) * (1 / prep.rescale))
        self.eval()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images.float() - self.mean) / self.std
        if not self.convolutional:
            pooled, grid = self.body(x)
            return {k: v for k, v in (("pooled", pooled), ("grid", grid)) if k in self.outputs}
        fmap = self.body(x)  # [B, D, h, w]
        out = {}
        if "pooled" in self.outputs:
            out["pooled"] = fmap.float().mean(dim=(2, 3))  # [B, D]
        if "grid" in self.outputs:
            out["grid"] = fmap.flatten(2).transpose(1, 2)  # [B, h*w, D]
        return out


MAX_PIXELS = ImageSettings.max_pixels  # the recipe's default (image.max_pixels)


def to_8bit_rgb(im, file_format: str | None):
    """A PIL image -> 8-bit RGB. 16-bit grayscale (modes I;16*, and I as PNG opens it in older Pillow) is
    scaled by its bit depth; PIL's own conversion clips it at 255, so anything brighter than 1/257 is white.
    Other 32-bit integer images (mode I) are scaled by their positive range."""
    import numpy as np
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        bits = 16 if im.mode.startswith("I;16") or file_format == "PNG" else 31
        levels = np.asarray(im).astype(np.float64) * (255 / (2**bits - 1))
        im = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def decode_image(path: str, size: int | Preprocess, max_pixels: int = MAX_PIXELS, exif: bool = True) -> torch.Tensor:
    """One image file -> uint8 [3, S, S], the one decoding `extract`, `finetune` and `ask` share:
    EXIF orientation applied (as a camera or phone meant the photo to be seen), 16-bit grayscale scaled
    to 8 bits, RGB, then the encoder's resize and crop (`size`: a Preprocess, or an int for torchvision's
    bilinear resize to a size x size square). An image of more than `max_pixels` pixels (0: PIL's limit,
    Image.MAX_IMAGE_PIXELS) is refused from its header, before anything is decoded: a small PNG can
    expand to gigabytes (a decompression bomb). Raises for anything unreadable. `exif=False` ignores the
    orientation, as caches made before it was applied did (their spec has no "exif")."""
    import numpy as np
    from PIL import Image, ImageOps

    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    if limit and Image.MAX_IMAGE_PIXELS and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # PIL checks its own limit in Image.open; the recipe raised ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns above its limit
            with Image.open(path) as im:  # lazy: only the header is read so far
                width, height = im.size
                if limit and width * height > limit:
                    raise Image.DecompressionBombError(
                        f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,}"
                    )
                if exif:
                    ImageOps.exif_transpose(im, in_place=True)
                prep = size if isinstance(size, Preprocess) else Preprocess(size)
                im = prep.apply(to_8bit_rgb(im, im.format))
                return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Image.DecompressionBombError(f"{e} (image.max_pixels; --set image.max_pixels=N raises it)") from None


class ImageFiles(torch.utils.data.Dataset):
    """(index, uint8 [3, S, S], None) per image path (decode_image); an unreadable file gives
    (index, None, "ErrorType: message")."""

    def __init__(self, paths: list[str], size: int | Preprocess, max_pixels: int = MAX_PIXELS, exif: bool = True):
        self.paths, self.size, self.max_pixels, self.exif = paths, size, max_pixels, exif

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return i, decode_image(self.paths[i], self.size, self.max_pixels, self.exif), None
        except Exception as e:  # truncated, not an image, unreadable, missing, too many pixels
            return i, None, f"{type(e).__name__}: {e}"


def collate(items):
    """Keep good images as one batch tensor; pass the bad ones along by index."""
    good = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, err) for i, t, err in items if t is None]
    idx = torch.tensor([i for i, _ in good], dtype=torch.long)
    batch = torch.stack([t for _, t in good]) if good else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
    return idx, batch, bad
