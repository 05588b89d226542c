"""The `vqa-cache` command line: click commands and printing only. Options become recipes in options.py;
the work is the library's (extract/, train/, finetune/, sweep/, predict.py, metrics.py, cache/).

Errors (docs/architecture.md): bad input or usage -> one line on stderr, exit 2; a diverged run -> one
line, exit 1; anything else -> exit 1 with "unexpected error"; a traceback only with --debug.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import options
from .errors import BadInput, Diverged


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
        click.option("--answer-types", "answer_types", multiple=True,
                     help="Keep only these answer types (yes/no, number, other); repeatable or comma-separated."),
        click.option("--image-fraction", type=float, help="Sample this share of the images (keeps all their questions)."),
        click.option("--val-fraction", type=float, help="Share of train images held out as val when a dataset has no val split."),
        click.option("--data-seed", type=int, help="Seed of --image-fraction and --val-fraction sampling (default 0)."),
        click.option("--skip-missing", is_flag=True, default=None, help="Drop questions whose image file is missing."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


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
@click.option("--dry-run", is_flag=True, help="Print rows, bytes on disk and an estimated time; write nothing.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe value.")
@click.pass_obj
def extract(obj, recipe, batch_size, workers, device, shard_size, skip_bad, no_wait, dry_run, sets, **feature):
    """Stage one: encode every image and question once into the cache."""
    from .extract import dry_run as estimate, extract as run     # (lazy: torch; the CLI starts fast)

    r = options.extract_recipe(recipe, batch_size, workers, device, shard_size, skip_bad, sets, feature)
    if dry_run:
        est = estimate(r, obj.root)
        click.echo(f"dry run: nothing written; times are ESTIMATES from timing a few real batches on {est['device']}")
        for e in est["entries"]:
            click.echo(f"  {e['kind'] + 's':<10} {e['key']:<26} {e['rows']:>9} rows  {human_bytes(e['bytes']):>10} on disk  "
                       + ("already cached" if e["status"] == "complete" else
                          f"~{human_seconds(e['seconds'])} for {e['rows_to_encode']} rows ({e['status']})"))
        total_b, total_s = sum(e["bytes"] for e in est["entries"]), sum(e["seconds"] for e in est["entries"])
        click.echo(f"  total      {human_bytes(total_b)} on disk, ~{human_seconds(total_s)} (estimate)")
        return
    plan = run(r, obj.root, wait=not no_wait)
    click.echo(f"cache {obj.root}\n  images    {plan.image_key}\n  questions {plan.question_key}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def human_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


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
        f = o(f)
    return f


@cli.command()
@train_like_options
@click.option("--stream/--no-stream", default=None,
              help="Read image features from the shards in chunks instead of loading them (default: only when "
                   "they exceed the memory budget, $VQA_CACHE_MEMORY_BUDGET or half the free memory).")
@click.pass_obj
def train(obj, recipe, head, epochs, lr, batch_size, seed, out, resume, sets, stream, **feature):
    """Stage two: train a fusion head on cached features."""
    from .train import train as run

    r, extract_cmd = options.train_recipe(recipe, head, epochs, lr, batch_size, seed, sets, feature)
    run(r, obj.root, out=out, resume=resume, extract_cmd=extract_cmd, stream=stream)


# ---------------------------------------------------------------- predict, ask

@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A `train` run directory.")
@click.option("--split", help="Split of the run's cache to predict (default: its validation split).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Predictions JSON to write.")
@click.option("--stream/--no-stream", default=None, help="Stream image features from the shards.")
@click.pass_obj
def predict(obj, run_dir, split, out, stream):
    """Official-format predictions of a run's best model for any split of its cache."""
    from .predict import predict as run

    res = run(run_dir, obj.root, split=split, out=out, stream=stream)
    acc = "" if res["accuracy"] is None else f"; accuracy {res['accuracy']:.4f} (" + ", ".join(
        f"{k} {v:.4f}" for k, v in res["accuracy_per_type"].items()) + ")"
    click.echo(f"{res['questions']} predictions for split {res['split']} in {res['out']}{acc}")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A `train` run directory.")
@click.option("--image", required=True, type=click.Path(dir_okay=False), help="Image file.")
@click.option("--question", required=True, help="Question text.")
@click.option("--top", default=5, show_default=True, help="How many answers to print.")
@click.pass_obj
def ask(obj, run_dir, image, question, top):
    """Answer one question about one image with a trained run (encoders run live, as the cache recorded)."""
    from .predict import ask as run

    for answer, p in run(run_dir, obj.root, image, question, top=top):
        click.echo(f"{p:7.2%}  {answer}")


# ---------------------------------------------------------------- finetune

@cli.command()
@train_like_options
@click.option("--train-encoders", help="none | top:N | all (last N ResNet stages / text layers).")
@click.option("--lora-r", type=int, help="LoRA rank (peft) for the trained encoder parts; 0 = full weights.")
@click.option("--encoder-lr", type=float, help="Learning rate of the encoders (--lr is the head's).")
@click.option("--accumulate", type=int, help="Gradient accumulation: optimizer step every N batches.")
@click.option("--checkpointing/--no-checkpointing", default=None, help="Gradient checkpointing in the encoders.")
@click.option("--init-head", type=click.Path(file_okay=False), help="Start the head from this cached `train` run.")
@click.pass_obj
def finetune(obj, recipe, head, epochs, lr, batch_size, seed, out, resume, sets, train_encoders, lora_r,
             encoder_lr, accumulate, checkpointing, init_head, **feature):
    """End to end: train the head with the encoders live (bypasses the cache)."""
    from .finetune import finetune as run
    from .finetune.init_head import finetune_recipe

    more = options.finetune_sets(train_encoders, lora_r, encoder_lr, accumulate, checkpointing, init_head, sets)
    r = finetune_recipe(recipe, head, epochs, lr, batch_size, seed, more, feature)
    run(r, out=out, resume=resume)


# ---------------------------------------------------------------- sweep

@cli.command()
@click.argument("recipe", required=False, type=click.Path())
@feature_options
@click.option("--trials", type=int, help="Finished trials the study should hold (default: the recipe's sweep.trials).")
@click.option("--jobs", type=int, help="Parallel trials in this process (threads sharing the loaded cache).")
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory (default sweeps/NAME).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out (or the latest sweeps/NAME*).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any recipe value (sweep.* and space.* keys included).")
@click.pass_obj
def sweep(obj, recipe, trials, jobs, out, resume, sets, **feature):
    """Hyperparameter search (Optuna) over a stage-two recipe; writes best.toml for `train`."""
    from .sweep import run_sweep

    overrides, extract_cmd = options.sweep_overrides(recipe, sets, feature)
    run_sweep(recipe, obj.root, trials=trials, jobs=jobs, out=out, resume=resume, overrides=sets,
              feature_overrides=overrides, extract_cmd=extract_cmd)


# ---------------------------------------------------------------- eval

@cli.command("eval")
@click.option("--questions", required=True, type=click.Path(), help="Official questions JSON.")
@click.option("--annotations", required=True, type=click.Path(), help="Official annotations JSON.")
@click.option("--predictions", required=True, type=click.Path(), help="Results JSON [{question_id, answer}].")
@click.option("--protocol", type=click.Choice(["current", "2016"]), default="current", show_default=True,
              help="Official vqaEval.py version: current (since March 2021) or 2016 (the copy LAVIS and OpenVQA ship).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def eval_(questions, annotations, predictions, protocol, as_json):
    """The official VQA accuracy of a predictions file."""
    from .metrics import evaluate_files

    result = {"protocol": protocol, **evaluate_files(questions, annotations, predictions, protocol)}
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"overall accuracy: {result['overall']:.2f}% (protocol {protocol})")
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
        weights = str(s.get("weights", ""))
        what = f"{Path(str(s.get('encoder', '?'))).name} {weights[:24] + '...' if len(weights) > 27 else weights}"
        if r["kind"] == "image":
            what += f" {s.get('size', '')}px {'+'.join(s.get('outputs', []))}"
        if r["kind"] == "dataset":
            what = f"{s.get('identity', {}).get('kind', '?')} samples table"
        state = "complete" if r["complete"] else "INCOMPLETE"
        click.echo(f"{r['key']:<24} {r['rows']:>8} rows {r['bytes'] / 2**20:>9.1f} MiB  {state:<10} {what}")


@cache.command("info")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.pass_obj
def cache_info(obj, key, as_json):
    """Spec, rows, size, timings and shards of one entry (KEY or a unique prefix)."""
    from .cache.inspect import info
    from .cache.store import find_entry

    d = info(find_entry(obj.root, key))
    if as_json:
        click.echo(json.dumps(d, indent=1))
        return
    click.echo(f"{d['key']}  ({d['kind']} features, {'complete' if d['complete'] else 'INCOMPLETE'})\n"
               f"  path     {d['path']}\n  rows     {d['rows']} (dim {d['dim']}; {len(d['skipped'])} skipped)\n"
               f"  size     {human_bytes(d['bytes'])}\n  created  {d['created']} by vqa-cache {d['tool_version']}, "
               f"format {d['format']}\n  timings  {json.dumps(d['timings'])}\n  spec")
    for k, v in sorted(d["spec"].items()):
        click.echo(f"    {k:<12} {json.dumps(v)}")
    click.echo(f"  shards   {len(d['shards'])}")
    for sh in d["shards"]:
        click.echo(f"    {sh['file']:<22} rows {sh['start']}..{sh['stop']} ({sh['rows']})  "
                   f"{human_bytes(sh['bytes'] or 0):>10}  sha256 {str(sh['sha256'])[:16]}")


@cache.command("verify")
@click.argument("key")
@click.pass_obj
def cache_verify(obj, key):
    """Check checksums, row counts and that every id of the dataset is present; exit 1 if bad."""
    from .cache.inspect import verify
    from .cache.store import find_entry

    entry = find_entry(obj.root, key)
    problems, summary = verify(entry)
    if problems:
        click.echo(f"BAD {entry.key}: {problems[0]}", err=True)
        for p in problems[1:]:
            click.echo(f"    also: {p}", err=True)
        sys.exit(1)
    click.echo(f"ok {entry.key}: {summary['shards']} shards, {summary['rows']} rows"
               + (f" (+{summary['skipped']} skipped)" if summary["skipped"] else "")
               + f", {human_bytes(summary['bytes'])}; checksums, row counts and ids all match")


@cache.command("rm")
@click.argument("key")
@click.pass_obj
def cache_rm(obj, key):
    """Delete one entry (KEY or a unique prefix)."""
    from .cache.inspect import remove
    from .cache.store import find_entry

    entry = find_entry(obj.root, key)
    freed = remove(entry)
    click.echo(f"removed {entry.key} ({human_bytes(freed)})")


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
    except Diverged as e:
        if debug:
            raise
        click.echo(f"vqa-cache: error: {' '.join(str(e).split())}", err=True)
        sys.exit(1)
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
