"""The encoders of finetune, live in the graph: each computes exactly what stage one's encoder wrote to the
cache (frozen, they equal the cached features up to float16), with the parts that train (scope.py)."""

from __future__ import annotations

import torch
from torch import nn

from ..encoders.image import ImageEncoder
from ..encoders.text import BagOfWords, load_text_model, pool
from ..errors import BadInput
from ..recipes import FinetuneSettings
from .scope import image_lora_match, image_units, parse_scope, scoped_modules, set_trainable, text_layers


class LiveImage(nn.Module):
    """uint8 [B, 3, S, S] -> pooled [B, D] or grid [B, h*w, D], exactly as ImageEncoder (extract) does. A CNN's
    frozen bottom runs without autograd, its trained stages optionally checkpointed; any other trunk (a ViT,
    a CLIP / SigLIP tower, a timm model) runs whole, with autograd when any of it trains."""

    def __init__(self, choice, output: str, settings: FinetuneSettings):
        super().__init__()
        self.enc = ImageEncoder(choice, (output,))
        self.output, self.checkpointing = output, settings.checkpointing
        kind, n = parse_scope(settings.train_image or settings.train_encoders, "train_image")
        self.scope = f"{kind}:{n}" if kind == "top" else kind
        body, convolutional = self.enc.body, self.enc.convolutional
        pairs = [
            ("enc.body." + p if p else "enc.body", m)
            for p, m in scoped_modules(body, image_units(body, convolutional), kind, n)
        ]
        if settings.lora_r > 0 and not settings.lora_image:
            pairs = []
        self.lora = set_trainable(self, pairs, settings, image_lora_match(body), "image")
        if self.checkpointing and not convolutional and any(p.requires_grad for p in self.parameters()):
            model = getattr(body, "model", None)
            if not hasattr(model, "gradient_checkpointing_enable"):
                raise BadInput(
                    f"finetune.checkpointing: not available for image encoder {choice.encoder} "
                    f"(Hugging Face models that support gradient checkpointing and torchvision CNNs)"
                )
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.dim: int = self.enc.dim
        self.batch_images = None  # under DDP: distinct images in the global batch (set by the loop)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training and (self.batch_images or images.shape[0]) == 1:
            # BatchNorm cannot take batch statistics of one image (at 1x1 they do not exist): this
            # micro-batch uses the running statistics, as at evaluation
            bns = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
            for m in bns:
                m.eval()
            try:
                return self._forward(images)
            finally:
                for m in bns:
                    m.train()
        return self._forward(images)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        enc = self.enc
        x = (images.float() - enc.mean) / enc.std
        if not enc.convolutional:
            trains = any(p.requires_grad for p in self.parameters()) and torch.is_grad_enabled()
            with torch.set_grad_enabled(trains):
                pooled, grid = enc.body(x)
            return pooled.float() if self.output == "pooled" else grid
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        grad = False
        for unit in enc.body.children():
            trains = any(p.requires_grad for p in unit.parameters())
            grad = grad or (trains and torch.is_grad_enabled())
            if not grad:
                with torch.no_grad():
                    x = unit(x)
            elif trains and self.checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(unit, x, use_reentrant=False)
            else:
                x = unit(x)
        if self.output == "pooled":
            return x.float().mean(dim=(2, 3))
        return x.flatten(2).transpose(1, 2)


class LiveText(nn.Module):
    """Question rows -> pooled [B, D] through a live Hugging Face encoder, as HFEncoder (extract) does.
    Every unique text is tokenized once up front; a batch is trimmed to its longest question."""

    def __init__(self, choice, texts: list[str], pooling: str, max_length: int, settings: FinetuneSettings):
        super().__init__()
        tok, self.model, self.dim = load_text_model(choice.source)
        self.pooling = pooling
        tokens = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        self.register_buffer("ids", tokens["input_ids"], persistent=False)
        self.register_buffer("mask", tokens["attention_mask"], persistent=False)
        kind, n = parse_scope(settings.train_text or settings.train_encoders, "train_text")
        self.scope = f"{kind}:{n}" if kind == "top" else kind
        pairs = []
        if kind != "none":
            prefix, layers = text_layers(self.model)
            units = [(f"{prefix}.{i}", m) for i, m in enumerate(layers)]
            pairs = [("model." + p if p else "model", m) for p, m in scoped_modules(self.model, units, kind, n)]
        suffixes = tuple(settings.lora_text_targets)
        self.lora = set_trainable(
            self, pairs, settings, lambda nm, m: isinstance(m, nn.Linear) and nm.split(".")[-1] in suffixes, "text"
        )
        for name, p in self.model.named_parameters():
            if name.startswith("pooler."):
                p.requires_grad_(False)  # pooled features are mean/[CLS] of the states
        if settings.checkpointing and any(p.requires_grad for p in self.parameters()):
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        ids, mask = self.ids[rows], self.mask[rows]
        length = int(mask.sum(1).max())
        ids, mask = ids[:, :length], mask[:, :length]
        trains = any(p.requires_grad for p in self.parameters()) and torch.is_grad_enabled()
        with torch.set_grad_enabled(trains):
            states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return pool(states, mask, self.pooling).float()


class FixedText(nn.Module):
    """Bag-of-words: no parameters, so its features are computed once for every unique text."""

    def __init__(self, texts: list[str]):
        super().__init__()
        self.register_buffer("features", torch.from_numpy(BagOfWords().encode(texts)["pooled"]), persistent=False)
        self.dim, self.scope, self.lora = int(self.features.shape[1]), "none", []

    def forward(self, rows):
        return self.features[rows]
