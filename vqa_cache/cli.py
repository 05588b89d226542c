"""The `vqa-cache` command line. Thin: parse options into recipe overrides, call the library, print.

Errors (DESIGN.md): bad input or usage -> one line on stderr, exit 2; anything else -> exit 1;
a traceback only with --debug.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import BadInput


class Ctx:
    def __init__(self, cache_dir: str | None, debug: bool):
        from .cache import cache_root
        self.root = cache_root(cache_dir)
        self.debug = debug


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Feature cache root (else $VQA_CACHE_HOME, else ~/.cache/vqa-cache).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="vqa-cache")
@click.pass_context
def cli(ctx, cache_dir, debug):
    """Encode images and questions once (extract); train VQA heads on the cache (train)."""
    ctx.obj = Ctx(cache_dir, debug)


# ---------------------------------------------------------------- options shared by extract / train / finetune

def feature_options(f):
    """Options that name a feature cache: the dataset and the encoders."""
    opts = [
        click.option("--dataset", help="easyvqa | vqa2:DIR | vizwiz:DIR | csv:DIR"),
        click.option("--split", "splits", multiple=True, help="Only this split (repeatable)."),
        click.option("--limit", type=int, help="At most N questions per split."),
        click.option("--image-encoder", help="torchvision model name (resnet50)."),
        click.option("--text-encoder", help="Hugging Face id or local directory (tinybert), or bow."),
        click.option("--weights", help="auto | pretrained | random | PATH (image state dict)."),
        click.option("--features", "feature_kind", type=click.Choice(["pooled", "grid", "pooled+grid"]), help="Image feature kind."),
        click.option("--image-size", type=int, help="Images are resized to N x N."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def feature_overrides(prefix: str = "", dataset=None, splits=(), limit=None, image_encoder=None, text_encoder=None,
                      weights=None, feature_kind=None, image_size=None) -> list[str]:
    """CLI feature options -> `--set` style overrides (prefix 'features.' for train recipes)."""
    out = []

    def put(key, value):
        if value is not None and value != ():
            out.append(f"{prefix}{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}")

    put("dataset.name", dataset)
    put("dataset.splits", splits)
    put("dataset.limit", limit)
    put("image.encoder", image_encoder)
    put("text.encoder", text_encoder)
    if weights is not None:
        put("image.weights", weights)
        if weights in ("auto", "pretrained", "random"):
            put("text.weights", weights)
    put("image.features", feature_kind)
    put("image.size", image_size)
    return out


# ---------------------------------------------------------------- extract

@cli.command()
@click.argument("recipe", required=False, type=click.Path())
@feature_options
@click.option("--batch-size", type=int, help="Images per encoder batch.")
@click.option("--workers", type=int, help="DataLoader processes decoding images.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--shard-size", type=int, help="Rows per shard file.")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable images (recorded in the manifest).")
@click.option("--no-wait", is_flag=True, help="Fail instead of waiting when another process writes the entry.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe value.")
@click.pass_obj
def extract(obj, recipe, batch_size, workers, device, shard_size, skip_bad, no_wait, sets, **feature):
    """Stage one: encode every image and question once into the cache."""
    from . import recipes
    from .extract import extract as run

    data = recipes.load_extract_dict(recipe)
    overrides = feature_overrides("", **feature)
    for key, value in (("image.batch_size", batch_size), ("image.workers", workers), ("device", device),
                       ("shard_size", shard_size), ("skip_bad", skip_bad)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    recipes.apply_overrides(data, overrides + list(sets))
    r = recipes.build(recipes.ExtractRecipe, data)
    plan = run(r, obj.root, wait=not no_wait)
    click.echo(f"cache {obj.root}\n  images    {plan.image_key}\n  questions {plan.question_key}")


# ---------------------------------------------------------------- train

def train_like_options(f):
    opts = [
        click.argument("recipe", required=False, type=click.Path()),
        feature_options,
        click.option("--head", help="Fusion head (concat, hadamard, ...)."),
        click.option("--epochs", type=int),
        click.option("--lr", type=float),
        click.option("--batch-size", type=int),
        click.option("--seed", type=int),
        click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/NAME)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out (or the latest runs/NAME*) from last.pt."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe value."),
    ]
    for o in reversed(opts):
        f = o(f) if not callable(o) or o is not feature_options else feature_options(f)
    return f


def train_recipe(recipe, head, epochs, lr, batch_size, seed, sets, feature):
    from . import recipes

    data = recipes.load_train_dict(recipe)
    overrides = feature_overrides("features.", **feature)
    for key, value in (("head.name", head), ("optim.epochs", epochs), ("optim.lr", lr),
                       ("optim.batch_size", batch_size), ("seed", seed)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    recipes.apply_overrides(data, overrides + list(sets))
    r = recipes.build(recipes.TrainRecipe, data)
    # how to make the cache this run reads, for the error message when it is missing
    ref = recipes.read_toml(recipe).get("features") if recipe else None
    extract_cmd = " ".join(["vqa-cache extract"] + ([ref] if isinstance(ref, str) else []) + [
        o if " " not in o else repr(o) for o in feature_argv(feature)] +
        [f"--set {s[len('features.'):]}" for s in sets if s.startswith("features.")])
    return r, extract_cmd


def feature_argv(feature: dict) -> list[str]:
    """The feature options as they were given, to repeat them in an `extract` command."""
    names = {"dataset": "--dataset", "limit": "--limit", "image_encoder": "--image-encoder",
             "text_encoder": "--text-encoder", "weights": "--weights", "feature_kind": "--features",
             "image_size": "--image-size"}
    argv = []
    for key, flag in names.items():
        if feature.get(key) is not None:
            argv += [flag, str(feature[key])]
    for s in feature.get("splits") or ():
        argv += ["--split", s]
    return argv


@cli.command()
@train_like_options
@click.pass_obj
def train(obj, recipe, head, epochs, lr, batch_size, seed, out, resume, sets, **feature):
    """Stage two: train a fusion head on cached features."""
    from .training import train as run

    r, extract_cmd = train_recipe(recipe, head, epochs, lr, batch_size, seed, sets, feature)
    run(r, obj.root, out=out, resume=resume, extract_cmd=extract_cmd)


# ---------------------------------------------------------------- eval

@cli.command("eval")
@click.option("--questions", required=True, type=click.Path(), help="Official questions JSON.")
@click.option("--annotations", required=True, type=click.Path(), help="Official annotations JSON.")
@click.option("--predictions", required=True, type=click.Path(), help="Results JSON [{question_id, answer}].")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def eval_(questions, annotations, predictions, as_json):
    """The official VQA accuracy of a predictions file."""
    from .metrics import evaluate_files

    result = evaluate_files(questions, annotations, predictions)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"overall accuracy: {result['overall']:.2f}%")
    for name, acc in sorted(result["perAnswerType"].items()):
        click.echo(f"  {name:<10} {acc:.2f}%")


# ---------------------------------------------------------------- cache

@cli.group()
def cache():
    """List, inspect, verify and remove cache entries."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: key, kind, spec, rows, bytes, complete.")
@click.pass_obj
def cache_ls(obj, as_json):
    """List cache entries."""
    from .cache import list_entries

    rows = []
    for e in list_entries(obj.root):
        try:
            m = e.manifest()
        except BadInput as err:
            m = {"spec": {}, "rows": 0, "complete": False, "error": str(err)}
        rows.append({"key": e.key, "kind": e.kind, "spec": m.get("spec", {}), "rows": m.get("rows", 0),
                     "bytes": e.size_bytes(), "complete": bool(m.get("complete"))})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo(f"no entries in {obj.root}")
    for r in rows:
        s = r["spec"]
        what = f"{s.get('encoder', '?')} {s.get('weights', '')}"
        if r["kind"] == "image":
            what += f" {s.get('size', '')}px {'+'.join(s.get('outputs', []))}"
        state = "complete" if r["complete"] else "INCOMPLETE"
        click.echo(f"{r['key']:<24} {r['rows']:>8} rows {r['bytes'] / 2**20:>9.1f} MiB  {state:<10} {what}")


def main():
    debug = "--debug" in sys.argv[1:]
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except BadInput as e:
        if debug:
            raise
        click.echo(f"vqa-cache: error: {' '.join(str(e).split())}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        click.echo(f"vqa-cache: unexpected error: {type(e).__name__}: {' '.join(str(e).split())} "
                   f"(run with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
