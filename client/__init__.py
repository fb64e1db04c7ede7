"""The lama-server client: standard library only, copied whole into each plug-in.

It runs inside Krita's and GIMP's own Python, where ``pip`` is not available, so nothing here
may import from ``lama_server``, ``lama_model`` or any package outside the standard library
(``zmq`` and ``msgpack`` are used when the host happens to have them).

Modules, lowest first: :mod:`.errors` (what a call raises), :mod:`.wire` (msgpack and ZMTP
framing), :mod:`.client` (transports, pixel files, :class:`LamaClient`, the token) and
:mod:`.host_kit` (what the Krita and GIMP plug-ins share).
"""

from . import host_kit
from .client import DEFAULT_ENDPOINT, ImageData, LamaClient, default_token_path, read_token
from .errors import Cancelled, LamaError, RequestTimeout, ServerUnavailable
from .wire import packb, unpackb

__all__ = [
    "DEFAULT_ENDPOINT",
    "Cancelled",
    "ImageData",
    "LamaClient",
    "LamaError",
    "RequestTimeout",
    "ServerUnavailable",
    "default_token_path",
    "host_kit",
    "packb",
    "read_token",
    "unpackb",
]
