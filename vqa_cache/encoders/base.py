"""What every image encoder family builds on: the Preprocess that makes an image its input (in the cache key),
and the Trunk class of a non-convolutional feature extractor."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes an encoder input: resize it (both sides, or the shorter side keeping the aspect
    ratio) to `resize_to`, centre-crop `size` x `size`, then normalize: (pixels * rescale - mean) / std."""

    size: int
    resize_to: int = 0  # 0: size (no crop)
    square: bool = True  # resize both sides (else the shorter one)
    interpolation: str = "bilinear"  # a PIL resampling filter: nearest, bilinear, bicubic, lanczos, box, hamming
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    rescale: float = 1 / 255

    def spec(self) -> dict:
        """What goes into the cache key; torchvision's bilinear square resize is written as it always was."""
        out = {
            "size": self.size,
            "resize": f"{self.interpolation}-{'square' if self.square else 'shorter-side'}",
            "mean": tuple(self.mean),
            "std": tuple(self.std),
        }
        if (self.resize_to or self.size) != self.size or not self.square:
            out["resize_to"] = self.resize_to
        if self.rescale != 1 / 255:
            out["rescale"] = self.rescale
        return out

    def describe(self) -> str:
        side = self.resize_to or self.size
        how = (
            f"{self.interpolation} resize to {side}x{side}"
            if self.square
            else f"{self.interpolation} resize of the shorter side to {side}"
        )
        crop = f", centre crop {self.size}x{self.size}" if side != self.size or not self.square else ""
        scale = "" if self.rescale == 1 / 255 else f", x{self.rescale:g}"
        return f"{self.size} px ({how}{crop}{scale}, mean {tuple(self.mean)}, std {tuple(self.std)})"

    def apply(self, im):
        """A PIL RGB image -> the encoder's size x size PIL image."""
        import torchvision.transforms.functional as TF
        from PIL import Image

        side = self.resize_to or self.size
        if self.square:
            im = im.resize((side, side), Image.Resampling[self.interpolation.upper()])
        else:
            im = TF.resize(im, side, interpolation=TF.InterpolationMode(self.interpolation))
        if side != self.size or not self.square:
            im = TF.center_crop(im, self.size)
        return im


class Trunk(nn.Module):
    """A family's model as a feature extractor: normalized images [B, 3, S, S] -> (pooled [B, D], grid [B, N, D])."""
