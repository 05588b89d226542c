"""The Model: a trained run's (or an exported model directory's) encoders and head, ready to answer questions
about new images with no cache and no dataset. `vqa_cache.load(DIR)` makes one (load.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..answers import Vocabulary
from ..cache.shards import head_ids
from ..device import autocast
from ..encoders.base import Preprocess
from ..encoders.image import ImageEncoder, decode_image, to_8bit_rgb
from ..errors import BadInput
from ..explain import check_writable, explain, save_explanation


class Model:
    """A trained VQA model: image -> image features (its image encoder, as the run saw them), question ->
    question features (its text encoder), both -> a score for every answer of its vocabulary (its head).

    >>> model = vqa_cache.load("runs/concat")            # a train or finetune run, or an exported directory
    >>> model.ask("shape.png", "What color is the shape?", top=3)
    [('yellow', 0.98), ('green', 0.01), ('red', 0.004)]
    >>> model.predict(["a.png", "b.png"], ["What shape is it?", "Is it red?"])   # the best answer of each pair
    [('circle', 0.99), ('no', 0.97)]
    >>> model.explain("shape.png", "What color is the shape?", out="where.png")   # answers and a map over the image

    `info` is what `vqa-cache export` writes to config.json: the head and its config, the answers, the
    encoders' identities and preprocessing, where the model came from. Images are file paths, PIL images or
    uint8 arrays [H, W, 3]; they are decoded and resized exactly as the model's training images were."""

    def __init__(
        self,
        head: torch.nn.Module,
        vocab: Vocabulary,
        image_encoder: ImageEncoder,
        text_encoder,
        info: dict,
        device: torch.device | str,
    ):
        self.head, self.vocab, self.image_encoder, self.text_encoder = head, vocab, image_encoder, text_encoder
        self.info, self.device = info, device
        self.sources: dict = {}  # the encoders' model directories where a run found them (export copies hf files)
        image, text = info["image"], info["text"]
        self.preprocess = Preprocess(
            **{
                **image["preprocess"],
                "mean": tuple(image["preprocess"]["mean"]),
                "std": tuple(image["preprocess"]["std"]),
            }
        )
        self.image_output, self.question_input = image["output"], text["input"]
        self.float16 = info["features_dtype"] == "float16"  # a cached run's head read float16 features
        self.exif, self.max_pixels = image["exif"], image["max_pixels"]
        for m in (head, image_encoder, getattr(text_encoder, "model", None)):
            if m is not None:
                m.to(device).eval()

    @property
    def answers(self) -> list[str]:
        """The answers the model chooses from (class i is answers[i])."""
        return list(self.vocab.answers)

    def pixels(self, image) -> torch.Tensor:
        """One image (a path, a PIL image, or a uint8 array [H, W, 3]) -> uint8 [3, S, S], as training decoded it."""
        if isinstance(image, (str, os.PathLike)):
            if not Path(image).is_file():
                raise BadInput(f"--image {image}: no such file")
            try:
                return decode_image(os.fspath(image), self.preprocess, self.max_pixels, exif=self.exif)
            except Exception as e:  # truncated, not an image, too many pixels
                raise BadInput(f"--image {image}: cannot read image ({type(e).__name__}: {e})") from None
        from PIL import Image, ImageOps

        if isinstance(image, np.ndarray):
            image = Image.fromarray(image.astype(np.uint8))
        if not isinstance(image, Image.Image):
            raise BadInput(f"image: expected a file path, a PIL image or a uint8 array, not {type(image).__name__}")
        if self.exif:
            image = ImageOps.exif_transpose(image)
        im = self.preprocess.apply(to_8bit_rgb(image, image.format))
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)

    @torch.no_grad()  # (not inference_mode: explain's Grad-CAM takes gradients through the head)
    def features(self, images: list, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features, question features) of paired images and questions: what the head reads."""
        if len(images) != len(questions):
            raise BadInput(f"{len(images)} images and {len(questions)} questions: expected one image per question")
        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise BadInput("--question is empty")
        batch = torch.stack([self.pixels(im) for im in images]).to(self.device)
        with autocast(self.device):
            img = self.image_encoder(batch)[self.image_output].float()
        return self._cast(img), self.encode_questions(list(questions))

    def encode_questions(self, questions: list[str]) -> torch.Tensor:
        """Question texts -> the question features the head reads (pooled, token states or token ids)."""
        text = self.text_encoder.encode(questions)
        if self.question_input == "ids":
            return torch.from_numpy(head_ids(text["ids"], text["length"])).to(self.device)
        if self.question_input == "tokens":
            q = text["tokens"] * text["mask"][:, :, None]
        else:
            q = text["pooled"]
        return self._cast(torch.from_numpy(np.asarray(q, dtype=np.float32)).to(self.device))

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        """Float16 and back where the head was trained on the cache's float16 features."""
        return x.to(torch.float16).float() if self.float16 else x.float()

    @torch.no_grad()
    def scores(self, images: list, questions: list[str]) -> torch.Tensor:
        """[N, answers] softmax scores of paired images and questions."""
        img, q = self.features(images, questions)
        return self.head(img, q).float().softmax(-1).cpu()

    def ask(self, image, question: str, top: int = 5) -> list[tuple[str, float]]:
        """The `top` most probable answers [(answer, score)] to one question about one image, best first."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise BadInput(f"--top {top!r}: expected a number of answers >= 1")
        p, i = self.scores([image], [question])[0].topk(min(top, len(self.vocab)))
        return [(self.vocab.answers[int(j)], float(v)) for v, j in zip(p, i)]

    def explain(self, image, question: str, top: int = 5, out=None) -> dict:
        """The answers with a map of where the model looked: {"answers": [{"answer", "score"}], "attention":
        rows x columns summing to 1 or None, "method": "attention" | "grad-cam" | None, "grid": [rows,
        columns] or None} (vqa_cache/explain.py). `out`: also draw the map over the image into this PNG."""
        if out is not None:
            check_writable(os.fspath(out))
        result = explain(self, image, question, top)
        if out is not None:
            save_explanation(os.fspath(out), self, image, question, result)
        return result

    def predict(self, images: list, questions: list[str], batch_size: int = 32) -> list[tuple[str, float]]:
        """The best answer and its score for each (image, question) pair."""
        out = []
        for s in range(0, len(images), batch_size):
            p, i = self.scores(images[s : s + batch_size], questions[s : s + batch_size]).max(-1)
            out += [(self.vocab.answers[int(j)], float(v)) for v, j in zip(p, i)]
        return out
