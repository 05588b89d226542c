"""The commands that make things: extract (stage one), train (stage two), finetune and sweep. Each hands its
options, as click parsed them, to the Python API (vqa_cache/api/, which makes the recipe in options.py and
runs the library) and prints what it returns."""

from __future__ import annotations

import click

from .. import api
from .shared import (
    feature_options,
    human_bytes,
    human_seconds,
    log_option,
    precision_option,
    threads_option,
    train_like_options,
)


@click.command()
@click.argument("recipe", required=False, type=click.Path())
@feature_options
@click.option("--batch-size", type=int, help="Images per encoder batch.")
@click.option("--workers", type=int, help="DataLoader processes decoding images.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where the encoders run (auto: cuda when there is one).",
)
@precision_option
@click.option("--shard-size", type=int, help="Rows per shard file.")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable images (recorded in the manifest).")
@click.option("--no-wait", is_flag=True, help="Fail instead of waiting when another process writes the entry.")
@click.option("--dry-run", is_flag=True, help="Print rows, bytes on disk and an estimated time; write nothing.")
@click.option("--set", multiple=True, metavar="KEY=VALUE", help="Override any recipe value.")
@threads_option
@click.pass_obj
def extract(obj, **options):
    """Stage one: encode every image and question once into the cache."""
    result = api.extract(cache_dir=obj.root, **options)
    if options["dry_run"]:
        est = result  # the estimate: nothing was written
        click.echo(f"dry run: nothing written; times are ESTIMATES from timing a few real batches on {est['device']}")
        for e in est["entries"]:
            click.echo(
                f"  {e['kind'] + 's':<10} {e['key']:<26} {e['rows']:>9} rows  {human_bytes(e['bytes']):>10} on disk  "
                + (
                    "already cached"
                    if e["status"] == "complete"
                    else f"~{human_seconds(e['seconds'])} for {e['rows_to_encode']} rows ({e['status']})"
                )
            )
        total_b, total_s = sum(e["bytes"] for e in est["entries"]), sum(e["seconds"] for e in est["entries"])
        click.echo(f"  total      {human_bytes(total_b)} on disk, ~{human_seconds(total_s)} (estimate)")
        return
    click.echo(f"cache {result.root}\n  images    {result.image}\n  questions {result.question}")


@click.command()
@train_like_options
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Read image features from the shards in chunks instead of loading them (default: only when "
    "they exceed the memory budget, $VQA_CACHE_MEMORY_BUDGET or half the free memory).",
)
@click.pass_obj
def train(obj, **options):
    """Stage two: train a fusion head on cached features."""
    api.train(cache_dir=obj.root, **options)


@click.command()
@train_like_options
@click.option("--train-encoders", help="none | top:N | all (last N ResNet stages / text layers).")
@click.option("--lora-r", type=int, help="LoRA rank (peft) for the trained encoder parts; 0 = full weights.")
@click.option("--encoder-lr", type=float, help="Learning rate of the encoders (--lr is the head's).")
@click.option("--accumulate", type=int, help="Gradient accumulation: optimizer step every N batches.")
@click.option("--checkpointing/--no-checkpointing", default=None, help="Gradient checkpointing in the encoders.")
@click.option("--init-head", type=click.Path(file_okay=False), help="Start the head from this cached `train` run.")
def finetune(**options):
    """End to end: train the head with the encoders live (bypasses the cache)."""
    api.finetune(**options)


@click.command()
@click.argument("recipe", required=False, type=click.Path())
@feature_options
@click.option("--trials", type=int, help="Finished trials the study should hold (default: the recipe's sweep.trials).")
@click.option(
    "--jobs",
    type=int,
    help="Parallel trials in this process (threads sharing the loaded cache; replaces sweep.parallel).",
)
@click.option(
    "--parallel",
    type=int,
    help="Train K trials together in one pass over the cache (each batch read once; replaces --jobs).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory (default sweeps/NAME).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out (or the latest sweeps/NAME*).")
@click.option(
    "--set", multiple=True, metavar="KEY=VALUE", help="Override any recipe value (sweep.* and space.* keys included)."
)
@threads_option
@log_option
@click.pass_obj
def sweep(obj, **options):
    """Hyperparameter search (Optuna) over a stage-two recipe; writes best.toml for `train`."""
    api.sweep(cache_dir=obj.root, **options)
