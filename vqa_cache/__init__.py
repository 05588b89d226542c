"""vqa-cache: encode images and questions once, train VQA heads on the cached features.

The Python API (docs/api.md): the commands as functions, their options the CLI's with underscores.

    import vqa_cache
    keys = vqa_cache.extract(dataset="easyvqa", features="pooled+grid")          # stage one: CacheKeys
    run = vqa_cache.train(head="attention", features="pooled+grid", epochs=3)  # stage two: a Run
    run.best, run.metrics, run.predict(split="test")
    vqa_cache.ask(run, "shape.png", "What color is the shape?")

Bad input raises vqa_cache.BadInput (a ValueError) with the command line's one-line message.
"""
import sys
import types

from .api import CacheKeys, Run, Sweep, ask, evaluate, extract, finetune, load_features, runs, sweep, train
from .errors import BadInput, Diverged
from .version import __version__

__all__ = ["extract", "train", "finetune", "sweep", "evaluate", "ask", "load_features", "runs", "CacheKeys",
           "Run", "Sweep", "BadInput", "Diverged", "__version__"]
SHADOWED = ("extract", "train", "finetune", "sweep", "runs")     # API functions named like its modules


class _Package(types.ModuleType):
    """This package. `vqa_cache.extract`, `.train`, `.finetune`, `.sweep` and `.runs` are the API's functions
    and stay them when the modules of the same names are imported (Python would bind each here, as an
    attribute, when it is first imported); reach those by full path: `from vqa_cache.train import loop`."""

    def __setattr__(self, name, value):
        if not (name in SHADOWED and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
