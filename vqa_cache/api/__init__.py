"""The Python API: the commands as functions, re-exported by `vqa_cache` itself (docs/api.md).

calls.py: extract, train, finetune, sweep, evaluate, ask, load, export, load_features, runs; entries.py:
cache_ls, cache_info, cache_verify, cache_rm (`vqa-cache cache ...`); results.py: what they
return (CacheKeys, Run with predict, ask and report, Sweep); output.py: printed progress (verbose) and
tables (pandas when installed). Options become recipes in options.py, the same as the CLI's; the CLI (cli/)
is a thin layer over these. An output that reads run directories is a function in calls.py (or a Run
method) over its module (runs.py, report.py), returning `output.table(rows)` where it gives a table.
"""

from .calls import ask, evaluate, export, extract, finetune, load, load_features, runs, sweep, train  # noqa: F401
from .entries import cache_info, cache_ls, cache_rm, cache_verify  # noqa: F401
from .results import CacheKeys, Run, Sweep  # noqa: F401
