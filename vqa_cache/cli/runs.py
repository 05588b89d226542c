"""The commands that use what was made: predict, ask and export (a trained run, or an exported model), eval (a predictions file), runs (a
table of run directories) and report (an HTML page about a run); each calls the Python API (vqa_cache/api/)
or, for the table, the library's runs.py, and prints what it returns."""

from __future__ import annotations

import json

import click

from .. import api
from ..errors import BadInput


@click.command()
@click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A train or finetune run directory."
)
@click.option(
    "--split",
    help="Split of the run's cache to predict (default: its validation split; a finetune run's split is encoded live).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Predictions file to write (JSON; CSV with --format csv).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="json: the official results format; csv: a submission, ID,answer (DACON: in test.csv, or "
    "sample_submission.csv, order).",
)
@click.option("--stream/--no-stream", default=None, help="Stream image features from the shards.")
@click.pass_obj
def predict(obj, run_dir, split, out, fmt, stream):
    """Official-format predictions of a run's best model for any split of its cache."""
    res = api.Run(run_dir).predict(split=split, out=out, stream=stream, cache_dir=obj.root, format=fmt)
    acc = (
        ""
        if res["accuracy"] is None
        else f"; accuracy {res['accuracy']:.4f} ("
        + ", ".join(f"{k} {v:.4f}" for k, v in res["accuracy_per_type"].items())
        + ")"
    )
    click.echo(f"{res['questions']} predictions for split {res['split']} in {res['out']}{acc}")


@click.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="A train or finetune run directory.")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    help="A model directory `vqa-cache export` wrote (needs no cache or run).",
)
@click.option("--image", required=True, type=click.Path(dir_okay=False), help="Image file.")
@click.option("--question", required=True, help="Question text.")
@click.option("--top", default=5, show_default=True, help="How many answers to print.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"answers": [{"answer", "score"}], "attention", "method", "grid"} as JSON.',
)
@click.option(
    "--explain",
    "explain_png",
    type=click.Path(),
    help="Draw where the run looked (attention map, or Grad-CAM for pooled heads) over the image into this PNG.",
)
@click.pass_obj
def ask(obj, run_dir, model_dir, image, question, top, as_json, explain_png):
    """Answer one question about one image with a run or an exported model (encoders run live, as the
    run's cache recorded; a finetune run's are its trained ones)."""
    if (run_dir is None) == (model_dir is None):
        raise BadInput("ask: give --run RUN or --model DIR (one of them)")
    model = api.load(run_dir or model_dir, cache_dir=obj.root)
    if not as_json and not explain_png:
        for answer, p in model.ask(image, question, top=top):
            click.echo(f"{p:7.2%}  {answer}")
        return
    result = model.explain(image, question, top=top, out=explain_png)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for a in result["answers"]:
            click.echo(f"{a['score']:7.2%}  {a['answer']}")
    if explain_png:
        click.echo(
            f"{result['method']} map {result['grid'][0]}x{result['grid'][1]} over the image in {explain_png}",
            err=as_json,
        )


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.argument("out", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.pass_obj
def export(obj, run_dir, out):
    """Write a run as a self-contained model directory OUT_DIR (Hugging Face Hub layout, safetensors only)."""
    path = api.export(run_dir, out, cache_dir=obj.root)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    click.echo(
        f"model directory {path}: {len(files)} files, {size / 2**20:.1f} MiB "
        f"(ask it: vqa-cache ask --model {path} --image IMAGE --question TEXT)"
    )


@click.command("eval")
@click.option("--questions", required=True, type=click.Path(), help="Official questions JSON.")
@click.option("--annotations", required=True, type=click.Path(), help="Official annotations JSON.")
@click.option("--predictions", required=True, type=click.Path(), help="Results JSON [{question_id, answer}].")
@click.option(
    "--protocol",
    type=click.Choice(["current", "2016"]),
    default="current",
    show_default=True,
    help="Official vqaEval.py version: current (since March 2021) or 2016 (the copy LAVIS and OpenVQA ship).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def eval_(questions, annotations, predictions, protocol, as_json):
    """The official VQA accuracy of a predictions file."""
    result = api.evaluate(questions, annotations, predictions, protocol)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"overall accuracy: {result['overall']:.2f}% (protocol {protocol})")
    for name, acc in sorted(result["perAnswerType"].items()):
        click.echo(f"  {name:<10} {acc:.2f}%")
    click.echo(f"macro F1 over {len(result['perAnswer'])} answers: {result['macroF1']:.4f} (per answer: --json)")


@click.command("runs")
@click.argument("directory", required=False, default="runs", type=click.Path())
@click.option(
    "--sort",
    default="acc",
    show_default=True,
    help="Column to sort by: acc or an answer type (best first), date (newest first), name, mode, head, "
    "encoders, cache keys, epochs, s/epoch, params.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (full cache keys and numbers).")
@click.option(
    "--wide",
    is_flag=True,
    help="Show weights identities and cache keys whole (the table is cut to fit "
    "160 columns, or the terminal when wider, without it).",
)
def runs(directory, sort, as_json, as_csv, wide):
    """A table of the run directories under DIRECTORY (default runs/; a sweep's trials/ too)."""
    # the records themselves, to print (the API's vqa_cache.runs gives them as a DataFrame)
    from ..run_table import as_csv as csv_text
    from ..run_table import as_json as json_text
    from ..run_table import as_text, table

    if as_json and as_csv:
        raise BadInput("--json and --csv: give one of them")
    rows = table(directory, sort)
    if as_json:
        click.echo(json_text(rows))
    elif as_csv:
        click.echo(csv_text(rows), nl=False)
    else:
        click.echo(as_text(rows, wide=wide) if rows else f"no runs in {directory}")


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file to write (default RUN/report.html).")
@click.pass_obj
def report(obj, run_dir, out):
    """One self-contained HTML page about a train or finetune run: curves, accuracy per type, confusion, a gallery."""
    res = api.Run(run_dir).report(out=out, cache_dir=obj.root)
    click.echo(
        f"report of {res['questions']} validation questions (accuracy {res['accuracy']:.4f}; "
        f"{res['wrong']} wrong and {res['right']} right shown) in {res['out']} "
        f"({res['bytes'] / 1024:.0f} KiB)"
    )
