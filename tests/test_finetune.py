"""`vqa-cache finetune`: live encoders == cache when frozen, what trains, accumulation, init-head, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FAST, run_cli

LIMIT = ["--limit", 300]  # fewer leaves val answers outside the vocabulary (see report)


def extract(root, *args):
    run_cli("--cache-dir", root, "extract", *args)


def recipe(*sets, text=None, limit=300):
    from vqa_cache.finetuning.recipe import finetune_recipe

    feature = {"limit": limit, "image_encoder": "resnet18", "image_size": 32, "weights": "random"}
    if text:
        feature["text_encoder"] = str(text)
        sets = ('features.text.weights="auto"',) + sets
    return finetune_recipe(
        "train/easyvqa-finetune.toml",
        {**feature, "set": ("finetune.workers=0", 'finetune.train_encoders="none"') + sets},
    )


@pytest.fixture(scope="module")
def bert_cache(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("cache")
    extract(root, *LIMIT, *FAST, "--text-encoder", tiny_bert_dir, "--set", 'text.weights="auto"', "--workers", 0)
    return root


def test_frozen_live_features_equal_the_cache(bert_cache, tiny_bert_dir):
    from vqa_cache.cache import Entry
    from vqa_cache.cache.reader import load_rows
    from vqa_cache.finetuning.model import build

    r = recipe(text=tiny_bert_dir)
    plan, _, model = build(r, torch.device("cpu"))
    assert plan.text_choice.kind == "hf"
    assert not model.encoder_parameters()  # train_encoders = none by default
    model.eval()
    for kind, key, what in (("image", plan.image_key, "features"), ("question", plan.question_key, "embedding")):
        entry = Entry(bert_cache, key)
        ids, cached = load_rows(entry, entry.manifest(), what)
        with torch.no_grad():
            if kind == "image":
                pos = {k: i for i, k in enumerate(plan.image_ids)}
                live = model.image_enc(model.images[[pos[i] for i in ids]])
            else:
                pos = {t: i for i, t in enumerate(plan.texts)}
                live = model.text_enc(torch.tensor([pos[t] for t in ids]))
        cached = torch.from_numpy(cached.astype(np.float32))
        # the cache stores float16: equal within its rounding (relative 2^-11, plus a tiny absolute floor)
        assert live.shape == cached.shape
        assert torch.allclose(live, cached, rtol=2**-10, atol=1e-4), (kind, (live - cached).abs().max())


def test_what_trains_and_batchnorm(tiny_bert_dir):
    from vqa_cache.finetuning.model import build

    m = build(recipe('finetune.train_encoders="top:1"', text=tiny_bert_dir), torch.device("cpu")).model
    img = {n for n, p in m.image_enc.named_parameters() if p.requires_grad}
    txt = {n for n, p in m.text_enc.named_parameters() if p.requires_grad}
    assert img and all(n.startswith("enc.body.7.") for n in img)  # layer4 only
    assert txt and all(".layer.1." in n for n in txt)  # the last of 2 BERT layers
    m.train()
    bns = {n: mod.training for n, mod in m.image_enc.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)}
    assert all(t for n, t in bns.items() if n.startswith("enc.body.7.")) and not any(
        t for n, t in bns.items() if not n.startswith("enc.body.7.")
    )  # frozen BN stays in eval mode
    assert not m.text_enc.model.embeddings.training  # frozen part: no dropout

    m = build(
        recipe('finetune.train_encoders="all"', "finetune.lora_r=4", text=tiny_bert_dir), torch.device("cpu")
    ).model
    names = [n for n, p in m.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert names and all("lora_" in n for n in names)
    assert any("query" in n for n in names) and any("value" in n for n in names) and any("conv" in n for n in names)
    m.train()
    assert not any(mod.training for mod in m.image_enc.modules() if isinstance(mod, torch.nn.BatchNorm2d))


def test_each_image_encoded_once_per_batch():
    from vqa_cache.finetuning.model import build

    built = build(recipe(), torch.device("cpu"))
    s, m = built.splits.splits["train"], built.model
    idx = torch.arange(64)
    m.eval()
    with torch.no_grad():
        m(s.img_row[idx], s.q_row[idx])
    assert m.encoded_images == len(torch.unique(s.img_row[idx])) < 64


def test_augmentation_keeps_answers_true():
    from vqa_cache.finetuning.augment import augment_images
    from vqa_cache.recipes import AugmentSettings

    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    spec = AugmentSettings(enabled=True, hflip=1.0, vflip=1.0, brightness=0.5, contrast=0.5)
    texts = [
        ["what is on the left of the circle?"],
        ["what color is the shape?"],
        ["is there a blue shape?"],
        ["what shape is in the image?"],
    ]
    y = augment_images(x, texts, spec, torch.Generator().manual_seed(0))
    assert not torch.equal(y[0], x[0].flip(-1).flip(-2))  # left/right: no flip
    assert torch.equal(y[1], x[1].flip(-1).flip(-2))  # colour: flipped, not jittered
    assert torch.equal(y[2], x[2].flip(-1).flip(-2))
    assert not torch.equal(y[3], x[3].flip(-1).flip(-2))  # shape question: jittered too


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_accumulation_sums_the_big_batch_gradient(monkeypatch, tmp_path):
    """Batch 8 x accumulate 2 takes the optimizer steps of batch 16: as many, at the same learning rates, and
    the first one (same starting weights) with the big batch's gradient. LoRA in the whole trunk (BN frozen),
    no dropout, no clipping.

    The two gradients are the same sums in another order (two means of 8, halved, against one mean of 16;
    the convolutions' reductions split in two). float32 rounds each addition by at most 2^-24 relative, and
    over sums of up to a few thousand terms that leaves differences of ~1e-6 of a tensor's largest gradient
    (measured: <= 1e-6 with 1 or 2 threads); the tolerance is 1e-5 of it. Weights after the steps are not
    compared: Adam divides by sqrt(v) and amplifies the rounding of tiny gradients."""
    from vqa_cache.finetuning import finetune

    from vqa_cache.training.optimizer import Optimizer

    log: list = []
    real = Optimizer.step

    def recorded(self):
        log.append(
            (
                [[None if p.grad is None else p.grad.clone() for p in g["params"]] for g in self.param_groups],
                [g["lr"] for g in self.param_groups],
            )
        )
        return real(self)

    monkeypatch.setattr(Optimizer, "step", recorded)
    steps = {}
    for bs, acc in ((16, 1), (8, 2)):
        log.clear()
        r = recipe(
            f"optim.batch_size={bs}",
            f"finetune.accumulate={acc}",
            "optim.epochs=1",
            "head.dropout=0.0",
            'finetune.train_encoders="all"',
            "finetune.lora_r=2",
            "finetune.lora_dropout=0.0",
            "finetune.group_by_image=false",
            "optim.grad_clip=0.0",
        )
        finetune(r, out=str(tmp_path / f"b{bs}"))
        steps[bs] = list(log)
    big, small = steps[16], steps[8]
    assert len(big) == len(small) > 1
    assert [lrs for _, lrs in big] == [lrs for _, lrs in small]
    (head16, enc16), (head8, enc8) = big[0][0], small[0][0]
    assert len(enc16) == len(enc8) > 0 and any(g is not None and g.abs().max() > 0 for g in enc16)
    for g16, g8 in zip(head16 + enc16, head8 + enc8):
        assert (g16 is None) == (g8 is None)
        if g16 is not None:
            assert float((g16 - g8).abs().max()) <= 1e-5 * float(g16.abs().max()), g16.shape


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_finetune_cli_init_head_checkpoints_resume(cli, tmp_path):
    cache = tmp_path / "cache"
    extract(cache, *LIMIT, *FAST, "--workers", 0)
    head_run = tmp_path / "head"
    r = cli("--cache-dir", cache, "train", "train/easyvqa-concat.toml", *LIMIT, *FAST, "--epochs", 3, "--out", head_run)
    assert r.code == 0, r
    run = tmp_path / "ft"
    args = [
        "--cache-dir",
        cache,
        "finetune",
        "train/easyvqa-finetune.toml",
        *LIMIT,
        *FAST,
        "--train-encoders",
        "top:1",
        "--batch-size",
        32,
        "--accumulate",
        2,
        "--init-head",
        head_run,
        "--set",
        "finetune.workers=0",
        "--out",
        run,
    ]
    r = cli(*args, "--epochs", 2)
    assert r.code == 0, r
    assert "epoch   0  val acc" in r.out
    cached_acc = json.loads((head_run / "metrics.json").read_text())["best"]["val_accuracy"]
    config = json.loads((run / "config.json").read_text())
    # the head from the cache scores the same through the live (frozen at that point) encoders
    assert abs(config["init_head_val_accuracy"] - cached_acc) < 0.02
    for name in ("config.json", "metrics.json", "best.pt", "last.pt", "curves.png", "predictions.json"):
        assert (run / name).is_file(), name
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["encoders"]["image_enc"] and all(k.startswith("enc.body.7.") for k in ck["encoders"]["image_enc"])
    assert any("running_mean" in k for k in ck["encoders"]["image_enc"])
    r = cli(*args, "--epochs", 3, "--resume")
    assert r.code == 0, r
    assert "resuming" in r.out
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    # an incompatible head is refused with one clear line
    r = cli(*args[:-1], tmp_path / "x", "--epochs", 1, "--head", "hadamard")
    last = r.err.strip().splitlines()[-1]
    assert r.code == 2 and last.startswith("vqa-cache: error: --init-head") and "head name" in last, r


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_init_head_takes_the_runs_encoders_unless_given(cli, tmp_path):
    """A head trained on ResNet50 features at 32 px (the fine-tune recipe says ResNet18 at 64 px): --init-head
    takes the run's encoders and says so, and its head scores through them as on the cache; an encoder given
    on the command line that changes the head's input is refused, naming both."""
    cache = tmp_path / "cache"
    r50 = ["--image-encoder", "resnet50", "--image-size", 32, "--weights", "random"]
    extract(cache, *LIMIT, *r50, "--workers", 0)
    head_run = tmp_path / "head"
    r = cli("--cache-dir", cache, "train", *LIMIT, *r50, "--epochs", 2, "--set", "head.hidden=64", "--out", head_run)
    assert r.code == 0, r
    args = [
        "finetune",
        "train/easyvqa-finetune.toml",
        *LIMIT,
        "--init-head",
        head_run,
        "--train-encoders",
        "none",
        "--epochs",
        1,
        "--set",
        "head.hidden=64",
        "--set",
        "finetune.workers=0",
    ]
    r = cli(*args, "--out", tmp_path / "ft")
    assert r.code == 0, r
    said = next(line for line in r.out.splitlines() if line.startswith(f"--init-head {head_run}: encoders as"))
    assert 'image.encoder="resnet50"' in said and "image.size=32" in said and 'image.weights="random"' in said
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    image = config["recipe"]["features"]["image"]
    assert (image["encoder"], image["size"], image["weights"]) == ("resnet50", 32, "random")
    assert config["head"]["image_dim"] == 2048 and "NOTE" not in config["init_head"]  # the same features
    cached_acc = json.loads((head_run / "metrics.json").read_text())["best"]["val_accuracy"]
    assert abs(config["init_head_val_accuracy"] - cached_acc) < 0.02

    r = cli(*args, "--image-encoder", "resnet18", "--out", tmp_path / "ft2")
    last = r.err.strip().splitlines()[-1]
    assert r.code == 2 and last.startswith(f"vqa-cache: error: --init-head {head_run}: head image_dim is 2048"), r
    assert '"resnet50"' in last and '"resnet18"' in last
    assert 'given here: image.encoder="resnet18"' in r.out


def test_a_nan_loss_stops_finetune_keeping_the_last_good_epoch(tmp_path, monkeypatch):
    from vqa_cache.errors import Diverged
    from vqa_cache.finetuning import finetune
    from vqa_cache.finetuning.model import build
    from vqa_cache.training import loop
    from vqa_cache.training.splits import trainable

    calls, real = [], loop.batch_loss

    def poisoned(logits, split, idx, K):
        loss = real(logits, split, idx, K)
        if torch.is_grad_enabled():  # training batches only
            calls.append(len(idx))
            if len(calls) == batches + 2:
                return loss * float("inf")
        return loss

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    r = recipe("optim.epochs=3", "optim.batch_size=64", "finetune.group_by_image=false")
    parts = build(r, torch.device("cpu")).splits
    batches = -(-len(trainable(parts.splits["train"], len(parts.vocab))) // 64)
    with pytest.raises(Diverged, match=f"at epoch 2, batch 2 of {batches}: run stopped; .*last.pt \\(epoch 1\\)"):
        finetune(r, out=str(tmp_path / "run"))
    assert len(calls) == batches + 2  # it stopped at the bad batch (one process)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    assert [e["epoch"] for e in json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]] == [1]
