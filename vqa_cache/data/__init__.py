"""Datasets: one adapter per kind, each producing the samples table (schema.py) of a dataset settings
section; dispatch.py picks the adapter and applies the subsets (subsets.py). Nothing here reads or writes
the cache: a file dataset's parse (and what an hf: dataset's parse exports: its images) is kept in the
cache by vqa_cache/cache/samples.py."""

from .dispatch import (  # noqa: F401
    ADAPTERS,
    EXPORT_KINDS,
    FILE_KINDS,
    Exports,
    Source,
    identity,
    image_identity,
    load_samples,
    samples_from,
    source,
)
from .schema import SCHEMA, make_table  # noqa: F401
from .subsets import check_settings, train_val_splits, unique  # noqa: F401
