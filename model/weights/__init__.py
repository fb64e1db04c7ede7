"""Weights apart from the architecture.

Known models and downloads, checkpoint loading, the official ``config.yaml``.
"""
