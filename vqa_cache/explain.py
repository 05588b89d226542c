"""Why a model gave its answer: a map over the image for one question (Model.explain: `ask --json`,
`ask --explain OUT.png`; the report's gallery). It works on a Model's parts (vqa_cache/model/: its head,
image encoder, features and decoded pixels), which Model.explain hands it.

- Heads that attend over grid cells (attention, coattention, butd) keep the weights they gave each cell
  when `keep_attention` is set (the logits are the same): "method": "attention". attention averages its
  glimpses; coattention gives the attention pooling of its grid cells (the weight of each cell in the
  pooled image vector); butd its top-down attention.
- Heads on pooled features: Grad-CAM (Selvaraju et al. 2017) on the live image encoder's last spatial
  feature map A [D, h, w], for the top answer: weights w_d = mean over positions of d logit / d A_d,
  map = relu(sum_d w_d A_d); "method": "grad-cam". It needs an encoder whose pooled features are computed
  from that map (torchvision CNNs, timm CNNs); for others (ViT-style tokens, hf models) there is no map.

Every map is rows x columns (the grid's h x w; cells in the row-major order of the cache's grid), sums
to 1, and covers the image as the encoder saw it (after its resize and centre crop: `display_image`).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch

from . import heads
from .digest import write_file
from .encoders.base import Preprocess
from .encoders.image import ImageEncoder, decode_image
from .errors import BadInput
from .plot_text import plain


def attends(model) -> bool:
    """Whether a head keeps an attention map over grid cells (attention, coattention, butd)."""
    return hasattr(type(model), "keep_attention") and heads.needs(model.name)["image"] == "grid"


def head_attention(model, image: torch.Tensor, question: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, K], attention over the grid cells [B, N], float32, each row summing to 1) of a head
    that attends (`attends`); the logits are those of a plain forward."""
    model.keep_attention = True
    try:
        logits = model(image, question)
        weights = model.last_attention
    finally:
        model.keep_attention, model.last_attention = False, None
    return logits, weights / weights.sum(-1, keepdim=True)


def grid_shape(cells: int) -> tuple[int, int]:
    """(rows, columns) of a grid of `cells` cells: square maps (CNNs and ViTs on square crops), else one row."""
    side = math.isqrt(cells)
    return (side, side) if side * side == cells else (1, cells)


def as_map(weights) -> list[list[float]]:
    """A flat map over the cells (tensor or array) -> rows x columns lists of floats summing to 1."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1 / len(w))
    rows: list[list[float]] = w.reshape(grid_shape(len(w))).tolist()
    return rows


# ---------------------------------------------------------------- Grad-CAM


def spatial_forward(encoder: ImageEncoder, pixels: torch.Tensor):
    """(feature map [B, D, h, w] to take gradients at, pooled [B, D] computed from it), or None when the
    encoder's pooled features do not come from a spatial map."""
    from .encoders.timm_models import TimmTrunk

    x = (pixels.float() - encoder.mean) / encoder.std
    if encoder.convolutional:
        fmap = encoder.body(x)
        return fmap, fmap.float().mean(dim=(2, 3))
    if isinstance(encoder.body, TimmTrunk):
        features = encoder.body.model.forward_features(x)
        if features.ndim != 4:  # tokens: the pooled vector is a class token or a pooled projection
            return None
        pooled = encoder.body.model.forward_head(features, pre_logits=True)
        return (features.permute(0, 3, 1, 2) if encoder.body.nhwc else features), pooled
    return None


def grad_cam(encoder: ImageEncoder, pixels: torch.Tensor, model, question: torch.Tensor, answer: int):
    """The Grad-CAM map [h, w] (numpy, summing to 1) of answer index `answer` for one image, or None."""
    with torch.enable_grad():
        out = spatial_forward(encoder, pixels)
        if out is None:
            return None
        fmap, pooled = out
        grads = torch.autograd.grad(model(pooled.float(), question)[0, answer], fmap)[0][0].float()  # [D, h, w]
        cam = torch.relu((grads.mean(dim=(1, 2))[:, None, None] * fmap[0].detach().float()).sum(0))
    cam = cam.cpu().numpy().astype(np.float64)
    return cam / cam.sum() if cam.sum() > 0 else np.full_like(cam, 1 / cam.size)


# ---------------------------------------------------------------- one image and question


def explain(model, image, question: str, top: int = 5) -> dict:
    """{"answers": [{"answer", "score"}] (as `ask` gives them), "attention": rows x columns summing to 1
    or None, "method": "attention" | "grad-cam" | None, "grid": [rows, columns] or None} of a Model
    (vqa_cache/model: its head, image encoder and features) for one image and question."""
    if top < 1:
        raise BadInput(f"--top {top}: expected a number of answers >= 1")
    img, q = model.features([image], [question])
    head, vocab = model.head, model.vocab
    with torch.no_grad():
        if attends(head):
            logits, weights = head_attention(head, img, q)
            attention, method = as_map(weights[0].cpu()), "attention"
        else:
            logits, attention, method = head(img, q), None, None
    probs = logits.float().softmax(-1)[0].cpu()
    p, i = probs.topk(min(top, len(vocab)))
    answers = [{"answer": vocab.answers[int(j)], "score": float(v)} for v, j in zip(p, i)]
    if attention is None:
        pixels = model.pixels(image)[None].to(model.device)
        cam = grad_cam(model.image_encoder, pixels, head, q, int(i[0]))
        if cam is not None:
            attention, method = cam.tolist(), "grad-cam"
    rows_cols = [len(attention), len(attention[0])] if attention else None
    return {"answers": answers, "attention": attention, "method": method, "grid": rows_cols}


@torch.no_grad()
def cached_maps(p, rows: list[int]) -> dict[int, list[list[float]]]:
    """{row: map} for some questions of a prepared run (predict.prepare), from its cached grid features;
    {} for a head that does not attend (the report draws no Grad-CAM: it needs the live encoder)."""
    from .device import amp
    from .training.batches import batches

    if not rows or not attends(p.model):
        return {}
    ctx, _ = amp(p.device)
    out = {}
    for idx, img, q in batches(p.data, p.image, p.question, torch.tensor(rows, device=p.device), 256):
        with ctx:
            _, weights = head_attention(p.model, img, q)
        out.update({int(i): as_map(w) for i, w in zip(idx.cpu(), weights.float().cpu())})
    return out


# ---------------------------------------------------------------- drawing


def preprocess_of(spec: dict) -> Preprocess:
    """The resize and crop a cache entry's image spec records (for drawing; normalization left out)."""
    interpolation, _, how = str(spec.get("resize", "bilinear-square")).partition("-")
    return Preprocess(int(spec.get("size", 224)), int(spec.get("resize_to", 0)), how != "shorter-side", interpolation)


def display_image(path, spec: dict) -> np.ndarray:
    """The image as the run's encoder saw it (resize and centre crop), uint8 [S, S, 3]."""
    return decode_image(str(path), preprocess_of(spec)).permute(1, 2, 0).numpy()


def overlay_figure(image: np.ndarray, attention, title: str = "", size: float = 4.0):
    """A matplotlib Figure: the image with the map over it (bilinear, alpha 0.5, "jet" from 0 to the map's maximum)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size, size))
    ax = fig.add_axes((0, 0, 1, 0.92 if title else 1))
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0))
    att = np.asarray(attention, dtype=float)
    ax.imshow(att, cmap="jet", alpha=0.5, interpolation="bilinear", extent=(0, w, h, 0), vmin=0, vmax=att.max() or 1)
    ax.set_axis_off()
    if title:
        ax.set_title(plain(title), fontsize=9)  # a question or answer with `$` is not mathtext
    return fig


def overlay_png(image: np.ndarray, attention, title: str = "", size: float = 4.0, dpi: int = 72) -> bytes:
    buf = io.BytesIO()
    overlay_figure(image, attention, title, size).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def check_writable(out) -> Path:
    """`--explain OUT.png`: a file path whose directory exists and can be written, else BadInput."""
    out = Path(out)
    if out.is_dir():
        raise BadInput(f"--explain {out}: is a directory")
    if not out.parent.is_dir():
        raise BadInput(f"--explain {out}: no such directory {out.parent}")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise BadInput(f"--explain {out}: cannot write there (permission denied)")
    return out


def save_explanation(out, model, image, question: str, result: dict) -> Path:
    """Draw `result`'s map over the image as the model's encoder saw it (its resize and crop) into the PNG
    `out`, written atomically."""
    if result["attention"] is None:
        raise BadInput(
            f"--explain: the model (head {model.info['head'].get('name', '?')}) gives no map for this "
            f"image: its head does not attend over grid cells and its image encoder has no spatial "
            f"map for Grad-CAM"
        )
    best = result["answers"][0]
    title = f"{question}  ->  {best['answer']} ({best['score']:.0%}; {result['method']})"
    out = check_writable(out)
    try:
        write_file(out, overlay_png(model.pixels(image).permute(1, 2, 0).numpy(), result["attention"], title, dpi=100))
    except PermissionError as e:
        raise BadInput(f"--explain {out}: cannot write there ({e.strerror})") from None
    return out
