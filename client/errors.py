"""The errors a lama-server client raises: what the plug-ins turn into messages for the user."""

from __future__ import annotations


class LamaError(Exception):
    """An error reply from the server, or a failure to reach it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message


class ServerUnavailable(LamaError):
    """No server answers at the endpoint."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class ClusterUnavailable(LamaError):
    """The server answered ``unavailable`` (protocol 1.5): it runs, but no replica of its Ray
    cluster (``lama-server --ray``) can take the request now."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class RequestTimeout(LamaError):
    """The server did not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class Cancelled(LamaError):
    """The request was cancelled."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__("cancelled", message)
