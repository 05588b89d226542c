"""The cache engine: resume after kill -9, verify/info/rm, bad shards and manifests, the lock,
--skip-bad, --dry-run, grid and token features, and reading an entry with plain h5py/pyarrow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]


def manifests(root):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(root).glob("*/*/manifest.json")}


def entry_of(root, kind):
    return next(m for m in manifests(root).values() if m["kind"] == kind)


def image_rows(root, key, dataset="features"):
    """ids and features of an image entry, through its index and h5py only."""
    import h5py
    import pyarrow.parquet as pq

    d = Path(root) / "image" / key
    index = pq.read_table(d / "index.parquet").to_pydict()
    files = {}
    out = []
    for shard, row in zip(index["shard"], index["row"]):
        if shard not in files:
            with h5py.File(d / shard, "r") as f:
                files[shard] = f[dataset][:]
        out.append(files[shard][row])
    return index["image_id"], np.stack(out)


# ---------------------------------------------------------------- resume after kill -9


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_kill9_after_first_shard_then_resume_equals_uninterrupted(cli, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["extract", "--limit", 1000, *FAST, "--shard-size", 16, "--batch-size", 8, "--workers", 0]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vqa_cache", "--cache-dir", str(killed), *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300  # a bound for a loaded machine, not a timing
        while time.time() < deadline:
            found = [m for p in killed.glob("image/*/manifest.json") for m in [_read(p)] if m]
            if found and found[0]["shards"]:
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, "extract ended before its first shard was seen"
            time.sleep(0.005)
        else:
            pytest.fail("no shard landed within 300 s")
    finally:
        proc.kill()
        proc.wait()
    state = entry_of(killed, "image")
    assert not state["complete"] and 0 < state["shards"][-1]["stop"] < state["rows"], "kill came too late"

    r = cli("--cache-dir", killed, *args)
    assert r.code == 0, r
    assert "resuming" in r.out
    assert cli("--cache-dir", clean, *args).code == 0

    for kind in ("image", "question"):
        a, b = entry_of(killed, kind), entry_of(clean, kind)
        assert a["key"] == b["key"] and a["complete"] and b["rows"] == a["rows"]
        assert [s["rows"] for s in a["shards"]] == [s["rows"] for s in b["shards"]]
        v = cli("--cache-dir", killed, "cache", "verify", a["key"])
        assert v.code == 0 and v.out.startswith("ok "), v
        assert not [p for p in (killed / kind / a["key"]).iterdir() if ".tmp" in p.name]
    key = entry_of(clean, "image")["key"]
    ids_a, feats_a = image_rows(killed, key)
    ids_b, feats_b = image_rows(clean, key)
    assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)
    np.testing.assert_array_equal(feats_a, feats_b)


def error_lines(err: str) -> list[str]:
    """stderr without the progress bars."""
    return [
        line
        for line in err.replace("\r", "\n").splitlines()
        if line.strip() and not line.startswith(("images:", "questions:"))
    ]


def _read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- verify / info / rm / bad files


@pytest.fixture
def small(cli, tmp_path):
    """8 images in shards of 3: image-00000.h5 .. image-00002.h5."""
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 30, *FAST, "--shard-size", 3, "--workers", 0)
    assert r.code == 0, r
    return tmp_path, entry_of(tmp_path, "image"), entry_of(tmp_path, "question")


def test_flipped_byte_fails_verify_naming_the_shard(cli, small):
    root, image, question = small
    assert len(image["shards"]) == 3
    for m in (image, question):
        assert cli("--cache-dir", root, "cache", "verify", m["key"]).code == 0
    shard = root / "image" / image["key"] / "image-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    r = cli("--cache-dir", root, "cache", "verify", image["key"])
    assert r.code == 1 and "image-00001.h5" in r.err and "sha256" in r.err, r
    assert "image-00000.h5" not in r.err

    qshard = root / "question" / question["key"] / question["shards"][-1]["file"]
    data = bytearray(qshard.read_bytes())
    data[10] ^= 0xFF
    qshard.write_bytes(bytes(data))
    r = cli("--cache-dir", root, "cache", "verify", question["key"][:12])  # a key prefix works too
    assert r.code == 1 and question["shards"][-1]["file"] in r.err, r


def test_truncated_shard_is_reported_not_read(cli, small):
    root, image, _ = small
    shard = root / "image" / image["key"] / "image-00000.h5"
    shard.write_bytes(shard.read_bytes()[:1000])
    r = cli("--cache-dir", root, "cache", "verify", image["key"])
    assert r.code == 1 and "image-00000.h5" in r.err and "truncated" in r.err, r

    from vqa_cache.cache import Entry
    from vqa_cache.cache.reader import load_rows
    from vqa_cache.errors import BadInput

    entry = Entry(root, image["key"])
    with pytest.raises(BadInput, match=r"image-00000\.h5.*truncated"):
        load_rows(entry, entry.manifest(), "features")
    # stage two says so in one line, exit 2
    r = cli("--cache-dir", root, "train", "--limit", 30, *FAST, "--epochs", 1, "--out", root / "run")
    assert r.code == 2 and "truncated" in r.err and len(error_lines(r.err)) == 1, r
    # a re-run of extract notices the wrong size and encodes the entry again from that shard
    r = cli("--cache-dir", root, "extract", "--limit", 30, *FAST, "--shard-size", 3, "--workers", 0)
    assert r.code == 0 and "is damaged (image-00000.h5" in r.err, r
    assert cli("--cache-dir", root, "cache", "verify", image["key"]).code == 0


def test_manifest_of_another_format_is_refused(cli, small):
    root, image, _ = small
    path = root / "image" / image["key"] / "manifest.json"
    m = json.loads(path.read_text())
    m["format"] = 99
    path.write_text(json.dumps(m))
    for args in (
        ["cache", "verify", image["key"]],
        ["cache", "info", image["key"]],
        ["extract", "--limit", 30, *FAST, "--shard-size", 3],
        ["train", "--limit", 30, *FAST, "--epochs", 1, "--out", root / "run"],
    ):
        r = cli("--cache-dir", root, *args)
        assert r.code == 2, (args, r)
        assert "format 99" in r.err and "Traceback" not in r.err and len(error_lines(r.err)) == 1, r
    ls = cli("--cache-dir", root, "cache", "ls", "--json")
    assert ls.code == 0 and not next(e for e in json.loads(ls.out) if e["key"] == image["key"])["complete"]


def test_info_and_rm(cli, small):
    root, image, question = small
    r = cli("--cache-dir", root, "cache", "info", image["key"], "--json")
    assert r.code == 0, r
    d = json.loads(r.out)
    assert d["rows"] == 8 and d["complete"] and len(d["shards"]) == 3 and d["spec"]["encoder"] == "resnet18"
    assert d["bytes"] > 0 and d["timings"]["seconds"] > 0 and all(s["sha256"] for s in d["shards"])
    r = cli("--cache-dir", root, "cache", "info", image["key"])
    assert r.code == 0 and "image-00002.h5" in r.out and "resnet18" in r.out
    r = cli("--cache-dir", root, "cache", "rm", question["key"])
    assert r.code == 0 and "removed" in r.out
    assert not (root / "question" / question["key"]).exists()
    listed = json.loads(cli("--cache-dir", root, "cache", "ls", "--json").out)
    assert [e["key"] for e in listed if e["kind"] != "answers"] == [image["key"]]
    r = cli("--cache-dir", root, "cache", "rm", "question-0")
    assert r.code == 2 and "no cache entry" in r.err


# ---------------------------------------------------------------- the lock


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_lock_no_wait_wait_and_stale(cli, tmp_path, monkeypatch):
    from vqa_cache.cache import Entry
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    plan = make_plan(
        ExtractRecipe(
            DatasetSettings(limit=10),
            ImageSettings(encoder="resnet18", weights="random", size=32),
            TextSettings(encoder="bow", weights="random"),
        )
    )
    entry = Entry(tmp_path, plan.image_key)
    args = ["--cache-dir", tmp_path, "extract", "--limit", 10, *FAST, "--workers", 0]

    lock = entry.lock()
    with lock:
        r = cli(*args, "--no-wait")
        assert r.code == 2 and "another process" in r.err and str(os.getpid()) in r.err, r
        assert not (tmp_path / "image" / plan.image_key).exists()

    # a waiting writer goes on when the holder lets go (here: during the waiter's first pause)
    import types

    import vqa_cache.cache.store as store

    holder = entry.lock()
    holder.__enter__()

    def let_go(seconds):
        holder.__exit__(None, None, None)
        time.sleep(0.01)

    monkeypatch.setattr(store, "time", types.SimpleNamespace(sleep=let_go, strftime=time.strftime, time=time.time))
    r = cli(*args)
    assert r.code == 0 and "waiting for another writer" in r.out, r

    # the lock file of a dead writer (kill -9 leaves it behind) is taken over
    assert cli("--cache-dir", tmp_path, "cache", "rm", plan.image_key).code == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path = tmp_path / "image" / f"{plan.image_key}.lock"
    lock_path.write_text(f"{os.uname().nodename} {dead.pid}\n")
    r = cli(*args, "--no-wait")
    assert r.code == 0, r


# ---------------------------------------------------------------- bad images


@pytest.fixture
def corrupt_dataset(monkeypatch, tmp_path):
    """easy-VQA (limit 1500: ~310 images) with the 101st image (sorted id order) replaced by a corrupt file."""
    import pyarrow as pa

    import vqa_cache.cache.plan as plan
    from vqa_cache.cache.samples import load_samples as real

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)

    def load(spec, **kw):
        table = real(spec, **kw)
        ids = sorted(set(table.column("image_id").to_pylist()))
        victim = ids[100]
        paths = [
            str(bad) if i == victim else p
            for i, p in zip(table.column("image_id").to_pylist(), table.column("image_path").to_pylist())
        ]
        return table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(paths)), victim

    monkeypatch.setattr(plan, "load_samples", lambda spec, **kw: load(spec, **kw)[0])
    from vqa_cache.recipes import DatasetSettings

    _, victim = load(DatasetSettings(limit=1500))
    questions = sum(1 for i in real(DatasetSettings(limit=1500)).column("image_id").to_pylist() if i == victim)
    return bad, victim, questions


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_bad_image_stops_the_run_then_skip_bad(cli, tmp_path, corrupt_dataset):
    bad, victim, n_questions = corrupt_dataset
    root = tmp_path / "cache"
    args = [
        "--cache-dir",
        root,
        "extract",
        "--limit",
        1500,
        *FAST,
        "--shard-size",
        64,
        "--batch-size",
        32,
        "--workers",
        0,
    ]
    r = cli(*args)
    assert r.code == 2, r
    assert len(error_lines(r.err)) == 1 and str(bad) in error_lines(r.err)[0] and "Traceback" not in r.err, r
    image = entry_of(root, "image")
    assert not image["complete"] and [s["file"] for s in image["shards"]] == ["image-00000.h5"]  # kept

    r = cli(*args, "--skip-bad")
    assert r.code == 0, r
    assert "resuming" in r.out and "skipped 1 unreadable" in r.out
    image = entry_of(root, "image")
    assert image["complete"] and image["skipped"] == [victim] and image["shards"][1]["skipped"] == [victim]
    assert cli("--cache-dir", root, "cache", "verify", image["key"]).code == 0
    ids, _ = image_rows(root, image["key"])
    assert victim not in ids and len(ids) == image["rows"] - 1

    r = cli("--cache-dir", root, "train", "--limit", 1500, *FAST, "--epochs", 1, "--out", tmp_path / "run")
    assert r.code == 0, r
    assert f"dropping {n_questions} questions" in r.out


def test_a_first_shard_of_skipped_images_has_the_grid_shape(cli, tmp_path, monkeypatch):
    """Every image of the first shard unreadable (--skip-bad): its empty grid dataset still has the grid's row
    shape [cells, D] (from the encoder, since no image was encoded yet), so the entry reads back whole."""
    import pyarrow as pa

    import vqa_cache.cache.plan as plan
    from vqa_cache.cache.samples import load_samples as real

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")

    def load(spec, **kw):
        table = real(spec, **kw)
        first = sorted(set(table.column("image_id").to_pylist()))[:2]
        paths = [
            str(bad) if i in first else p
            for i, p in zip(table.column("image_id").to_pylist(), table.column("image_path").to_pylist())
        ]
        return table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(paths))

    monkeypatch.setattr(plan, "load_samples", load)
    root = tmp_path / "cache"
    opts = ["--limit", 20, *FAST, "--image-size", 64, "--features", "grid"]
    r = cli("--cache-dir", root, "extract", *opts, "--shard-size", 2, "--workers", 0, "--skip-bad")
    assert r.code == 0, r
    import h5py

    image = entry_of(root, "image")
    assert image["shards"][0]["rows"] == 0 and len(image["skipped"]) == 2
    with (
        h5py.File(root / "image" / image["key"] / "image-00000.h5") as f,
        h5py.File(root / "image" / image["key"] / "image-00001.h5") as g,
    ):
        assert f["grid"].shape == (0, 4, 512) and g["grid"].shape[1:] == (4, 512)
    assert cli("--cache-dir", root, "cache", "verify", image["key"]).code == 0
    t = cli("--cache-dir", root, "train", *opts, "--head", "attention", "--epochs", 1, "--out", tmp_path / "run")
    assert t.code == 0, t


# ---------------------------------------------------------------- --dry-run


def test_dry_run_estimates_and_writes_nothing(cli, tmp_path):
    r = cli(
        "--cache-dir",
        tmp_path,
        "extract",
        "--limit",
        100,
        *FAST,
        "--features",
        "pooled+grid",
        "--image-size",
        64,
        "--dry-run",
    )
    assert r.code == 0, r
    assert "ESTIMATE" in r.out and "21 rows" in r.out and "on disk" in r.out and "for 21 rows (new)" in r.out
    assert not list(tmp_path.rglob("*.h5")) and not list(tmp_path.rglob("manifest.json"))

    from vqa_cache.extraction import dry_run
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    est = dry_run(
        ExtractRecipe(
            DatasetSettings(limit=100),
            ImageSettings(encoder="resnet18", weights="random", size=64, features="pooled+grid", batch_size=4),
            TextSettings(encoder="bow"),
        ),
        tmp_path,
    )
    img = est["entries"][0]
    # pooled 512 + grid 2x2x512 float16 per image: the estimate is at least the raw bytes
    assert img["rows"] == 21 and img["bytes"] >= 21 * (512 + 4 * 512) * 2 and img["seconds"] > 0


# ---------------------------------------------------------------- grid + tokens, read with plain h5py/pyarrow


def test_plain_h5py_pyarrow_read_of_grid_and_token_entries(cli, tmp_path, tiny_bert_dir):
    r = cli(
        "--cache-dir",
        tmp_path,
        "extract",
        "--limit",
        30,
        "--image-encoder",
        "resnet18",
        "--weights",
        "random",
        "--image-size",
        64,
        "--features",
        "pooled+grid",
        "--text-encoder",
        tiny_bert_dir,
        "--set",
        "text.weights=auto",
        "--set",
        "text.tokens=true",
        "--set",
        "text.max_length=12",
        "--shard-size",
        5,
        "--workers",
        0,
    )
    assert r.code == 0, r

    # --- only json, h5py, pyarrow and numpy from here: the documented layout (docs/cache-format.md)
    import h5py
    import pyarrow.parquet as pq

    found = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/*/manifest.json")}
    image = next(m for m in found.values() if m["kind"] == "image")
    question = next(m for m in found.values() if m["kind"] == "question")
    idir, qdir = tmp_path / "image" / image["key"], tmp_path / "question" / question["key"]
    index = pq.read_table(idir / "index.parquet")
    image_id, shard, row = (index.column(c)[3].as_py() for c in ("image_id", "shard", "row"))
    with h5py.File(idir / shard, "r") as f:
        assert f["ids"][row].decode() == image_id
        pooled, grid = f["features"][row], f["grid"][row]
        assert f["grid"].shape[1:] == (4, 512) and f["grid"].dtype == np.float16 and f["grid"].chunks[0] >= 1
    # one forward pass: the pooled vector is the mean of the grid cells
    np.testing.assert_allclose(grid.astype(np.float32).mean(0), pooled.astype(np.float32), rtol=1e-2, atol=1e-2)

    texts = []
    for s in question["shards"]:
        t = pq.read_table(qdir / s["file"])
        assert t.num_rows == s["rows"]
        texts += t.column("question").to_pylist()
        d, L = question["dim"], question["spec"]["max_length"]
        emb = np.asarray(t.column("embedding")[0].as_py(), dtype=np.float32)
        tokens = np.asarray(t.column("tokens")[0].as_py(), dtype=np.float32).reshape(L, d)
        mask = np.asarray(t.column("mask")[0].as_py(), dtype=np.float32)
        assert emb.shape == (d,) and mask.sum() >= 2 and set(mask) <= {0.0, 1.0}
        # mean pooling = the masked mean of the token states
        np.testing.assert_allclose((tokens * mask[:, None]).sum(0) / mask.sum(), emb, rtol=2e-2, atol=2e-2)
    assert len(texts) == len(set(texts)) == question["rows"]
    assert [len(x) for x in texts] == sorted(len(x) for x in texts)  # length-sorted: little padding


def test_text_keys_change_with_tokens_length_pooling(tiny_bert_dir):
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    img = ImageSettings(encoder="resnet18", weights="random", size=32)

    def key(**kw):
        return make_plan(
            ExtractRecipe(DatasetSettings(limit=5), img, TextSettings(encoder=str(tiny_bert_dir), **kw))
        ).question_key

    base = key()
    assert len({base, key(tokens=True), key(max_length=16), key(pooling="cls")}) == 4
    assert key() == base


def test_fingerprints_are_the_bytes_they_always_hashed(tmp_path):
    """Cache keys rest on these digests: each string followed by a NUL byte (fingerprint), each image file's
    "name<TAB>size<TAB>mtime_ns" line by name (listing_fingerprint), whatever way they are computed."""
    import hashlib

    from vqa_cache.data.files import listing_fingerprint
    from vqa_cache.digest import fingerprint

    values = ["what color?", "", "é ü 日本", "a\tb"]
    assert fingerprint(values) == hashlib.sha256(b"".join(v.encode() + b"\0" for v in values)).hexdigest()
    assert fingerprint(iter(values)) == fingerprint(values)
    assert fingerprint([]) == hashlib.sha256(b"").hexdigest()
    for name, data in (("b.jpg", b"12"), ("a.jpg", b"1"), ("c d.png", b"")):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "sub").mkdir()  # (folders are not listed)
    lines = sorted(f"{p.name}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}\n" for p in tmp_path.iterdir() if p.is_file())
    assert listing_fingerprint(tmp_path) == f"3:{hashlib.sha256(''.join(lines).encode()).hexdigest()}"
