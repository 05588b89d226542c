"""`vqa-cache demo`: a local web page about a trained run (vqa_cache/demo.py, Gradio)."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dir", metavar="RUN_OR_MODEL_DIR", type=click.Path(file_okay=False))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (127.0.0.1: this machine only; 0.0.0.0 opens it to the network).",
)
@click.option("--port", type=int, help="Port (default: Gradio's, 7860, or the next free one).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 100), help="How many answers to show.")
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(file_okay=False, exists=True),
    help="A folder of images to offer to pick (default: easy-VQA's test images for an easy-VQA run).",
)
@click.pass_obj
def demo(obj, run_dir, host, port, top, examples_dir):
    """A local web page: upload or pick an image, ask a question, see the run's answers (and where it looked).
    Needs the [demo] extra (Gradio); its API endpoint /predict takes (image, question)."""
    from ..demo import check_installed, serve

    check_installed()
    click.echo(f"demo of {run_dir}: Gradio prints the address below (Ctrl+C stops it)")
    serve(run_dir, host=host, port=port, cache_dir=obj.root, top=top, examples_dir=examples_dir)
