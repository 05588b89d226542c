"""Options and printing that several commands share. A click parameter is named as the API's option
(options.py): the flag with underscores, so that a command hands its options to the API as they are."""

from __future__ import annotations

import click


def feature_options(f):
    """Options that name a feature cache: the dataset and the encoders."""
    opts = [
        click.option("--dataset", help="easyvqa | vqa2:DIR | vizwiz:DIR | csv:DIR | hf:NAME_OR_DIR"),
        click.option("--split", multiple=True, help="Only this split (repeatable)."),
        click.option("--limit", type=int, help="At most N questions per split."),
        click.option("--image-encoder", help="resnet50 (torchvision), torchvision:NAME, hf:ID_OR_DIR or timm:NAME."),
        click.option("--text-encoder", help="Hugging Face id or local directory (tinybert, minilm), or bow."),
        click.option("--weights", help="auto | pretrained | random | PATH (image state dict)."),
        click.option("--features", type=click.Choice(["pooled", "grid", "pooled+grid"]), help="Image feature kind."),
        click.option("--image-size", type=int, help="Images are resized to N x N."),
        click.option(
            "--answer-types",
            "answer_types",
            multiple=True,
            help="Keep only these answer types (yes/no, number, other); repeatable or comma-separated.",
        ),
        click.option(
            "--image-fraction", type=float, help="Sample this share of the images (keeps all their questions)."
        ),
        click.option(
            "--val-fraction", type=float, help="Share of train images held out as val when a dataset has no val split."
        ),
        click.option("--data-seed", type=int, help="Seed of --image-fraction and --val-fraction sampling (default 0)."),
        click.option("--skip-missing", is_flag=True, default=None, help="Drop questions whose image file is missing."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    help="auto (default: AMP on CUDA, bfloat16 where the GPU has it, else float16; fp32 on the CPU), fp32, "
    "fp16 (CUDA only) or bf16 (CUDA or CPU autocast).",
)


def train_like_options(f):
    """The options of train and finetune: a train recipe, the feature options, and the usual overrides."""
    opts = [
        click.argument("recipe", required=False, type=click.Path()),
        feature_options,
        click.option(
            "--head",
            help="Fusion head: concat, hadamard, bilinear (pooled image, question vector), "
            "attention (grid, vector), coattention (grid, token states), lstm (pooled, "
            "token ids), butd (grid, token ids). Recipe key head.name.",
        ),
        click.option("--epochs", type=int, help="Epochs to train (optim.epochs; the cosine schedule spans them)."),
        click.option("--lr", type=float, help="Peak learning rate (optim.lr; finetune: the head's)."),
        click.option(
            "--batch-size",
            type=int,
            help="Questions per batch (optim.batch_size; finetune: per micro-batch, --accumulate a step).",
        ),
        click.option("--seed", type=int, help="Seed of the head's initialization and the batch order (seed)."),
        precision_option,
        click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/NAME)."),
        click.option(
            "--resume", is_flag=True, help="Continue the run in --out (or the latest runs/NAME*) from last.pt."
        ),
        click.option(
            "--extend",
            type=click.Choice(["tail", "cycle"]),
            help="With --resume and more --epochs than the run planned: continue the schedule's tail at "
            "its final lr (tail, the default) or run a new cosine cycle from lr to min_lr (cycle).",
        ),
        click.option("--set", multiple=True, metavar="KEY=VALUE", help="Override any recipe value."),
        threads_option,
        log_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


threads_option = click.option(
    "--threads",
    type=int,
    help="torch CPU threads (default: the CPUs this process may use, by affinity and "
    "cgroup quota, less its worker processes).",
)
log_option = click.option(
    "--log",
    multiple=True,
    type=click.Choice(["tensorboard", "mlflow", "wandb"]),
    help="Track the run live in TensorBoard (event files in the run directory), MLflow ($MLFLOW_TRACKING_URI, "
    "else ./mlruns) or W&B (offline unless $WANDB_MODE=online); repeatable. Each needs its extra: "
    "pip install 'vqa-cache[tensorboard]' (or [mlflow], [wandb]).",
)


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable: TiB ends the loop")


def human_seconds(s: float) -> str:
    """3725 -> "1h 02m"."""
    s = round(s)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"
