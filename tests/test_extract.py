"""Stage one on small data: the on-disk format, encode-once, weights policy, keys."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import FAST


def entries(root):
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/*/manifest.json")}


def test_extract_writes_documented_format(cli, tmp_path):
    r = cli("--cache-dir", tmp_path, "extract", "--dataset", "easyvqa", "--limit", 30, *FAST)
    assert r.code == 0, r
    found = entries(tmp_path)
    image = next(m for m in found.values() if m["kind"] == "image")
    question = next(m for m in found.values() if m["kind"] == "question")
    assert image["complete"] and question["complete"]

    # read with plain h5py / pyarrow: every unique image and question text exactly once
    img_dir = tmp_path / "image" / image["key"]
    ids = []
    for shard in image["shards"]:
        with h5py.File(img_dir / shard["file"]) as f:
            assert f["features"].dtype == np.float16 and f["features"].shape == (shard["rows"], 512)
            assert np.isfinite(f["features"][:]).all()
            ids += [s.decode() for s in f["ids"][:]]
    index = pq.read_table(img_dir / "index.parquet").to_pydict()
    assert sorted(ids) == sorted(index["image_id"]) and len(set(ids)) == len(ids) == image["rows"]
    q_dir = tmp_path / "question" / question["key"]
    texts = []
    for shard in question["shards"]:
        t = pq.read_table(q_dir / shard["file"])
        texts += t.column("question").to_pylist()
        # bag-of-words vectors, mostly zeros: stored sparse (docs/cache-format.md)
        assert t.schema.metadata[b"embedding_width"] == b"1024"
        index, value = t.schema.field("embedding_index").type, t.schema.field("embedding_value").type
        assert index == pa.list_(pa.int32()) and value == pa.list_(pa.float16())
        assert all(0 <= i < 1024 for row in t.column("embedding_index").to_pylist() for i in row)
    assert len(texts) == len(set(texts)) == question["rows"]

    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    samples = load_samples(DatasetSettings(limit=30))
    assert set(ids) == set(samples.column("image_id").to_pylist())
    assert set(texts) == set(samples.column("question").to_pylist())
    assert image["spec"]["weights"] == "random:0" and question["spec"]["weights"] == "bow:v1"


def test_rerun_reuses_the_cache(cli, tmp_path):
    assert cli("--cache-dir", tmp_path, "extract", "--limit", 10, *FAST).code == 0
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 10, *FAST)
    assert r.code == 0 and "images: cached" in r.out and "questions: cached" in r.out
    assert before == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_weights_file_loads_real_weights(cli, tmp_path, resnet18_file):
    """--weights PATH goes through torch.load(weights_only=True) and the features are that model's."""
    r = cli(
        "--cache-dir",
        tmp_path,
        "extract",
        "--limit",
        4,
        "--image-encoder",
        "resnet18",
        "--image-size",
        "32",
        "--weights",
        resnet18_file,
        "--text-encoder",
        "bow",
    )
    assert r.code == 0, r
    image = next(m for m in entries(tmp_path).values() if m["kind"] == "image")
    from vqa_cache.digest import sha256_file

    assert image["spec"]["weights"] == f"sha256:{sha256_file(resnet18_file)}"

    import torchvision
    from PIL import Image

    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    samples = load_samples(DatasetSettings(limit=4))
    first = dict(zip(samples.column("image_id").to_pylist(), samples.column("image_path").to_pylist()))
    with h5py.File(tmp_path / "image" / image["key"] / image["shards"][0]["file"]) as f:
        image_id, feats = f["ids"][0].decode(), f["features"][0]
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(torch.load(resnet18_file, weights_only=True))
    model.fc = torch.nn.Identity()
    model.eval()
    im = Image.open(first[image_id]).convert("RGB").resize((32, 32), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        expected = model(x)[0].numpy()
    np.testing.assert_allclose(feats.astype(np.float32), expected, rtol=2e-2, atol=2e-2)
    # a different weights file is a different cache entry
    r = cli(
        "--cache-dir",
        tmp_path,
        "extract",
        "--limit",
        4,
        "--image-encoder",
        "resnet18",
        "--image-size",
        "32",
        "--weights",
        "random",
        "--text-encoder",
        "bow",
    )
    assert len([m for m in entries(tmp_path).values() if m["kind"] == "image"]) == 2


def test_tiny_bert_directory_is_loaded_with_from_pretrained(cli, tmp_path, tiny_bert_dir):
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 6, *FAST[:4], "--text-encoder", tiny_bert_dir)
    assert r.code == 0, r
    q = next(m for m in entries(tmp_path).values() if m["kind"] == "question")
    assert q["spec"]["weights"].startswith("dir:") and q["dim"] == 32
    t = pq.read_table(tmp_path / "question" / q["key"] / q["shards"][0]["file"])
    text = t.column("question")[0].as_py()
    got = np.asarray(t.column("embedding")[0].as_py(), dtype=np.float32)

    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(tiny_bert_dir), AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        states = model(**tok([text], return_tensors="pt")).last_hidden_state[0]
    np.testing.assert_allclose(got, states.mean(0).numpy(), rtol=1e-2, atol=1e-2)


def test_real_pretrained_minilm(cli, tmp_path, minilm_dir):
    """The real all-MiniLM-L6-v2: paraphrases land closer than unrelated questions."""
    from vqa_cache.encoders.text import HFEncoder
    from vqa_cache.encoders.text_family import resolve_text

    choice = resolve_text(str(minilm_dir), "auto")
    enc = HFEncoder(choice, pooling="mean")
    v = enc.encode(["what color is the shape?", "which colour does the shape have?", "is there a triangle?"])["pooled"]
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 5, *FAST[:4], "--text-encoder", minilm_dir)
    assert r.code == 0, r


def test_keys_change_with_what_shapes_the_bytes():
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    base = ExtractRecipe(
        DatasetSettings(limit=5),
        ImageSettings(encoder="resnet18", weights="random", size=32),
        TextSettings(encoder="bow"),
    )
    p0 = make_plan(base)
    for changed in (
        ExtractRecipe(DatasetSettings(limit=30), base.image, base.text),  # more images
        ExtractRecipe(base.dataset, ImageSettings(encoder="resnet18", weights="random", size=48), base.text),
        ExtractRecipe(base.dataset, ImageSettings(encoder="resnet34", weights="random", size=32), base.text),
        ExtractRecipe(
            base.dataset, ImageSettings(encoder="resnet18", weights="random", size=32, features="grid"), base.text
        ),
    ):
        assert make_plan(changed).image_key != p0.image_key
    assert make_plan(ExtractRecipe(DatasetSettings(limit=6), base.image, base.text)).question_key != p0.question_key
    assert make_plan(base).image_key == p0.image_key


def test_auto_falls_back_loudly_and_fast(capsys, monkeypatch):
    """The last resort of `auto` (no packaged model installed either: test_pretrained.py has the chain)."""
    import time

    from vqa_cache.encoders import families, text_family

    monkeypatch.setattr(families, "IMAGE_FALLBACKS", ())
    monkeypatch.setattr(text_family, "TEXT_FALLBACKS", ())
    t = time.time()
    img, txt = families.resolve_image("resnet50", "auto", 64), text_family.resolve_text("tinybert", "auto")
    assert time.time() - t < 10
    err = capsys.readouterr().err
    assert img.identity == "random:0" and txt.identity == "bow:v1"
    assert "RANDOM-INIT" in err and "BAG-OF-WORDS" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "/nonexistent.pt"], "no such file"),
        (["--weights", "pretrained", "--image-encoder", "resnet18"], "cannot be downloaded"),
        (["--image-encoder", "nosuchnet"], "unknown image encoder"),
        (["--dataset", "nosuchkind:/x"], "unknown dataset kind"),
        (["--set", "image.sise=3"], "unknown recipe key"),
        (["--set", "image.size=big"], "must be int"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, tmp_path, args, message):
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 3, *args)
    assert r.code == 2, r
    assert message in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
