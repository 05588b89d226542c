"""The `vqa-cache` group and its entry point: errors become one line and an exit code."""

from __future__ import annotations

import gc
import os
import sys

import click

from .. import threads
from ..errors import BadInput, Diverged, error_type, one_line
from .cache import cache
from .demo import demo
from .runs import ask, eval_, export, predict, report, runs
from .stages import extract, finetune, sweep, train


class Ctx:
    """What every command gets (click's obj): the cache root, and whether to show tracebacks."""

    def __init__(self, cache_dir: str | None, debug: bool):
        from ..cache import cache_root

        self.root = cache_root(cache_dir)
        self.debug = debug


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--cache-dir", type=click.Path(), help="Feature cache root (else $VQA_CACHE_HOME, else ~/.cache/vqa-cache)."
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="vqa-cache")
@click.pass_context
def cli(ctx, cache_dir, debug):
    """Encode images and questions once (extract); train VQA heads on the cache (train)."""
    ctx.obj = Ctx(cache_dir, debug)


for command in (extract, train, finetune, sweep, predict, ask, export, eval_, runs, report, cache, demo):
    cli.add_command(command)


def main():
    threads.prefer_passive_wait()  # before torch loads: waiting OpenMP threads sleep, not spin
    # before pyarrow loads (commands import it when they need it): Arrow's default pool (mimalloc) keeps freed
    # tables' memory for reuse, but stage two reads its tables once (samples, answers, question shards), and it
    # stayed in RSS: 0.03-0.07 GiB of a streamed train's peak at 20,000 images. The command line takes Arrow's
    # memory from malloc unless told otherwise; the API leaves its host's allocator alone.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
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
        click.echo(f"vqa-cache: error: {one_line(e)}", err=True)
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
        click.echo(
            f"vqa-cache: unexpected error: {error_type(e)}: {one_line(e)} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)
    # what is left is freed by the interpreter's exit: its collections of every object torch and the run made
    # (400k at VQA v2 shape: 0.9 s) are skipped by moving them to the permanent generation first
    gc.freeze()
    sys.exit(rv if isinstance(rv, int) else 0)
