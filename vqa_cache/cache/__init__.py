"""The feature cache, and the contract between the two stages: content-addressed entries of HDF5 (images)
and Parquet (questions) shards.

    ROOT/image/<key>/manifest.json, index.parquet, image-00000.h5 ...
    ROOT/question/<key>/manifest.json, question-00000.parquet ...
    ROOT/dataset/<key>/manifest.json, samples.parquet          (a file dataset's parsed samples)

plan.py: a recipe -> samples and keys; store.py: entries, manifests, the lock; shards.py: the file
formats and the index; samples.py: the dataset entry; reader.py: reading entries back (stage two);
inspect.py: `cache info / verify / rm`. Stage one (vqa_cache/extraction/) writes entries.
"""

from .store import Entry, cache_root, entry_key, find_entry, list_entries  # noqa: F401
