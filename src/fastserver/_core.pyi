"""Stub for the compiled core (``_core.pyx``); ``_pure`` is its pure-Python twin."""

from types import TracebackType
from typing import Any

POLLER: str
"""The C poller the loops wait on: "epoll", "kqueue" or "poll"."""

class Loop:
    """One serve_forever() run: the poller, the wakeup descriptor, and the loop itself."""

    def __init__(self) -> None: ...
    def close(self) -> None: ...
    def wake(self) -> None: ...
    def sleep(self, seconds: float | None) -> None: ...
    def serve_forever(self, server: Any, poll_interval: float | None) -> None: ...
    def __enter__(self) -> Loop: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

def handle_request(server: Any) -> None: ...

class Dispatcher:
    """Internal: one server's hooks and listening socket, as a loop dispatches to them."""

    def __new__(cls, server: Any) -> Dispatcher: ...
