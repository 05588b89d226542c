"""The version of vqa-cache (recorded in every cache manifest; `vqa_cache.__version__`)."""

__version__ = "0.1.0"
