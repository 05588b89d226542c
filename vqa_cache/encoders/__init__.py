"""Frozen encoders: torchvision image backbones, Hugging Face text encoders, bag-of-words."""
