# Types of fastserver.servers: the standard library's server classes, and fastserver's settings.
import socket
import ssl
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

from typing_extensions import Self

# What a server accepts as its handler class: anything called as (request, client_address,
# server), such as a BaseRequestHandler subclass or one of http.server's handlers.
_HandlerClass = Callable[[Any, Any, Any], object]
_Address = tuple[Any, ...] | str | bytes

__all__ = ["BaseServer", "TCPServer", "UDPServer"]
if sys.platform != "win32":
    __all__ += ["UnixStreamServer", "UnixDatagramServer"]

class BaseServer:
    timeout: float | None
    # fastserver's settings
    workers: int
    graceful_timeout: float
    worker_id: int | None
    proxy_protocol: bool
    proxy_timeout: float
    proxy_allow_from: str | Iterable[str]  # addresses/networks trusted to send PROXY; "*": any
    first_data_timeout: float | None
    ssl_context: ssl.SSLContext | None
    tls_handshake_timeout: float
    keep_alive_parking: bool
    keep_alive_timeout: float | None
    keep_alive_linger: float

    server_address: _Address
    RequestHandlerClass: _HandlerClass
    socket: socket.socket
    def __init__(self, server_address: _Address, RequestHandlerClass: _HandlerClass) -> None: ...
    def server_activate(self) -> None: ...
    def serve_forever(self, poll_interval: float = 0.5) -> None: ...
    def shutdown(self) -> None: ...
    def service_actions(self) -> None: ...
    def handle_request(self) -> None: ...
    def handle_timeout(self) -> None: ...
    def verify_request(self, request: Any, client_address: Any) -> bool: ...
    def process_request(self, request: Any, client_address: Any) -> None: ...
    def proxied_address(self, request: Any, client_address: Any) -> Any: ...
    def server_close(self) -> None: ...
    def finish_request(self, request: Any, client_address: Any) -> None: ...
    def shutdown_request(self, request: Any) -> None: ...
    def close_request(self, request: Any) -> None: ...
    def handle_error(self, request: Any, client_address: Any) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None: ...

class TCPServer(BaseServer):
    address_family: int
    socket_type: int
    request_queue_size: int
    allow_reuse_address: bool
    if sys.version_info >= (3, 11):
        allow_reuse_port: bool
    tcp_nodelay: bool
    def __init__(
        self,
        server_address: _Address,
        RequestHandlerClass: _HandlerClass,
        bind_and_activate: bool = True,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None: ...
    @classmethod
    def from_socket(
        cls, sock: socket.socket, RequestHandlerClass: _HandlerClass, **kwargs: Any
    ) -> Self: ...
    def server_bind(self) -> None: ...
    def fileno(self) -> int: ...
    def get_request(self) -> tuple[Any, Any]: ...

class UDPServer(TCPServer):
    max_packet_size: int
    def get_request(self) -> tuple[tuple[bytes, socket.socket], Any]: ...

if sys.platform != "win32":
    class UnixStreamServer(TCPServer): ...
    class UnixDatagramServer(UDPServer): ...
