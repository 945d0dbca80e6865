"""Runnable stages, one per file: `python -m scripts.NAME` (or under torchrun)."""
