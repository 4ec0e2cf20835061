# Types of fastserver.mixins: ThreadingMixIn and ForkingMixIn, with fastserver's settings.
import sys
from typing import Any

__all__ = ["ThreadingMixIn"]
if sys.platform != "win32":
    __all__ += ["ForkingMixIn"]

class ThreadingMixIn:
    daemon_threads: bool
    block_on_close: bool
    max_threads: int | None  # fastserver: at most this many requests at once
    request_turns: bool  # fastserver: busy request threads take turns (compiled core)
    def process_request_thread(self, request: Any, client_address: Any) -> None: ...
    def process_request(self, request: Any, client_address: Any) -> None: ...
    def server_close(self) -> None: ...

if sys.platform != "win32":
    class ForkingMixIn:
        timeout: float | None
        active_children: set[int] | None
        max_children: int
        block_on_close: bool
        def collect_children(self, *, blocking: bool = False) -> None: ...
        def handle_timeout(self) -> None: ...
        def service_actions(self) -> None: ...
        def process_request(self, request: Any, client_address: Any) -> None: ...
        def server_close(self) -> None: ...
