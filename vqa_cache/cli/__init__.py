"""The `vqa-cache` command line: click commands and printing only. A command hands its options to the Python
API (vqa_cache/api/: options.py makes the recipe, the library does the work: extract/, train/, finetune/,
sweep/, predict.py, runs.py, report.py, metrics.py) and prints what it returns; `cache` calls cache/.

app.py: the group and main(); stages.py: extract, train, finetune, sweep; runs.py: predict, ask, eval,
runs, report; cache.py: cache ls/info/verify/rm; shared.py: shared options and printing. A new command is
a click command in one of these (or a new module), added to the group in app.py.

Errors (docs/architecture.md): bad input or usage -> one line on stderr, exit 2; a diverged run -> one
line, exit 1; anything else -> exit 1 with "unexpected error"; a traceback only with --debug.
"""

from .app import cli, main  # noqa: F401
