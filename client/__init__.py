"""The lama-server client: standard library only, copied whole into each plug-in.

It runs inside Krita's and GIMP's own Python, where ``pip`` is not available, so nothing here
may import from ``lama_server``, ``lama_model`` or any package outside the standard library
(``zmq`` and ``msgpack`` are used when the host happens to have them).
"""

from .client import (
    DEFAULT_ENDPOINT,
    Cancelled,
    ImageData,
    LamaClient,
    LamaError,
    RequestTimeout,
    ServerUnavailable,
    default_token_path,
    packb,
    read_token,
    unpackb,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "Cancelled",
    "ImageData",
    "LamaClient",
    "LamaError",
    "RequestTimeout",
    "ServerUnavailable",
    "default_token_path",
    "packb",
    "read_token",
    "unpackb",
]
