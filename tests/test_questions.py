"""Question encoders: any Hugging Face text model (a decoder-only GPT-2, a CLIP text tower named like its image
tower), question token ids (a tokenizer's, or bag-of-words word ids), the heads that learn on them (lstm,
butd), embeddings from the text model, and the image standardization of the heads. Tiny models are built
in conftest.py."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import FAST, run_cli

LIMIT = ["--limit", 120]


def question_entry(cache, key=None) -> tuple[dict, pq.Table]:
    """(manifest, first shard) of the cache's question entry (the one named `key`, or the only one)."""
    entries = [d for d in (cache / "question").iterdir() if key is None or d.name == key]
    assert len(entries) == 1, entries
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    return manifest, pq.read_table(entries[0] / manifest["shards"][0]["file"])


def question_key(out: str) -> str:
    return out.split("questions ")[-1].split()[0]


@pytest.fixture(scope="module")
def gpt2_cache(tmp_path_factory, tiny_gpt2_dir):
    """easy-VQA (120 questions per split), ResNet18 random at 32 px, GPT-2 with token states and ids."""
    root = tmp_path_factory.mktemp("gpt2")
    run_cli(
        "--cache-dir",
        root,
        "extract",
        *LIMIT,
        *FAST,
        "--text-encoder",
        tiny_gpt2_dir,
        "--set",
        "text.tokens=true",
        "--set",
        "text.ids=true",
    )
    return root


def gpt2_args(tiny_gpt2_dir):
    return [
        *LIMIT,
        *FAST,
        "--text-encoder",
        tiny_gpt2_dir,
        "--set",
        "features.text.tokens=true",
        "--set",
        "features.text.ids=true",
    ]


def test_gpt2_pools_its_last_real_token_and_trains(cli, gpt2_cache, tiny_gpt2_dir, tmp_path):
    """A GPT-2 directory (no pad token) as --text-encoder: pooled is the state of each question's last real
    token, padded batches or not; token states and ids are stored; a head trains on it."""
    from transformers import AutoTokenizer, GPT2Model

    manifest, shard = question_entry(gpt2_cache)
    spec = manifest["spec"]
    assert spec["pooling"] == "last" and spec["tokens"] and spec["ids"] and spec["vocab_size"] == 300
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_gpt2_dir), GPT2Model.from_pretrained(tiny_gpt2_dir).eval()
    texts = shard.column("question").to_pylist()
    for row in (0, len(texts) - 1):  # the shortest text (padded in its batch) and the longest
        ids = tokenizer(texts[row])["input_ids"]
        with torch.no_grad():
            states = model(torch.tensor([ids])).last_hidden_state[0]
        got = np.asarray(shard.column("embedding")[row].as_py(), dtype=np.float32)
        np.testing.assert_allclose(got, states[-1].numpy(), rtol=1e-2, atol=1e-2)
        assert shard.column("ids")[row].as_py()[: len(ids)] == ids and shard.column("length")[row].as_py() == len(ids)
        assert set(shard.column("ids")[row].as_py()[len(ids) :]) <= {0}
    r = cli("--cache-dir", gpt2_cache, "train", *gpt2_args(tiny_gpt2_dir), "--epochs", 1, "--out", tmp_path / "run")
    assert r.code == 0 and "unexpected" not in r.err, r


def test_embeddings_start_from_the_text_models_input_embeddings(gpt2_cache, tiny_gpt2_dir):
    """head.init_embeddings: the lstm head's embedding rows 1.. are GPT-2's token embeddings (row 0: padding),
    its width theirs."""
    from transformers import GPT2Model

    from vqa_cache import recipes
    from vqa_cache.training.cached import build_head
    from vqa_cache.training.features import load_features
    from vqa_cache.training.splits import build_splits

    data = {
        "features": {
            "dataset": {"limit": 120},
            "image": {"encoder": "resnet18", "size": 32, "weights": "random"},
            "text": {"encoder": str(tiny_gpt2_dir), "tokens": True, "ids": True},
        },
        "head": {"name": "lstm", "init_embeddings": True},
    }
    recipe = recipes.build(recipes.TrainRecipe, data)
    features = load_features(recipe, gpt2_cache, "x")
    splits, vocab, _, _ = build_splits(features.plan, features.tensors, recipe)
    head, config = build_head(recipe, features, len(vocab), splits["train"])
    wte = GPT2Model.from_pretrained(tiny_gpt2_dir).get_input_embeddings().weight
    assert config["question_dim"] == 301 and config["embed"] == 32
    assert torch.equal(head.question.embedding.weight[1:], wte) and not head.question.embedding.weight[0].any()


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_clip_text_tower_by_the_image_towers_id(cli, tmp_path, tiny_clip_dir, tiny_gpt2_dir):
    """--text-encoder hf:DIR of a CLIP checkpoint runs its text tower, pooled like CLIP (its end-of-text
    token); token states too; the GPT-2 entries of the same texts (last or mean pooled) have other keys;
    coattention trains on CLIP's grid and token states."""
    from transformers import AutoTokenizer, CLIPModel

    cache = tmp_path / "cache"
    clip = ["--image-encoder", f"hf:{tiny_clip_dir}", "--features", "grid", "--text-encoder", f"hf:{tiny_clip_dir}"]
    r = cli("--cache-dir", cache, "extract", *LIMIT, *clip, "--set", "text.tokens=true")
    assert r.code == 0, r
    manifest, shard = question_entry(cache, question_key(r.out))
    assert manifest["spec"]["encoder"] == str(tiny_clip_dir) and manifest["spec"]["pooling"] == "last"
    assert manifest["dim"] == 32 and "tokens" in shard.column_names
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_clip_dir), CLIPModel.from_pretrained(tiny_clip_dir).eval()
    text = shard.column("question")[0].as_py()
    with torch.no_grad():
        expected = model.text_model(**tokenizer([text], return_tensors="pt")).pooler_output[0]
    got = np.asarray(shard.column("embedding")[0].as_py(), dtype=np.float32)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-2, atol=1e-2)
    keys = {question_key(r.out)}
    for pooling in ("auto", "mean"):
        g = cli(
            "--cache-dir",
            cache,
            "extract",
            *LIMIT,
            *FAST,
            "--text-encoder",
            tiny_gpt2_dir,
            "--set",
            f"text.pooling={pooling}",
        )
        assert g.code == 0, g
        keys.add(question_key(g.out))
    assert len(keys) == 3
    t = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *clip,
        "--set",
        "features.text.tokens=true",
        "--head",
        "coattention",
        "--epochs",
        1,
        "--out",
        tmp_path / "co",
    )
    assert t.code == 0, t


@pytest.fixture(scope="module")
def words_cache(tmp_path_factory):
    """easy-VQA (300 questions per split), ResNet18 random at 32 px, pooled + grid; bag-of-words with word ids."""
    root = tmp_path_factory.mktemp("words")
    run_cli(
        "--cache-dir", root, "extract", "--limit", 300, *FAST, "--features", "pooled+grid", "--set", "text.ids=true"
    )
    return root


WORDS = ["--limit", 300, *FAST, "--features", "pooled+grid", "--set", "features.text.ids=true"]


def test_word_ids_come_from_the_training_questions(words_cache):
    """Bag-of-words ids number the words of the training split's questions (most frequent first); a word seen
    only in validation questions is 0, the unknown word."""
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.encoders.text import word_vocabulary, words_of
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    plan = make_plan(
        ExtractRecipe(
            DatasetSettings(limit=300),
            ImageSettings(encoder="resnet18", weights="random", size=32, features="pooled+grid"),
            TextSettings(weights="random", ids=True),
        )
    )
    rows = plan.samples.to_pylist()
    train = sorted({r["question"] for r in rows if r["split"] == "train"})
    assert plan.words == word_vocabulary(train) and plan.question_spec["vocab_size"] == len(plan.words) + 1
    manifest, shard = question_entry(words_cache)
    assert manifest["spec"]["words"] == plan.question_spec["words"]
    index = {w: i + 1 for i, w in enumerate(plan.words)}
    for text, ids, length in zip(*(shard.column(c).to_pylist() for c in ("question", "ids", "length"))):
        words = words_of(text)
        assert length == len(words) and ids[:length] == [index.get(w, 0) for w in words] and not any(ids[length:])


@pytest.mark.parametrize("head", ["lstm", "butd"])
def test_learned_question_heads_on_word_ids_train_predict_and_answer(cli, words_cache, tmp_path, head):
    import easy_vqa

    run = tmp_path / head
    r = cli("--cache-dir", words_cache, "train", *WORDS, "--head", head, "--epochs", 2, "--lr", 3e-3, "--out", run)
    assert r.code == 0, r
    config = json.loads((run / "config.json").read_text())
    assert config["head"]["question_dim"] == len(config["words"]) + 2 and config["head"]["layers"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    r = cli("--cache-dir", words_cache, "predict", "--run", run, "--out", tmp_path / "p.json")
    assert r.code == 0 and f"accuracy {metrics['best']['val_accuracy']:.4f}" in r.out, r
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads((run / "predictions.json").read_text())
    r = cli("ask", "--run", run, "--image", easy_vqa.get_test_image_paths()[0], "--question", "Is there a zebra here?")
    assert r.code == 0 and len(r.out.strip().splitlines()) == 5, r


def test_image_statistics_are_the_training_images_and_kept_in_the_checkpoint(cli, words_cache, tmp_path):
    """head.standardize=true: the head's mean and std are those of the training split's images (each once),
    the same read whole or streamed from the shards, and best.pt holds them; the default is LayerNorm."""
    from vqa_cache import recipes
    from vqa_cache.cache.reader import ImageStream
    from vqa_cache.training.features import load_features
    from vqa_cache.training.splits import build_splits
    from vqa_cache.training.statistics import image_statistics

    run = tmp_path / "std"
    r = cli("--cache-dir", words_cache, "train", *WORDS, "--epochs", 1, "--set", "head.standardize=true", "--out", run)
    assert r.code == 0, r
    config = json.loads((run / "config.json").read_text())
    recipe = recipes.build(recipes.TrainRecipe, config["recipe"])
    features = load_features(recipe, words_cache, "x")
    splits, _, _, _ = build_splits(features.plan, features.tensors, recipe)
    image = features.tensors["image"][1].numpy().astype(np.float64)
    train_images = image[np.unique(splits["train"].img_row.numpy())]
    mean, std = image_statistics(features.tensors["image"][1], splits["train"].img_row)
    np.testing.assert_allclose(mean.numpy(), train_images.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), train_images.std(0), rtol=1e-4, atol=1e-6)
    streamed = load_features(recipe, words_cache, "x", stream=True).tensors["image"][1]
    assert isinstance(streamed, ImageStream)
    for a, b in zip(image_statistics(streamed, splits["train"].img_row), (mean, std)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    state = torch.load(run / "best.pt", weights_only=True)["model"]
    assert config["head"]["standardize"] is True
    assert torch.equal(state["norm_i.mean"], mean)
    floor = float(std.median()) * 1e-2
    assert torch.equal(state["norm_i.std"], std.clamp(min=floor))
    r = cli("--cache-dir", words_cache, "train", *WORDS, "--epochs", 1, "--out", tmp_path / "ln")
    assert r.code == 0, r
    assert json.loads((tmp_path / "ln" / "config.json").read_text())["head"]["standardize"] is False
    assert "norm_i.weight" in torch.load(tmp_path / "ln" / "best.pt", weights_only=True)["model"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--head", "lstm", "--set", "features.text.ids=false"],
            "head 'lstm' needs question token ids (this cache has no ids): extract with --set text.ids=true",
        ),
        (
            ["--head", "lstm", "--set", "head.init_embeddings=true"],
            "head.init_embeddings: bag-of-words has no embedding",
        ),
        (["--head", "concat", "--set", "head.layers=2"], "head.layers = 2: head 'concat' has no layers to set"),
        (
            ["--head", "concat", "--set", "head.init_embeddings=true"],
            "head.init_embeddings: head 'concat' reads no token ids",
        ),
    ],
)
def test_bad_head_settings(cli, words_cache, tmp_path, args, message):
    if "features.text.ids=false" in args:
        run_cli("--cache-dir", words_cache, "extract", "--limit", 300, *FAST, "--features", "pooled+grid")
    r = cli("--cache-dir", words_cache, "train", *WORDS, *args, "--epochs", 1, "--out", tmp_path / "x")
    assert r.code == 2, r
    assert message in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_question_shard_check_refuses_ids_past_a_length_or_the_vocabulary(tmp_path):
    from vqa_cache.cache.shards import check_question_shard, write_question_shard

    pooled = np.zeros((2, 4), np.float32)

    def shard(ids, length):
        path = tmp_path / "q.parquet"
        write_question_shard(path, ["a b", "c"], {"pooled": pooled, "ids": np.array(ids), "length": np.array(length)})
        return path

    assert check_question_shard(shard([[3, 1, 0], [2, 0, 0]], [2, 1]), False, ids=True, vocab_size=4) == ["a b", "c"]
    for ids, length in (
        ([[3, 1, 0], [2, 5, 0]], [2, 1]),  # an id after its question's length
        ([[4, 1, 0], [2, 0, 0]], [2, 1]),  # an id outside the vocabulary of 4
        ([[3, 1, 0], [2, 0, 0]], [2, 4]),
    ):  # a length beyond the row
        with pytest.raises(ValueError, match="not token ids below 4"):
            check_question_shard(shard(ids, length), False, ids=True, vocab_size=4)


def test_the_vocabulary_size_in_the_key_is_the_tokenizers_without_loading_it(
    tiny_gpt2_dir, tiny_bert_dir, minilm_dir, tiny_clip_dir, tmp_path
):
    """The question key's vocab_size (token ids) is len(tokenizer); stage two reads it from tokenizer.json
    (text_family.vocab_size) instead of loading the tokenizer: the two agree on every kind of tokenizer here,
    and a directory without tokenizer.json loads the tokenizer."""
    import shutil
    from pathlib import Path

    from vqa_cache.encoders.text import load_tokenizer
    from vqa_cache.encoders.text_family import vocab_size

    for d in (tiny_gpt2_dir, tiny_bert_dir, minilm_dir, tiny_clip_dir):
        assert vocab_size(Path(d)) == len(load_tokenizer(d)), d
    slow = tmp_path / "no-tokenizer-json"
    shutil.copytree(minilm_dir, slow)
    (slow / "tokenizer.json").unlink()
    assert vocab_size(slow) == len(load_tokenizer(minilm_dir))


def test_question_shards_keep_feature_lists_plain_and_read_back_exactly(tmp_path):
    """The feature columns are written without dictionary encoding (it decoded float16 lists at a third of the
    speed), the text column with it; what read_question_shard gives back is exactly what was written, also
    from a shard written the old way (dictionary encoding throughout)."""
    from vqa_cache.cache.shards import read_question_shard, write_question_shard

    rng = np.random.default_rng(0)
    pooled = np.where(rng.random((300, 16)) < 0.5, rng.normal(size=(300, 16)), 0).astype(np.float16)
    texts = [f"q {i}" for i in range(300)]
    path = tmp_path / "q.parquet"
    write_question_shard(path, texts, {"pooled": pooled})
    meta = pq.ParquetFile(path).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema.split(".")[0]: meta.column(i) for i in range(meta.num_columns)}
    assert not columns["embedding"].has_dictionary_page and columns["question"].has_dictionary_page
    assert columns["embedding"].compression == "ZSTD"
    old = tmp_path / "old.parquet"  # as shards were written before: snappy, dictionary encoding throughout
    pq.write_table(pq.read_table(path), old, use_dictionary=True, compression="snappy")
    assert pq.ParquetFile(old).metadata.row_group(0).column(1).has_dictionary_page
    for p in (path, old):
        got_texts, got = read_question_shard(p)
        assert got_texts == texts and got.dtype == np.float16 and np.array_equal(got, pooled)


def sparse_rows(rng, rows: int, width: int) -> np.ndarray:
    """Bag-of-words-like float16 rows: a few non-zeros each, an empty row, and a -0.0."""
    pooled = np.where(rng.random((rows, width)) < 0.1, rng.integers(1, 4, (rows, width)), 0).astype(np.float16)
    pooled[3] = 0
    pooled[5, 2] = -0.0
    return pooled


def test_mostly_zero_features_are_stored_sparse_and_read_back_exactly(tmp_path):
    """Under a quarter non-zero: the shard holds embedding_index / embedding_value lists (plain pyarrow reads
    them; the width in the schema metadata) and no dense column; read densely, it gives back exactly the rows
    written (-0.0 as 0.0); read sparse, the same rows as CSR. Damaged lists are refused."""
    import pyarrow as pa

    from vqa_cache.cache.shards import (
        CSR,
        check_question_shard,
        read_question_embedding,
        read_question_shard,
        write_question_shard,
    )

    pooled = sparse_rows(np.random.default_rng(1), 200, 64)
    texts = [f"q {i}" for i in range(200)]
    path = tmp_path / "q.parquet"
    write_question_shard(path, texts, {"pooled": pooled})
    table = pq.read_table(path)
    assert table.column_names == ["question", "embedding_index", "embedding_value"]
    assert table.schema.metadata[b"embedding_width"] == b"64"
    row = table.slice(7, 1).to_pylist()[0]  # (plain pyarrow: a row's positions and values)
    assert row["embedding_index"] == list(np.flatnonzero(pooled[7])) and row["embedding_value"] == list(
        pooled[7][pooled[7] != 0]
    )
    got_texts, got = read_question_shard(path)
    assert got_texts == texts and got.dtype == np.float16 and np.array_equal(got, pooled)
    _, rows = read_question_embedding(path)
    assert isinstance(rows, CSR) and rows.width == 64 and np.array_equal(rows.dense(), pooled)
    assert check_question_shard(path, False) == texts
    index = table.column("embedding_index").combine_chunks()
    shifted = pa.ListArray.from_arrays(index.offsets, pa.array(index.flatten().to_numpy() + 60))  # past the width
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(1, "embedding_index", shifted), bad)
    with pytest.raises(ValueError, match="positions below 64"):
        read_question_shard(bad)
    with pytest.raises(ValueError, match="positions below 64"):
        check_question_shard(bad, False)
    for rows in (np.zeros((3, 8), np.float16), np.zeros((0, 8), np.float16)):  # no non-zero at all; no rows
        write_question_shard(path, [str(i) for i in range(len(rows))], {"pooled": rows})
        assert read_question_shard(path)[1].shape == rows.shape and not read_question_shard(path)[1].any()


def test_a_bag_of_words_cache_is_sparse_on_disk_and_trains_like_a_dense_one(cli, tmp_path):
    """A bag-of-words extract writes sparse shards; the same shards rewritten dense (as caches were before)
    give stage two the same question rows, and the same first epoch."""
    import pyarrow as pa

    from vqa_cache import options
    from vqa_cache.cache.shards import fixed_list, read_question_shard, write_table
    from vqa_cache.training.features import load_features

    cache = tmp_path / "cache"
    args = ["--limit", 200, *FAST, "--text-encoder", "bow"]
    assert cli("--cache-dir", cache, "extract", *args, "--workers", 0).code == 0
    shards = sorted(cache.glob("question/*/question-*.parquet"))
    assert shards and all("embedding_index" in pq.read_schema(p).names for p in shards)
    recipe = options.train_recipe(
        None, {"limit": 200, "image_encoder": "resnet18", "weights": "random", "image_size": 32, "text_encoder": "bow"}
    )[0]
    sparse = load_features(recipe, cache, "x").tensors["question"][1]
    runs = {}
    assert cli("--cache-dir", cache, "train", *args, "--epochs", 1, "--out", tmp_path / "sparse").code == 0
    manifest_path = shards[0].parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for record in manifest["shards"]:  # rewritten as dense shards (sizes and checksums in the manifest too)
        p = shards[0].parent / record["file"]
        texts, dense = read_question_shard(p)
        table = pa.table({"question": pa.array(texts, pa.string()), "embedding": fixed_list(dense, np.float16)})
        record["sha256"] = write_table(p, table)
        record["bytes"] = p.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    assert not any("embedding_index" in pq.read_schema(p).names for p in shards)
    dense = load_features(recipe, cache, "x").tensors["question"][1]
    idx = torch.arange(len(sparse))
    assert torch.equal(sparse[idx], dense[idx])
    assert cli("--cache-dir", cache, "train", *args, "--epochs", 1, "--out", tmp_path / "dense").code == 0
    for name in ("sparse", "dense"):
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())["epochs"][0]
    assert runs["sparse"]["val_accuracy"] == runs["dense"]["val_accuracy"]
    assert runs["sparse"]["train_loss"] == runs["dense"]["train_loss"]
