# Types of fastserver.http: http.server's servers on fastserver, and the command line.
#
# The handler classes are http.server's own code (run from a private copy whose socketserver is
# fastserver): they are typed as http.server's, which every fastserver server accepts.
import socket
import ssl as _ssl
import sys
import types
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler as BaseHTTPRequestHandler
from http.server import SimpleHTTPRequestHandler as SimpleHTTPRequestHandler

from .mixins import ThreadingMixIn
from .servers import TCPServer, _Address, _HandlerClass

if sys.version_info < (3, 15):
    from http.server import CGIHTTPRequestHandler as CGIHTTPRequestHandler
else:
    CGIHTTPRequestHandler: None

server: types.ModuleType  # the private copy of http.server
LOG_LEVELS: tuple[str, ...]

class HTTPServer(TCPServer):
    server_name: str
    server_port: int

class ThreadingHTTPServer(ThreadingMixIn, HTTPServer): ...

class HTTPSServer(HTTPServer):
    ssl: types.ModuleType
    certfile: str
    keyfile: str | None
    password: str | None
    alpn_protocols: list[str]
    def __init__(
        self,
        server_address: _Address,
        RequestHandlerClass: _HandlerClass,
        bind_and_activate: bool = True,
        *,
        certfile: str,
        keyfile: str | None = None,
        password: str | None = None,
        alpn_protocols: list[str] | None = None,
    ) -> None: ...
    def _create_context(self) -> _ssl.SSLContext: ...

class ThreadingHTTPSServer(ThreadingMixIn, HTTPSServer): ...

class DualStackMixIn:
    directory: str | None
    extra_response_headers: Sequence[tuple[str, str]] | None
    @property
    def RequestHandlerClass(self) -> _HandlerClass: ...
    @RequestHandlerClass.setter
    def RequestHandlerClass(self, handler_class: _HandlerClass) -> None: ...
    def server_bind(self) -> None: ...

class DualStackServer(DualStackMixIn, ThreadingHTTPServer): ...
class DualStackHTTPSServer(DualStackMixIn, ThreadingHTTPSServer): ...

def systemd_socket() -> socket.socket | None: ...
def serve(
    handler_class: _HandlerClass = ...,
    server_class: type[TCPServer] = ...,
    protocol: str = "HTTP/1.0",
    port: int = 8000,
    bind: str | None = None,
    directory: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_password: str | None = None,
    workers: int = 1,
    proxy_protocol: bool = False,
    listen_socket: socket.socket | None = None,
    content_type: str | None = None,
    extra_response_headers: Sequence[tuple[str, str]] | None = None,
    *,
    graceful_timeout: float | None = None,
    max_threads: int | None = None,
    first_data_timeout: float | None = None,
    tls_handshake_timeout: float | None = None,
    access_log: bool = True,
    proxy_allow_from: str | Iterable[str] | None = None,
    keep_alive_timeout: float | None = None,
) -> int: ...
def main(argv: Sequence[str] | None = None) -> int: ...
