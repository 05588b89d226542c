"""vqa-cache: encode images and questions once, train VQA heads on the cached features.

The Python API (docs/api.md): the commands as functions, their options the CLI's with underscores.

    import vqa_cache
    keys = vqa_cache.extract(dataset="easyvqa", features="pooled+grid")          # stage one: CacheKeys
    run = vqa_cache.train(head="attention", features="pooled+grid", epochs=3)  # stage two: a Run
    run.best, run.metrics, run.predict(split="test")
    vqa_cache.ask(run, "shape.png", "What color is the shape?")
    vqa_cache.export(run, "models/attention"); vqa_cache.load("models/attention").ask("shape.png", "What shape?")

Bad input raises vqa_cache.BadInput (a ValueError) with the command line's one-line message.
"""

from .api import (
    CacheKeys,
    Run,
    Sweep,
    ask,
    cache_info,
    cache_ls,
    cache_rm,
    cache_verify,
    evaluate,
    export,
    extract,
    finetune,
    load,
    load_features,
    runs,
    sweep,
    train,
)
from .errors import BadInput, Diverged
from .version import __version__

__all__ = [
    "BadInput",
    "CacheKeys",
    "Diverged",
    "Run",
    "Sweep",
    "__version__",
    "ask",
    "cache_info",
    "cache_ls",
    "cache_rm",
    "cache_verify",
    "evaluate",
    "export",
    "extract",
    "finetune",
    "load",
    "load_features",
    "runs",
    "sweep",
    "train",
]
