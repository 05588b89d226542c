"""Stage two's memory: features stay float16 until the batch (the batch equals a float32 copy's), and the
memory budget counts image and question features and the answer targets."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, run_cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", "--limit", 300, *FAST, "--workers", 0, "--threads", 1)
    from vqa_cache.options import train_recipe

    recipe, cmd = train_recipe(
        None, {"limit": 300, "image_encoder": "resnet18", "image_size": 32, "weights": "random", "text_encoder": "bow"}
    )
    return root, recipe, cmd


def test_features_are_float16_in_memory_and_batches_float32_equal_to_a_float32_copy(small):
    from vqa_cache.cache import Entry
    from vqa_cache.cache.reader import SparseRows, read_features
    from vqa_cache.training.batches import batches
    from vqa_cache.training.features import load_features
    from vqa_cache.training.splits import build_splits

    root, recipe, cmd = small
    features = load_features(recipe, root, cmd, stream=False)
    image, question = features.tensors["image"][1], features.tensors["question"][1]
    assert image.dtype == torch.float16 and question.dtype == torch.float16
    # bag-of-words vectors are mostly zeros: held as sparse rows, a fraction of the dense float16 bytes
    assert isinstance(question, SparseRows) and question.nbytes * 10 < question.shape[0] * question.shape[1] * 2
    plan = features.plan
    full = {
        kind: torch.from_numpy(read_features(Entry(root, key), Entry(root, key).manifest(), "pooled")[1])
        for kind, key in (("image", plan.image_key), ("question", plan.question_key))
    }
    assert full["image"].dtype == torch.float32
    splits, _, _, _ = build_splits(plan, features.tensors, recipe, root)
    val = splits["val"]
    rows = torch.arange(len(val))
    for (_, img, q), (_, img32, q32) in zip(
        batches(val, image, question, rows, 64), batches(val, full["image"], full["question"], rows, 64)
    ):
        assert img.dtype == torch.float32 and q.dtype == torch.float32
        assert torch.equal(img, img32) and torch.equal(q, q32)


def test_the_budget_counts_images_questions_and_targets(small, monkeypatch):
    from vqa_cache.cache import Entry
    from vqa_cache.cache.reader import ImageStream
    from vqa_cache.training import features as f

    root, recipe, cmd = small
    plan = f.make_plan(recipe.features, allow_download=False, root=root)
    image_manifest = Entry(root, plan.image_key).manifest()
    images = ImageStream(Entry(root, plan.image_key), image_manifest, f.IMAGE_DATASETS["pooled"])
    held = f.load_features(recipe, root, cmd, stream=True).tensors["question"][1]
    questions = held.nbytes  # as they are held: sparse rows of bag-of-words vectors, a fraction of dense float16
    targets = f.target_bytes(plan)
    manifest = Entry(root, plan.question_key).manifest()
    assert 0 < questions < manifest["rows"] * manifest["dim"] * 2 and targets > plan.samples.num_rows * 12
    need = images.nbytes(2) + questions + targets
    monkeypatch.setenv("VQA_CACHE_MEMORY_BUDGET", str(need - 1))
    assert isinstance(f.load_features(recipe, root, cmd).tensors["image"][1], ImageStream)
    monkeypatch.setenv("VQA_CACHE_MEMORY_BUDGET", str(need))
    assert isinstance(f.load_features(recipe, root, cmd).tensors["image"][1], torch.Tensor)
    # the questions alone over the budget: the images are streamed (the questions fit nowhere else)
    monkeypatch.setenv("VQA_CACHE_MEMORY_BUDGET", str(max(1, questions - 1)))
    assert isinstance(f.load_features(recipe, root, cmd).tensors["image"][1], ImageStream)


def test_sparse_rows_give_exactly_the_dense_rows():
    import numpy as np

    from vqa_cache.cache.reader import SparseRows

    rng = np.random.default_rng(0)
    dense = np.where(rng.random((50, 40)) < 0.1, rng.normal(size=(50, 40)), 0).astype(np.float16)
    dense[7] = 0  # a row with no values
    dense[3, 5] = -0.0
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=50))])
    sparse = SparseRows(indptr, cols.astype(np.int32), dense[rows, cols], 40)
    assert sparse.shape == (50, 40) and len(sparse) == 50 and sparse.dtype == torch.float16
    for idx in (torch.arange(50), torch.tensor([7, 7, 0, 49, 3]), torch.tensor([], dtype=torch.long)):
        got = sparse[idx]
        assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(dense).float()[idx])
