"""lama-server: the local ZeroMQ inpainting daemon and its client."""

__version__ = "0.1.0"
