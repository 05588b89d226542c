"""`python -m vqa_cache ...` is the CLI (and what `torchrun -m vqa_cache` runs)."""

from .cli import main

main()
