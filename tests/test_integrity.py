"""The cache never loses or half-writes anything, and damage is caught: a full disk, bad weights and
model directories checked before any entry exists, damaged entries found by `train` and repaired by
`extract`, a tampered dataset entry parsed again, a dry run that writes nothing, the lock of a killed
writer, leftovers of killed writers, a cache root that is a file, and progress bars out of an error's way."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FAST
from fixtures_data import make_csv

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def manifests(root, kind):
    return [json.loads(p.read_text()) for p in Path(root).glob(f"{kind}/*/manifest.json")]


def screen(text: str) -> list[str]:
    """The non-blank lines a terminal shows for `text` (a carriage return goes back to the line start
    and what follows overwrites it), so a progress bar left behind shows up."""
    shown = []
    for raw in text.split("\n"):
        line, col = [], 0
        for ch in raw:
            if ch == "\r":
                col = 0
                continue
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        if "".join(line).strip():
            shown.append("".join(line).rstrip())
    return shown


def files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def vqa_cache(*args, limit_bytes=None, roomy=False, **kw):
    """`python -m vqa_cache ARGS` in a subprocess; `limit_bytes`: its file-size limit (ulimit -f);
    `roomy`: free_space reports a huge disk (so only the write itself can meet the limit)."""
    code = "import sys; from vqa_cache.cli import main; sys.argv[0] = 'vqa-cache'; main()"
    if roomy:
        code = "import vqa_cache.digest as s; s.free_space = lambda d: (1 << 50, 'on a roomy disk'); " + code

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        timeout=300,
        preexec_fn=limit if limit_bytes else None,
        check=False,
        **kw,
    )
    return r.returncode, r.stderr.decode()  # (not text=True: that turns a "\r" into a line break)


# ---------------------------------------------------------------- 1. a full disk


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_file_size_limit_stops_cleanly_then_resumes(cli, tmp_path):
    """62 images of pooled+grid features at 64 px are one 0.3 MiB shard: over a 150 KiB ulimit -f.
    The free-space check sees the limit first; with it fooled, the write itself meets EFBIG. Either
    way: exit 2, one line, no temporary file, no crash; then a run without the limit completes."""
    root = tmp_path / "cache"
    args = [
        "--cache-dir",
        root,
        "extract",
        "--limit",
        300,
        *FAST[:4],
        "--image-size",
        64,
        "--weights",
        "random",
        "--features",
        "pooled+grid",
        "--shard-size",
        64,
        "--workers",
        0,
    ]
    for roomy in (False, True):
        code, err = vqa_cache(*args, limit_bytes=150 * 1024, roomy=roomy)
        assert code == 2, (roomy, code, err[-3000:])
        shown = screen(err)
        assert len(shown) == 1 and shown[0].startswith("vqa-cache: error: no space left"), shown
        assert ("ulimit -f" in shown[0]) != roomy and "need 0.3 MiB for image-00000.h5" in shown[0], shown
        assert [f for f in files(root) if ".tmp" in f] == [], files(root)
        [image] = manifests(root, "image")
        assert not image["complete"] and image["shards"] == []
    r = cli(*args)
    assert r.code == 0, r
    [image] = manifests(root, "image")
    assert cli("--cache-dir", root, "cache", "verify", image["key"]).code == 0


def test_full_disk_keeps_finished_shards_and_the_manifest_contiguous(cli, tmp_path, monkeypatch):
    """The disk fills up after two 16-row shards: the third fails on the writer thread, the fourth
    (queued behind it) is never written, the error is one clean line, and a re-run resumes."""
    import vqa_cache.digest as digest

    root = tmp_path / "cache"

    def free_space(directory):
        full = len(list(Path(directory).glob("image-*.h5"))) >= 2
        return (8000 if full else 1 << 40), "on the device of TEST"

    monkeypatch.setattr(digest, "free_space", free_space)
    args = [
        "--cache-dir",
        root,
        "extract",
        "--limit",
        300,
        *FAST,
        "--shard-size",
        16,
        "--batch-size",
        8,
        "--workers",
        0,
    ]
    r = cli(*args)
    assert r.code == 2, r
    shown = screen(r.err)
    assert len(shown) == 1 and "no space left on the device of TEST" in shown[0] and "image-00002.h5" in shown[0], r
    [image] = manifests(root, "image")
    assert [s["file"] for s in image["shards"]] == ["image-00000.h5", "image-00001.h5"] and not image["complete"]
    assert sorted(p.name for p in (root / "image" / image["key"]).iterdir()) == [
        "image-00000.h5",
        "image-00001.h5",
        "manifest.json",
    ]
    monkeypatch.undo()
    r = cli(*args)
    assert r.code == 0 and "resuming" in r.out, r
    assert cli("--cache-dir", root, "cache", "verify", image["key"]).code == 0


# ---------------------------------------------------------------- 2, 6. weights and encoders before any work


class Evil:
    """Unpickling this would create `path` (a stand-in for running any code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_bad_weights_file_is_one_line_before_any_work(cli, tmp_path, resnet18_file):
    import pickle

    import torch
    import torchvision

    d = tmp_path / "csv"
    make_csv(d)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"conv1.weight": Evil(marker)}))
    nan = tmp_path / "nan.pt"
    state = torch.load(resnet18_file, weights_only=True)
    state["fc.bias"][3] = float("nan")
    torch.save(state, nan)
    wrong = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    root = tmp_path / "cache"
    # (text weights stay auto: the loud fallback warning would be printed, were the file checked late)
    base = ["--cache-dir", root, "extract", "--dataset", f"csv:{d}", "--image-size", 32, "--workers", 0]
    for weights, encoder, message in (
        (evil, "resnet18", f"--weights {evil}: not a PyTorch state dict (unpickling refused"),
        (nan, "resnet18", f"--weights {nan}: tensor 'fc.bias' holds NaN or inf"),
        (wrong, "nosuchnet", "unknown image encoder 'nosuchnet'"),
    ):
        r = cli(*base, "--image-encoder", encoder, "--weights", weights)
        assert r.code == 2, r
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "weights_only" not in r.err and "WARNING" not in r.err, r
        assert not root.exists(), files(root)  # before the dataset was parsed into the cache
    assert not marker.exists()  # nothing in the file was run
    # a state dict of another architecture is found when the encoder is built: before any feature entry
    r = cli(*base, "--image-encoder", "resnet18", "--weights", wrong, "--text-encoder", "bow")
    assert r.code == 2 and "does not fit resnet18" in r.err and len(r.err.strip().splitlines()) == 1, r
    assert not (root / "image").exists() and not (root / "question").exists(), files(root)
    assert "INCOMPLETE" not in cli("--cache-dir", root, "cache", "ls").out


def test_bad_text_encoder_directories_refused_before_any_entry(cli, tmp_path, tiny_bert_dir):
    import pickle

    marker = tmp_path / "ran"
    cases = {}
    d = cases["needs its own code (trust_remote_code)"] = tmp_path / "remote"
    shutil.copytree(tiny_bert_dir, d)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Net"}}))
    d = cases["only pickled weights (pytorch_model.bin) and no *.safetensors; loading a pickle can run code"] = (
        tmp_path / "pickled"
    )
    shutil.copytree(tiny_bert_dir, d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(marker)))
    d = cases["config.json is not readable JSON"] = tmp_path / "torn"
    shutil.copytree(tiny_bert_dir, d)
    (d / "config.json").write_text('{"model_type": "be')
    d = cases["cannot load the model"] = tmp_path / "unknown"
    shutil.copytree(tiny_bert_dir, d)
    (d / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}))
    root = tmp_path / "cache"
    for message, d in cases.items():
        r = cli(
            "--cache-dir",
            root,
            "extract",
            "--limit",
            6,
            *FAST[:4],
            "--weights",
            "random",
            "--set",
            "text.weights=auto",
            "--text-encoder",
            d,
        )
        assert r.code == 2, r
        last = r.err.strip().splitlines()[-1]
        assert last.startswith(f"vqa-cache: error: --text-encoder {d}") and message in last, r
        if message != "cannot load the model":  # (transformers logs a warning of its own first)
            assert len(r.err.strip().splitlines()) == 1, r
    assert not marker.exists()
    assert not (root / "image").exists() and not (root / "question").exists(), files(root)


def test_cache_root_that_is_a_file_is_one_line(cli, tmp_path, monkeypatch):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    for home in (a_file, a_file / "sub"):
        monkeypatch.setenv("VQA_CACHE_HOME", str(home))
        for args in (["extract", "--limit", 3, *FAST], ["cache", "ls"]):
            r = cli(*args)
            assert r.code == 2, r
            assert r.err.strip().splitlines() == [
                f"vqa-cache: error: $VQA_CACHE_HOME {home}: {a_file} is a file, not a directory "
                f"(point it at a directory)"
            ], r
    monkeypatch.delenv("VQA_CACHE_HOME")
    r = cli("--cache-dir", a_file, "cache", "ls")
    assert r.code == 2 and r.err.strip().splitlines() == [
        f"vqa-cache: error: --cache-dir {a_file}: {a_file} is a file, not a directory (point it at a directory)"
    ], r


# ---------------------------------------------------------------- 3, 5. damaged entries


@pytest.fixture
def small(cli, tmp_path):
    """8 images in shards of 3 (image-00000.h5 .. image-00002.h5), 30 question texts in 10 shards."""
    root = tmp_path / "cache"
    r = cli("--cache-dir", root, "extract", "--limit", 30, *FAST, "--shard-size", 3, "--workers", 0)
    assert r.code == 0, r
    [image], [question] = manifests(root, "image"), manifests(root, "question")
    return root, image, question


TRAIN = ["train", "--limit", 30, *FAST, "--epochs", 1]


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_train_refuses_damaged_entries_naming_them(cli, small, tmp_path):
    root, image, question = small
    idir, qdir = root / "image" / image["key"], root / "question" / question["key"]
    pristine = tmp_path / "pristine"
    shutil.copytree(root, pristine)

    def fresh():
        shutil.rmtree(root)
        shutil.copytree(pristine, root)

    def refused(key, *words, stream=False):
        r = cli(
            "--cache-dir",
            root,
            *TRAIN,
            "--out",
            tmp_path / f"run{time.monotonic_ns()}",
            *(["--stream"] if stream else []),
        )
        assert r.code == 2, r
        shown = screen(r.err)
        assert len(shown) == 1 and f"features {key} in {root} are damaged" in shown[0], r
        assert all(w in shown[0] for w in words), r
        return shown[0]

    # 2,000 bytes of 0xFF (float16 NaN) over the features of image-00001.h5: the size is unchanged
    with h5py.File(idir / "image-00001.h5", "r") as f:
        offset = f["features"].id.get_chunk_info(0).byte_offset
    with open(idir / "image-00001.h5", "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 2000)
    for stream in (False, True):
        refused(
            image["key"],
            "image-00001.h5 holds non-finite values",
            f"cache verify {image['key']}",
            f"cache rm {image['key']}",
            stream=stream,
        )

    # the last shard record dropped from a complete manifest: the rows no longer add up
    for entry, kind in ((image, "image"), (question, "question")):
        fresh()
        path = root / kind / entry["key"] / "manifest.json"
        m = json.loads(path.read_text())
        m["shards"].pop()
        path.write_text(json.dumps(m))
        line = refused(
            entry["key"], f"the shards end at row {m['shards'][-1]['stop']}, the manifest says {m['rows']} rows"
        )
        assert "run the same `vqa-cache extract` again to repair it" in line

    # ids that are not the dataset's (as if another entry's shard had been copied in)
    fresh()
    path = qdir / "manifest.json"
    m = json.loads(path.read_text())
    m["spec"]["questions"] = "0" * 64
    path.write_text(json.dumps(m))
    refused(question["key"], "the question texts in its shards are not the dataset's")

    fresh()
    assert cli("--cache-dir", root, *TRAIN, "--out", tmp_path / "ok").code == 0


def test_extract_repairs_a_damaged_complete_entry(cli, small):
    root, image, question = small
    idir, qdir = root / "image" / image["key"], root / "question" / question["key"]
    before = {p.name: p.read_bytes() for d in (idir, qdir) for p in d.iterdir() if p.name != "manifest.json"}
    (idir / "image-00001.h5").write_bytes(before["image-00001.h5"][:1000])  # truncated
    (qdir / "question-00004.parquet").unlink()  # deleted
    r = cli("--cache-dir", root, "extract", "--limit", 30, *FAST, "--shard-size", 3, "--workers", 0)
    assert r.code == 0, r
    assert f"cache entry {image['key']} is damaged (image-00001.h5: 1000 bytes" in r.err, r
    assert (
        f"cache entry {question['key']} is damaged (question-00004.parquet: missing); encoding again from "
        f"row 12" in r.err
    ), r
    for entry in (image, question):
        assert cli("--cache-dir", root, "cache", "verify", entry["key"]).code == 0
    # the same features as before: shards before the damage untouched, the rest encoded again
    with h5py.File(io.BytesIO(before["image-00001.h5"])) as old, h5py.File(idir / "image-00001.h5") as new:
        np.testing.assert_array_equal(old["features"][:], new["features"][:])
    import pyarrow.parquet as pq

    old = pq.read_table(io.BytesIO(before["question-00004.parquet"]))
    assert pq.read_table(qdir / "question-00004.parquet").equals(old)
    assert (idir / "image-00000.h5").read_bytes() == before["image-00000.h5"]
    r = cli("--cache-dir", root, "extract", "--limit", 30, *FAST, "--shard-size", 3, "--workers", 0)
    assert "images: cached" in r.out and "questions: cached" in r.out and "damaged" not in r.err, r


# ---------------------------------------------------------------- 4. the dataset entry


def test_tampered_dataset_entry_is_parsed_again(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vqa_cache.cache.samples import load_samples
    from vqa_cache.recipes import DatasetSettings

    d, root = tmp_path / "csv", tmp_path / "cache"
    make_csv(d)
    spec = DatasetSettings(name=f"csv:{d}")
    assert cli("--cache-dir", root, "extract", "--dataset", f"csv:{d}", *FAST, "--workers", 0).code == 0
    original = load_samples(spec, root=root)
    (entry,) = (p for p in (root / "dataset").iterdir() if p.is_dir())
    samples = entry / "samples.parquet"
    table = pq.read_table(samples)
    answers = pa.array([["yes"] * len(a) for a in table.column("answers").to_pylist()], pa.list_(pa.string()))
    pq.write_table(table.set_column(table.schema.get_field_index("answers"), "answers", answers), samples)
    assert pq.read_table(samples).column("answers").to_pylist() != table.column("answers").to_pylist()

    r = cli("--cache-dir", root, "train", "--dataset", f"csv:{d}", *FAST, "--epochs", 1, "--out", tmp_path / "run")
    assert r.code == 0, r
    assert f"cache entry {entry.name} is damaged (samples.parquet changed since it was written" in r.err, r
    assert pq.read_table(samples).equals(table)  # the annotation files' answers again
    assert load_samples(spec, root=root).equals(original)
    assert cli("--cache-dir", root, "cache", "verify", entry.name).code == 0


# ---------------------------------------------------------------- 7. dry run


def test_dry_run_writes_nothing_under_the_root(cli, tmp_path):
    d, root = tmp_path / "csv", tmp_path / "cache"
    make_csv(d)
    args = ["--cache-dir", root, "extract", "--dataset", f"csv:{d}", *FAST, "--workers", 0]
    root.mkdir()
    r = cli(*args, "--dry-run")
    assert r.code == 0 and "(new)" in r.out, r
    assert files(root) == []
    assert cli(*args, "--limit", 3).code == 0  # another entry set, for a non-empty root
    listing = files(root)
    r = cli(*args, "--dry-run")
    assert r.code == 0 and "(new)" in r.out, r
    assert files(root) == listing


# ---------------------------------------------------------------- 8, 9. killed writers


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_kill9_frees_the_lock_at_once_despite_dataloader_workers(cli, tmp_path):
    """DataLoader workers outlive a kill -9 of their parent by up to 5 s; they must not hold its lock."""
    import psutil

    from vqa_cache.cache import Entry

    root = tmp_path / "cache"
    args = ["extract", "--limit", 1000, *FAST, "--shard-size", 16, "--batch-size", 8, "--workers", 2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vqa_cache", "--cache-dir", str(root), *map(str, args)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = []
    try:
        deadline = time.time() + 300  # a bound for a loaded machine, not a timing
        while time.time() < deadline:
            found = [m for p in root.glob("image/*/manifest.json") for m in [_read(p)] if m]
            if found and found[0]["shards"]:
                workers = psutil.Process(proc.pid).children()
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, "extract ended before its first shard was seen"
            time.sleep(0.005)
        else:
            pytest.fail("no shard landed within 300 s")
        proc.wait()
        assert workers, "no DataLoader worker processes"
        key = found[0]["key"]
        with Entry(root, key).lock(wait=False):  # BadInput "another process ..." if a worker held it
            pass
        r = cli("--cache-dir", root, *args, "--no-wait")
        assert r.code == 0 and "resuming" in r.out, r
    finally:
        proc.kill()
        proc.wait()
        for w in workers:
            try:
                w.kill()
            except psutil.NoSuchProcess:
                pass


def _read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_leftovers_of_killed_writers_are_cleaned_live_ones_kept(cli, tmp_path):
    from vqa_cache.cache import Entry

    root = tmp_path / "cache"
    dead, live = "dataset-0123456789abcdef", "dataset-fedcba9876543210"
    for key in (dead, live):
        (root / ".tmp" / f"{key}.4242").mkdir(parents=True)
        (root / ".tmp" / f"{key}.4242" / "samples.parquet").write_bytes(b"half")
    (root / "dataset").mkdir()
    (root / "dataset" / f"{dead}.lock").write_text("otherhost 4242\n")
    (root / "image").mkdir()
    (root / "image" / "image-0123456789abcdef.lock").write_text("otherhost 4243\n")
    with Entry(root, live).lock(wait=False):
        r = cli("--cache-dir", root, "extract", "--limit", 3, *FAST, "--workers", 0)
        assert r.code == 0, r
        left = files(root)
        assert f".tmp/{live}.4242" in left and f"dataset/{live}.lock" in left
    assert not [f for f in left if dead in f or (f.endswith(".lock") and live not in f)], left


# ---------------------------------------------------------------- 10. progress bars


def test_progress_bar_is_cleared_when_an_error_leaves_it():
    from vqa_cache.progress import progress

    class Terminal(io.StringIO):  # bars are drawn on a terminal (in a log they are lines: test_progress.py)
        def isatty(self):
            return True

    def failing():
        yield 1
        yield 2
        raise ValueError("in the iterable")

    def body():
        for i in progress(range(5), desc="bar", file=out):
            if i == 2:
                raise ValueError("in the loop body")

    def block():
        with progress(total=5, desc="bar", file=out) as bar:
            bar.update(2)
            raise ValueError("in the with block")

    def iterable():
        for _ in progress(failing(), desc="bar", file=out):
            pass

    for case in (body, block, iterable):
        out = Terminal()
        with pytest.raises(ValueError) as e:
            case()
        out.write(f"error: {e.value}\n")
        assert "bar" in out.getvalue() and screen(out.getvalue()) == [f"error: {e.value}"], out.getvalue()
    out = Terminal()
    assert list(progress(range(3), desc="bar", file=out)) == [0, 1, 2]
    assert screen(out.getvalue())[0].startswith("bar: 100%")  # a finished bar stays
