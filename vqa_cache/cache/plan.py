"""The cache plan: an extract recipe -> the samples, the unique images and question texts, the encoders'
real weights, and the two entry specs whose hashes are the cache keys (store.entry_key).

A spec holds everything that shapes an entry's bytes. Stage one (vqa_cache/extraction/) writes the entries
of a plan; stage two (vqa_cache/training/) and finetune rebuild the same plan, without downloading anything,
to find the entries they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa

from .. import data
from ..digest import fingerprint
from ..encoders import text_family
from ..encoders.families import known_image, resolve_image
from ..encoders.text import word_vocabulary
from ..encoders.weights import Choice
from ..errors import BadInput
from ..recipes import ExtractRecipe
from .samples import load_samples
from .store import Entry, entry_key

OUTPUTS = {"pooled": ("pooled",), "grid": ("grid",), "pooled+grid": ("pooled", "grid")}


@dataclass
class Plan:
    """What stage one computes, and the cache keys it goes under."""

    recipe: ExtractRecipe
    samples: pa.Table
    image_ids: list[str]  # unique, sorted
    image_paths: list[str]
    texts: list[str]  # unique question texts, sorted by length (less padding)
    image_choice: Choice
    text_choice: Choice
    image_spec: dict
    question_spec: dict
    words: list | None = None  # bag-of-words with ids: the word vocabulary of the training questions

    @property
    def image_key(self) -> str:
        return entry_key("image", self.image_spec)

    @property
    def question_key(self) -> str:
        return entry_key("question", self.question_spec)

    @property
    def cache_keys(self) -> dict[str, str]:
        """{"image": key, "question": key}: what a run records of the cache it was trained on."""
        return {"image": self.image_key, "question": self.question_key}


def make_plan(
    recipe: ExtractRecipe, samples: pa.Table | None = None, allow_download: bool = True, root: Path | None = None
) -> Plan:
    """The plan of a recipe. `samples`: the samples table when the caller has it; `root`: the cache root
    in which a file dataset's parse is kept (cache/samples.py); `allow_download`: False in stage two,
    which re-resolves the weights stage one chose and must not fetch others (with `root`, it finds a
    torchvision model's random or file weights without importing torchvision: families.known_image)."""
    if recipe.image.features not in OUTPUTS:
        raise BadInput(f"--features {recipe.image.features!r}: expected pooled, grid or pooled+grid")
    text_family.check(recipe.text)
    image = recipe.image
    # stage two (a cache root, nothing downloaded): the Choice made without importing torchvision where it is
    # certain (families.known_image), kept below only if the cache has its entry
    known = known_image(image.encoder, image.weights, image.size) if root and not allow_download else None
    # a weights file is read and checked first, before the dataset is read or any fallback warning printed
    weights_file = image.weights not in ("auto", "pretrained", "random")
    image_choice = known or (resolve_image(image.encoder, image.weights, image.size) if weights_file else None)
    if samples is None:
        samples = load_samples(recipe.dataset, root=root)
    paths = dict(zip(samples.column("image_id").to_pylist(), samples.column("image_path").to_pylist()))
    image_ids = sorted(paths)
    texts = sorted(set(samples.column("question").to_pylist()), key=lambda t: (len(t), t))
    resolve = partial(resolve_image, image.encoder, image.weights, image.size, allow_download=allow_download)
    image_choice = image_choice or resolve()
    spec = image_spec(recipe, image_choice, image_ids)
    if known is not None and root is not None and not Entry(root, entry_key("image", spec)).exists():
        image_choice = resolve()  # no such entry: resolved as stage one would (an unknown name is BadInput there)
        spec = image_spec(recipe, image_choice, image_ids)
    text_choice = text_family.resolve(recipe.text, allow_download=allow_download)
    words = training_words(samples) if recipe.text.ids and text_choice.kind == "bow" else None
    return Plan(
        recipe,
        samples,
        image_ids,
        [paths[i] for i in image_ids],
        texts,
        image_choice,
        text_choice,
        spec,
        question_spec(text_choice, texts, words),
        words,
    )


def image_spec(recipe: ExtractRecipe, choice: Choice, image_ids: list[str]) -> dict:
    """What shapes the image features: the dataset's images, the encoder as resolved (a fallback names its
    own architecture), its weights and preprocessing (`choice.key()`: a torchvision CNN's are what they always
    were), the outputs."""
    return {
        "dataset": data.image_identity(recipe.dataset),
        "images": fingerprint(image_ids),
        **choice.key(),
        "exif": "transpose",
        "outputs": list(OUTPUTS[recipe.image.features]),
        "dtype": "float16",
    }


def training_words(samples: pa.Table) -> list[str]:
    """The word vocabulary of bag-of-words ids: the words of the training split's questions."""
    train, _ = data.train_val_splits(samples)
    keep = [s == train for s in samples.column("split").to_pylist()]
    return word_vocabulary(sorted(set(samples.filter(pa.array(keep)).column("question").to_pylist())))


def question_spec(choice: Choice, texts: list[str], words: list[str] | None = None) -> dict:
    """What shapes the question features: the texts, and the text encoder with its settings (`choice.key()`,
    text_family.with_settings). Bag-of-words ids add the fingerprint of their word vocabulary and its size
    (the rows a learned embedding needs: + the unknown word)."""
    spec = {"questions": fingerprint(texts), **choice.key(), "dtype": "float16"}
    if words is not None:
        spec.update(words=fingerprint(words), vocab_size=len(words) + 1)
    return spec
