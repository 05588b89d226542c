"""vqa-cache: encode images and questions once, train VQA heads on the cached features."""
__version__ = "0.1.0"
