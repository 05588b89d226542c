"""Stage one's text batches (extraction/questions.py length_batches): a Hugging Face model's texts in order
of token length, batches up to a token budget, rows written back in the plan's order; each row equals the
text encoded alone (to float16)."""

from __future__ import annotations

import numpy as np
from conftest import FAST, run_cli


class Tok:
    def __call__(self, texts, truncation=True, max_length=8):
        return {"input_ids": [list(range(min(len(t.split()), max_length))) for t in texts]}


class Fake:
    tokenizer, tokens, ids, max_length = Tok(), False, False, 8


def test_length_batches_sort_by_tokens_and_fill_a_token_budget():
    from vqa_cache.extraction.questions import length_batches

    texts = ["a b c d e f g h i j", "a", "a b", "a b c", "a"] * 6
    order, cuts = length_batches(Fake(), texts, batch_size=4)
    lengths = np.array([min(len(t.split()), 8) for t in texts])
    assert sorted(order.tolist()) == list(range(len(texts)))
    assert list(lengths[order]) == sorted(lengths)  # by token length, stably
    assert cuts[0] == 0 and cuts[-1] == len(texts)
    for b0, b1 in zip(cuts, cuts[1:]):
        assert 0 < b1 - b0 <= 16 and (b1 - b0) * lengths[order[b1 - 1]] <= 4 * 8
    assert max(b - a for a, b in zip(cuts, cuts[1:])) > 4  # short texts in larger batches
    fixed = Fake()
    fixed.tokens = True  # fixed-width columns: as they are
    order, cuts = length_batches(fixed, texts, batch_size=4)
    assert order.tolist() == list(range(len(texts))) and cuts == list(range(0, 30, 4)) + [30]


def test_rows_are_the_texts_encoded_alone_in_the_plans_order(tmp_path, tiny_bert_dir):
    import torch

    from vqa_cache.cache import Entry
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.cache.reader import read_features
    from vqa_cache.extraction.questions import build_text_encoder
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    run_cli(
        "--cache-dir",
        tmp_path,
        "extract",
        "--limit",
        300,
        *FAST[:6],
        "--text-encoder",
        tiny_bert_dir,
        "--set",
        "text.batch_size=8",
        "--workers",
        0,
    )
    recipe = ExtractRecipe(
        DatasetSettings(limit=300),
        ImageSettings(encoder="resnet18", weights="random", size=32),
        TextSettings(encoder=str(tiny_bert_dir), weights="auto", batch_size=8),
    )
    plan = make_plan(recipe, allow_download=False, root=tmp_path)
    entry = Entry(tmp_path, plan.question_key)
    texts, pooled = read_features(entry, entry.manifest(), "pooled")
    assert texts == plan.texts
    encoder = build_text_encoder(plan, torch.device("cpu"))
    alone = np.concatenate([encoder.encode([t])["pooled"] for t in texts]).astype(np.float16).astype(np.float32)
    assert np.allclose(pooled, alone, atol=2e-3, rtol=2e-3)
