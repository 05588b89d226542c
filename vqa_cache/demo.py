"""`vqa-cache demo RUN_OR_MODEL_DIR`: a local web page (Gradio, the optional extra `[demo]`) that answers a
question about an uploaded or picked image with a trained run: the top answers with their scores and, where
the run can show one (heads that attend over grid cells; Grad-CAM for pooled heads on CNN encoders), the
map of where it looked, over the image as the encoder saw it.

Its API endpoint `/predict` takes (image, question) and returns the answers, [{"answer", "score"}], as
`vqa-cache ask` gives them; `gradio_client` calls it:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("shape.png"), "What color is the shape?",
                                            api_name="/predict")

It binds 127.0.0.1 unless told otherwise. The run is read once, through the Python API: `vqa_cache.load(DIR)`
(a train or finetune run, or an exported model directory), whose Model answers with `.explain(image,
question, top)`.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

from . import api
from .errors import BadInput
from .rundir import read_run_config

EXAMPLES = 8  # images offered to pick (easy-VQA's test images, or --examples DIR)


def check_installed() -> None:
    if importlib.util.find_spec("gradio") is None:
        raise BadInput(
            "demo: gradio is not installed; install it with pip install 'vqa-cache[demo]' (or pip install gradio)"
        )


def answerer(path, cache_dir=None, top: int = 5):
    """The run's Model (vqa_cache.load: a train or finetune run, or an exported model directory), loaded once:
    (explain(image, question) -> {"answers", "attention", "method", ...}, picture(image) -> the image as its
    encoder saw it, uint8 [H, W, 3])."""
    model = api.load(path, cache_dir=cache_dir)
    return (
        lambda image, question: model.explain(image, question, top=top),
        lambda image: model.pixels(image).permute(1, 2, 0).numpy(),
    )


def overlay(picture, result: dict):
    """The map over the image as the encoder saw it (a PIL image), or None when the run gives no map."""
    if not result.get("attention"):
        return None
    from PIL import Image

    from .explain import overlay_png

    top = result["answers"][0]
    png = overlay_png(
        picture, result["attention"], f"{result['method']}: {top['answer']} {top['score']:.0%}", size=4.0, dpi=96
    )
    return Image.open(io.BytesIO(png))


def examples(path: Path, folder=None) -> list[list[str]]:
    """[image, question] pairs to pick from: the images of `folder`, else easy-VQA's test images for an
    easy-VQA run (with a question of each), else none."""
    if folder:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        return [[str(p), ""] for p in files[:EXAMPLES]]
    try:
        dataset = ((read_run_config(path).get("recipe") or {}).get("features") or {}).get("dataset") or {}
    except BadInput:
        return []
    if dataset.get("name", "easyvqa") != "easyvqa":
        return []
    import easy_vqa

    paths = easy_vqa.get_test_image_paths()
    questions, _, image_ids = easy_vqa.get_test_questions()
    first = {}
    for q, i in zip(questions, image_ids):
        first.setdefault(i, q)
    return [[paths[i], first[i]] for i in sorted(first)[:EXAMPLES] if i in paths]


def build(path, cache_dir=None, top: int = 5, examples_dir=None, image=None, question=None):
    """The demo page (a gradio Blocks) of a run or model directory; `image` and `question`: filled in, and
    answered, as the page opens (docs/demo.md's screenshot)."""
    check_installed()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr  # (slow to import, and an optional extra)

    path = Path(path)
    answer, picture = answerer(path, cache_dir, top)

    def predict(image, question):
        """The top answers [{"answer", "score"}] for an image file and a question."""
        if not image or not (question or "").strip():
            raise gr.Error("give an image and a question")
        try:
            return answer(image, question)["answers"]
        except BadInput as e:
            raise gr.Error(str(e)) from None

    def shown(image, question):
        """(answer -> score, the map over the image or None)."""
        result = answer(image, question)
        return {a["answer"]: a["score"] for a in result["answers"]}, overlay(picture(image), result)

    def ask(image, question):
        if not image or not (question or "").strip():
            raise gr.Error("give an image and a question")
        try:
            scores, picture = shown(image, question)
        except BadInput as e:
            raise gr.Error(str(e)) from None
        return scores, gr.update(value=picture, visible=picture is not None)

    first = shown(image, question) if image and question else (None, None)  # answered before the page opens

    with gr.Blocks(title=f"vqa-cache demo: {path.name}") as demo:
        gr.Markdown(f"## vqa-cache demo: `{path.name}`\nUpload or pick an image, type a question, press Ask.")
        with gr.Row():
            with gr.Column():
                first_image, first_question = image, question
                image = gr.Image(first_image, type="filepath", label="image", sources=["upload"], height=320)
                question = gr.Textbox(first_question, label="question", placeholder="What color is the shape?")
                button = gr.Button("Ask", variant="primary")
            with gr.Column():
                answers = gr.Label(first[0], num_top_classes=top, label=f"top {top} answers")
                where = gr.Image(first[1], label="where the run looked", visible=first[1] is not None, height=320)
        picks = examples(path, examples_dir)
        if picks:
            gr.Examples(picks, inputs=[image, question], label="or pick an image")
        button.click(ask, [image, question], [answers, where], api_visibility="private")
        question.submit(ask, [image, question], [answers, where], api_visibility="private")
        api_button = gr.Button(visible=False)  # the API endpoint /predict: (image, question) -> answers
        api_image, api_question = gr.Image(type="filepath", visible=False), gr.Textbox(visible=False)
        api_button.click(predict, [api_image, api_question], gr.JSON(visible=False), api_name="predict")
    return demo


def serve(
    path, host: str = "127.0.0.1", port: int | None = None, cache_dir=None, top: int = 5, examples_dir=None
) -> None:
    """Build the page and serve it until interrupted."""
    build(path, cache_dir, top, examples_dir).launch(server_name=host, server_port=port, share=False, inbrowser=False)
