"""Stage one: every unique image and question text through the frozen encoders, once, into the cache.

reader (DataLoader workers decode images) -> mapper (encoder forward, inference mode)
-> writer (a background thread writes shards and updates the manifest after each one).
A re-run after a crash or kill resumes after the last finished shard.
"""

from __future__ import annotations

from pathlib import Path

from .. import distributed as dist
from .. import messages
from ..cache import Entry
from ..cache.plan import Plan, make_plan
from ..cache.store import clean_stale
from ..cache.targets import cached_answer_table
from ..device import pick_device, precision_scope, resolve_precision
from ..errors import BadInput
from ..recipes import ExtractRecipe
from ..threads import describe
from .images import build_image_encoder, extract_images
from .questions import build_text_encoder, extract_questions
from .resume import ready


def extract(recipe: ExtractRecipe, root: Path, wait: bool = True) -> Plan:
    """Run stage one for a recipe; returns the plan (keys, counts)."""
    if dist.init():
        dist.quiet_others()
    if dist.is_main():
        clean_stale(root)  # lock files and staging folders of killed writers
    with dist.main_first():  # rank 0 downloads weights and parses the dataset; the others read them
        plan = make_plan(recipe, root=root)
    device = dist.device(pick_device(recipe.device).type)
    if dist.enabled():
        keys = dist.all_gather((plan.image_key, plan.question_key))
        if len(set(keys)) > 1:
            raise BadInput(
                f"the ranks resolved different cache keys {sorted(set(keys))}: give every node the same "
                f"--cache-dir, dataset and weights (e.g. --weights pretrained once they are downloaded)"
            )
    messages.info(
        f"dataset {recipe.dataset.name}: {plan.samples.num_rows} questions, {len(plan.image_ids)} images, "
        f"{len(plan.texts)} unique question texts"
    )
    image, ident = plan.image_choice, plan.text_choice.identity
    text = (
        "bag-of-words"
        if plan.text_choice.kind == "bow"
        else f"{plan.text_choice.encoder} ({ident[:20] + '...' if ident.startswith('dir:') else ident}, "
        f"{plan.question_spec['pooling']} pooling)"
    )
    precision = resolve_precision(recipe.precision, device)
    messages.info(
        f"image encoder {image.encoder} ({image.identity}), text encoder {text}, device {device}, "
        f"precision {precision}, {describe()}"
    )
    messages.info(f"  image: {image.note}; input {image.preprocess.describe()}\n  text:  {plan.text_choice.note}")
    # build (and so check) the encoders before any entry is created: bad weights leave nothing behind
    image_encoder = None if ready(Entry(root, plan.image_key)) else build_image_encoder(plan, device)
    text_encoder = None if ready(Entry(root, plan.question_key)) else build_text_encoder(plan, device)
    with precision_scope(precision):
        extract_images(plan, root, device, wait, image_encoder)
        extract_questions(plan, root, device, wait, text_encoder)
    if dist.is_main():  # the questions' ground truth and soft scores, once, for every run on this cache
        cached_answer_table(root, plan.samples.column("answers"))
    return plan
