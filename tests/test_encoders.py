"""Image encoders from three families (torchvision:, hf:, timm:), each with tiny models built here: pooled and
grid features are the model's own (checked against the library computing them directly), keys are distinct,
a head trains on them, `ask` reproduces them, and unknown names are bad input with close matches."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

LIMIT = ["--limit", 20, "--text-encoder", "bow", "--features", "pooled+grid"]


def image_manifest(root, out: str) -> dict:
    """The image entry that an extract printing `out` wrote."""
    key = next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("images "))
    return json.loads((root / "image" / key / "manifest.json").read_text())


@pytest.fixture(scope="module")
def samples():
    """The samples of LIMIT (easy-VQA, 20 questions per split), read once."""
    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    return load_samples(DatasetSettings(limit=20))


def plan(encoder, weights, size, samples):
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    return make_plan(
        ExtractRecipe(
            DatasetSettings(limit=20),
            ImageSettings(encoder=encoder, weights=weights, size=size),
            TextSettings(encoder="bow"),
        ),
        samples=samples,
    )


def first_image(root, manifest, samples) -> tuple[str, np.ndarray, np.ndarray]:
    """(image path, pooled [D], grid [N, D]) of the first image of an entry, as float32."""
    paths = dict(zip(samples.column("image_id").to_pylist(), samples.column("image_path").to_pylist()))
    with h5py.File(root / "image" / manifest["key"] / manifest["shards"][0]["file"]) as f:
        image_id = f["ids"][0].decode()
        return paths[image_id], f["features"][0].astype(np.float32), f["grid"][0].astype(np.float32)


def close(got, expected, tol=2e-2):
    """Equal up to the float16 the cache stores, relative to the features' scale."""
    expected = np.asarray(expected, dtype=np.float32)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= tol * (1 + np.abs(expected).max())


def extract_and_train(cli, root, tmp_path, args, head="concat"):
    """extract with `args`, then train `head` one epoch on that cache: (extract result, image manifest)."""
    r = cli("--cache-dir", root, "extract", *LIMIT, *args)
    assert r.code == 0, r
    manifest = image_manifest(root, r.out)
    assert manifest["complete"] and manifest["spec"]["outputs"] == ["pooled", "grid"]
    run = tmp_path / f"run-{manifest['key']}"
    t = cli(
        "--cache-dir",
        root,
        "train",
        *LIMIT,
        *args,
        "--head",
        head,
        "--epochs",
        1,
        "--out",
        run,
        "--set",
        "head.hidden=32",
    )
    assert t.code == 0, t
    assert json.loads((run / "config.json").read_text())["cache_keys"]["image"] == manifest["key"]
    return r, manifest


# ---------------------------------------------------------------- tiny models, built and saved here


@pytest.fixture(scope="module")
def hf_vit_dir(tmp_path_factory):
    """A 1-layer ViT classifier (its pooler never trained) at 64 px, patches of 16, with a ViTImageProcessor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    d = tmp_path_factory.mktemp("hf-vit")
    torch.manual_seed(1)
    ViTForImageClassification(
        ViTConfig(
            image_size=64,
            patch_size=16,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(d)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def hf_clip_dir(tiny_clip_dir):
    """A tiny CLIP checkpoint (text and vision towers) at 64 px, with a CLIPImageProcessor (conftest.py)."""
    return tiny_clip_dir


@pytest.fixture(scope="module")
def timm_vit_file(tmp_path_factory):
    """timm's test_vit (160 px, one class token) with seeded weights, saved as a state dict."""
    import timm

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("timm") / "test_vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), path)
    return path


# ---------------------------------------------------------------- each family, end to end


def test_torchvision_vit_class_token_and_patch_tokens(cli, tmp_path, samples):
    """vit_b_32, random init: pooled is the class token the classifier reads, grid the 7x7 patch tokens; the
    input is the 224 px ViT's weights fix, whatever --image-size says."""
    import torchvision
    from PIL import Image

    r, m = extract_and_train(
        cli,
        tmp_path / "cache",
        tmp_path,
        ["--image-encoder", "torchvision:vit_b_32", "--weights", "random", "--image-size", 32],
    )
    assert m["spec"]["encoder"] == "vit_b_32" and m["spec"]["size"] == 224 and "224 px" in r.out
    path, pooled, grid = first_image(tmp_path / "cache", m, samples)
    torch.manual_seed(0)
    model = torchvision.models.vit_b_32(weights=None).eval()
    tokens = {}
    model.encoder.register_forward_hook(lambda mod, args, out: tokens.update(out=out))
    model.heads = torch.nn.Identity()
    x = torch.from_numpy(
        np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255
    ).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        expected = model(x)[0]
    close(pooled, expected.numpy())
    close(grid, tokens["out"][0, 1:].numpy())
    assert grid.shape == (49, 768)


@pytest.mark.parametrize("name, size, cells", [("swin_t", 64, 4), ("maxvit_t", 224, 49)])
def test_torchvision_swin_and_maxvit_pooled_is_the_pre_logits(name, size, cells):
    import torchvision

    from vqa_cache.encoders.families import resolve_image
    from vqa_cache.encoders.image import ImageEncoder

    choice = resolve_image(name, "random", size)
    assert choice.preprocess.size == size
    enc = ImageEncoder(choice, ("pooled", "grid"))
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        out = enc(images)
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        if name == "swin_t":
            model.head = torch.nn.Identity()
        else:
            model.classifier[-1] = torch.nn.Identity()
        expected = model((images.float() - enc.mean) / enc.std)
    torch.testing.assert_close(out["pooled"], expected, rtol=1e-4, atol=1e-4)
    assert out["grid"].shape == (2, cells, enc.dim)


def test_hf_vit_directory(cli, tmp_path, hf_vit_dir, samples):
    """hf:DIR: preprocessing from its ViTImageProcessor; no trained pooler, so pooled is the class token."""
    from PIL import Image
    from transformers import ViTImageProcessor, ViTModel

    from vqa_cache.encoders.weights import directory_identity

    r, m = extract_and_train(cli, tmp_path / "cache", tmp_path, ["--image-encoder", f"hf:{hf_vit_dir}"])
    ident = directory_identity(hf_vit_dir)
    assert f"image encoder hf:{hf_vit_dir} ({ident})" in r.out and f"the model in {hf_vit_dir}" in r.out
    assert m["spec"]["weights"] == ident and m["spec"]["size"] == 64 and m["spec"]["mean"] == [0.5, 0.5, 0.5]
    path, pooled, grid = first_image(tmp_path / "cache", m, samples)
    pixels = ViTImageProcessor.from_pretrained(hf_vit_dir)(Image.open(path).convert("RGB"), return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        states = ViTModel.from_pretrained(hf_vit_dir).eval()(pixel_values=pixels).last_hidden_state[0]
    close(pooled, states[0].numpy())
    close(grid, states[1:].numpy())  # the 4x4 patches, not the class token
    assert grid.shape == (16, 32)

    # `ask` encodes a new image exactly as the cache was made: the same class token
    run = tmp_path / f"run-{m['key']}"
    import vqa_cache

    img, _ = vqa_cache.load(run, cache_dir=tmp_path / "cache").features([path], ["what shape is in the image?"])
    close(img[0].numpy(), pooled, tol=1e-3)
    # exported, the model rebuilds the architecture from image_encoder/config.json and gives the same features
    model = vqa_cache.export(run, tmp_path / "model", cache_dir=tmp_path / "cache")
    assert (model / "image_encoder" / "preprocessor_config.json").is_file()
    again, _ = vqa_cache.load(model).features([path], ["what shape is in the image?"])
    assert torch.equal(again, img)


def test_hf_clip_checkpoint_uses_its_vision_tower(cli, tmp_path, hf_clip_dir, samples):
    """A whole CLIP checkpoint: the vision tower encodes; pooled is its pooler output (the post-LayerNorm class
    token), grid its patch tokens; an attention head trains on the grid."""
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel

    _, m = extract_and_train(
        cli, tmp_path / "cache", tmp_path, ["--image-encoder", f"hf:{hf_clip_dir}"], head="attention"
    )
    assert m["spec"]["resize"] == "bicubic-shorter-side" and m["spec"]["std"][0] == pytest.approx(0.26862954)
    path, pooled, grid = first_image(tmp_path / "cache", m, samples)
    pixels = CLIPImageProcessor.from_pretrained(hf_clip_dir)(Image.open(path).convert("RGB"), return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        out = CLIPModel.from_pretrained(hf_clip_dir).eval().vision_model(pixel_values=pixels)
    close(pooled, out.pooler_output[0].numpy())
    assert not np.allclose(pooled, out.last_hidden_state[0, 0].numpy(), atol=1e-2)  # not the raw class token
    close(grid, out.last_hidden_state[0, 1:].numpy())
    # exported: the vision tower again, with its pooler (the attention head reads the grid)
    import vqa_cache

    run = tmp_path / f"run-{m['key']}"
    img, _ = vqa_cache.load(run, cache_dir=tmp_path / "cache").features([path], ["what shape is it?"])
    model = vqa_cache.export(run, tmp_path / "model", cache_dir=tmp_path / "cache")
    assert json.loads((model / "config.json").read_text())["image"]["hf_pooler"] is True
    again, _ = vqa_cache.load(model).features([path], ["what shape is it?"])
    assert torch.equal(again, img)


def test_timm_model_with_a_weights_file(cli, tmp_path, timm_vit_file, samples):
    """timm:NAME --weights PATH: the file's weights, timm's data config (test_vit fixes 160 px, crop 0.95,
    bicubic), pooled = forward_head(pre_logits=True), grid = the tokens after the class token."""
    import timm
    from PIL import Image

    from vqa_cache.digest import sha256_file

    r, m = extract_and_train(
        cli, tmp_path / "cache", tmp_path, ["--image-encoder", "timm:test_vit", "--weights", timm_vit_file]
    )
    assert f"image encoder timm:test_vit (sha256:{sha256_file(timm_vit_file)})" in r.out
    assert f"the weights file {timm_vit_file}" in r.out
    assert m["encoder"]["source"] == str(timm_vit_file) and m["spec"]["size"] == 160
    path, pooled, grid = first_image(tmp_path / "cache", m, samples)
    model = timm.create_model("test_vit")
    model.load_state_dict(torch.load(timm_vit_file, weights_only=True))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        features = model.forward_features(transform(Image.open(path).convert("RGB"))[None])
        expected = model.forward_head(features, pre_logits=True)
    close(pooled, expected[0].numpy())
    close(grid, features[0, 1:].numpy())
    assert grid.shape == (100, 64)


def test_timm_cnn_takes_the_recipe_size_and_keys_differ_by_family(samples):
    """A timm CNN runs at image.size (timm's data config with that input size); what shapes the features
    (family, name, weights, preprocessing) separates the keys; torchvision:NAME is the bare name's entry."""
    p = plan("timm:test_efficientnet", "random", 64, samples)
    assert p.image_spec["size"] == 64 and p.image_spec["resize_to"] == int(64 / 0.95)
    keys = [
        plan(e, "random", size, samples).image_key
        for e, size in (
            ("resnet18", 64),
            ("timm:resnet18", 64),
            ("timm:test_efficientnet", 64),
            ("timm:test_efficientnet", 96),
            ("resnet18", 96),
        )
    ]
    assert len(set(keys)) == len(keys)
    assert plan("torchvision:resnet18", "random", 64, samples).image_key == keys[0]


def test_torchvision_cnn_keys_are_unchanged(samples):
    """A torchvision CNN's image spec is the one vqa-cache always wrote, so existing caches are found again."""
    from vqa_cache import data
    from vqa_cache.cache import entry_key
    from vqa_cache.digest import fingerprint
    from vqa_cache.recipes import DatasetSettings

    p = plan("resnet18", "random", 32, samples)
    before = {
        "dataset": data.image_identity(DatasetSettings(limit=20)),
        "images": fingerprint(p.image_ids),
        "encoder": "resnet18",
        "weights": "random:0",
        "size": 32,
        "resize": "bilinear-square",
        "exif": "transpose",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "outputs": ["pooled"],
        "dtype": "float16",
    }
    assert p.image_key == entry_key("image", before)


def test_every_family_has_its_own_entry(hf_vit_dir, hf_clip_dir, timm_vit_file, samples):
    keys = [
        plan(e, w, 32, samples).image_key
        for e, w in (
            ("resnet18", "random"),
            ("vit_b_32", "random"),
            (f"hf:{hf_vit_dir}", "auto"),
            (f"hf:{hf_clip_dir}", "auto"),
            (f"hf:{hf_vit_dir}", "random"),
            ("timm:test_vit", str(timm_vit_file)),
            ("timm:test_vit", "random"),
        )
    ]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    "encoder, message",
    [
        ("resnet5", "unknown image encoder 'resnet5' (close matches: resnet50"),
        ("timm:resnt18", "unknown image encoder timm:resnt18 (close matches: resnet18"),
        ("torchvision:vit_b16", "unknown image encoder 'vit_b16' (close matches: vit_b_16"),
        ("foo:resnet50", "unknown family 'foo'"),
        ("hf:not a model id", "not a directory, nor a Hugging Face model id"),
    ],
)
def test_unknown_names_are_bad_input_with_close_matches(cli, tmp_path, encoder, message):
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 3, "--image-encoder", encoder, "--weights", "random")
    assert r.code == 2, r
    assert message in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not any(tmp_path.rglob("manifest.json"))


def test_hf_directory_without_an_image_processor_is_bad_input(cli, tmp_path, hf_vit_dir):
    import shutil

    d = tmp_path / "vit"
    shutil.copytree(hf_vit_dir, d)
    (d / "preprocessor_config.json").unlink()
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--limit", 3, "--image-encoder", f"hf:{d}")
    assert r.code == 2, r
    assert "no image processor config (preprocessor_config.json or processor_config.json" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_hf_image_processor_in_either_layout(cli, tmp_path, hf_clip_dir):
    """A CLIP saved with CLIPProcessor.save_pretrained under transformers 5 has processor_config.json with the
    image processor nested in it and no preprocessor_config.json; one saved as transformers 4 did has
    preprocessor_config.json. Both load (AutoImageProcessor / AutoProcessor read the files) and give the same
    input; the nested layout extracts end to end."""
    import json
    import shutil

    from transformers import CLIPImageProcessor, CLIPProcessor, PreTrainedTokenizerFast

    from vqa_cache.encoders.hf_vision import preprocess

    nested, flat = tmp_path / "nested", tmp_path / "flat"
    for d in (nested, flat):
        shutil.copytree(hf_clip_dir, d)
        (d / "preprocessor_config.json").unlink()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor.from_pretrained(hf_clip_dir),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(hf_clip_dir),
    )
    processor.save_pretrained(nested)
    if (nested / "preprocessor_config.json").is_file():  # transformers 4 writes the flat layout: nest it
        inner = json.loads((nested / "preprocessor_config.json").read_text())
        (nested / "preprocessor_config.json").unlink()
        (nested / "processor_config.json").write_text(
            json.dumps({"image_processor": inner, "processor_class": "CLIPProcessor"})
        )
    assert "image_processor" in json.loads((nested / "processor_config.json").read_text())
    shutil.copy(hf_clip_dir / "preprocessor_config.json", flat / "preprocessor_config.json")
    assert preprocess(nested, "nested") == preprocess(flat, "flat") == preprocess(hf_clip_dir, "clip")
    assert preprocess(nested, "nested").size == 64
    r = cli(
        "--cache-dir",
        tmp_path / "cache",
        "extract",
        "--limit",
        3,
        "--image-encoder",
        f"hf:{nested}",
        "--text-encoder",
        "bow",
        "--workers",
        0,
    )
    assert r.code == 0, r


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_finetune_trains_other_families_with_lora_where_it_fits(cli, tmp_path):
    """finetune takes any image encoder: LoRA goes into the query/value projections of an attention (packed
    ones whole: torchvision's nn.MultiheadAttention, timm's qkv), else into a CNN's ungrouped convolutions."""
    import timm
    import torchvision
    from torch import nn

    from vqa_cache.finetuning.scope import image_lora_match

    def targets(body):
        match = image_lora_match(body)
        return {type(m).__name__ for name, m in body.named_modules() if match(name, m)}

    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    assert targets(vit) == {"MultiheadAttention"}
    timm_vit = timm.create_model("test_vit", num_classes=0)
    match = image_lora_match(timm_vit)
    assert {n.rsplit(".", 1)[-1] for n, m in timm_vit.named_modules() if match(n, m)} == {"qkv"}
    effnet = timm.create_model("test_efficientnet", num_classes=0)
    match = image_lora_match(effnet)
    chosen = [m for n, m in effnet.named_modules() if match(n, m)]
    assert chosen and all(isinstance(m, nn.Conv2d) and m.groups == 1 for m in chosen)
    assert any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in effnet.modules())
    r = cli(
        "--cache-dir",
        tmp_path,
        "finetune",
        "--limit",
        3,
        "--image-encoder",
        "timm:test_efficientnet",
        "--weights",
        "random",
        "--text-encoder",
        "bow",
        "--train-encoders",
        "all",
        "--lora-r",
        4,
        "--epochs",
        1,
        "--out",
        tmp_path / "ft",
    )
    assert r.code == 0, r
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["encoders"]["lora_targets"] == len(chosen)
