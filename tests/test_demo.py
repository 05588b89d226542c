"""`vqa-cache demo`: the Gradio page's API endpoint /predict answers like `ask` through gradio_client (a server
on 127.0.0.1 only); an attention head's answer comes with its map over the image; without the [demo] extra
the command is one line naming the install command, exit 2."""

from __future__ import annotations

import importlib.util
import socket

import pytest
from conftest import FAST, run_cli

QUESTION = "what is the color of the shape?"


def need_demo():
    pytest.importorskip("gradio", reason="needs the [demo] extra: pip install 'vqa-cache[demo]'")
    pytest.importorskip("gradio_client", reason="needs the [demo] extra: pip install 'vqa-cache[demo]'")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An attention head (1 epoch) on a small easy-VQA cache with grid features; (run dir, cache, an image)."""
    need_demo()  # (before the training: the tests that use it need the extra)
    import easy_vqa

    work = tmp_path_factory.mktemp("demo")
    features = ["--limit", 300, *FAST, "--features", "pooled+grid"]
    run_cli("--cache-dir", work / "cache", "extract", *features, "--workers", 0)
    run_cli(
        "--cache-dir",
        work / "cache",
        "train",
        *features,
        "--head",
        "attention",
        "--set",
        "head.hidden=64",
        "--epochs",
        1,
        "--out",
        work / "run",
    )
    image = sorted(easy_vqa.get_test_image_paths().items())[0][1]
    return work / "run", work / "cache", image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_api_endpoint_answers_like_ask(run):
    need_demo()
    from gradio_client import Client, handle_file

    import vqa_cache
    from vqa_cache.demo import build

    run_dir, cache, image = run
    page = build(run_dir, cache_dir=cache, top=5)
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        got = client.predict(handle_file(image), QUESTION, api_name="/predict")
    finally:
        page.close()
    want = vqa_cache.ask(run_dir, image, QUESTION, top=5, cache_dir=cache)
    assert [a["answer"] for a in got] == [a for a, _ in want]
    assert [a["score"] for a in got] == pytest.approx([s for _, s in want], abs=1e-6)


def test_an_attention_head_shows_where_it_looked(run):
    need_demo()
    from vqa_cache.demo import answerer, overlay

    run_dir, cache, image = run
    explain, picture = answerer(run_dir, cache)
    result = explain(image, QUESTION)
    assert result["method"] == "attention" and result["attention"]
    drawn = overlay(picture(image), result)
    assert drawn is not None and min(drawn.size) >= 256


def test_it_binds_127_0_0_1_by_default():
    from vqa_cache.cli import cli

    [host] = [p for p in cli.commands["demo"].params if p.name == "host"]
    assert host.default == "127.0.0.1"


def test_without_the_extra_it_is_one_line_exit_2(cli, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    r = cli("demo", tmp_path)
    assert r.code == 2 and r.err.strip() == (
        "vqa-cache: error: demo: gradio is not installed; install it with "
        "pip install 'vqa-cache[demo]' (or pip install gradio)"
    ), r


def test_not_a_run_is_one_line_exit_2(tmp_path):
    need_demo()
    import vqa_cache
    from vqa_cache.demo import build

    with pytest.raises(vqa_cache.BadInput):
        build(tmp_path)
