"""The Python API: the commands as functions, re-exported by `vqa_cache` itself (docs/api.md).

calls.py: extract, train, finetune, sweep, evaluate, ask, load_features; results.py: what they return
(CacheKeys, Run, Sweep); output.py: printed progress (verbose) and tables (pandas when installed).
Options become recipes in options.py, the same as the CLI's; the CLI (cli/) is a thin layer over these.
An output that reads run directories (a table of runs, a report) is a function in calls.py (or a Run
method in results.py) over its module at the layer of predict.py, returning `output.table(rows)`.
"""
from .calls import ask, evaluate, extract, finetune, load_features, sweep, train  # noqa: F401
from .results import CacheKeys, Run, Sweep  # noqa: F401
