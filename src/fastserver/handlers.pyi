# Types of fastserver.handlers (the standard library's request handlers, on fastserver).
import io
import socket
from typing import Any

from .servers import BaseServer

__all__ = ["BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler"]

class BaseRequestHandler:
    request: Any  # a socket for stream servers; (data, socket) for datagram servers
    client_address: Any
    server: BaseServer
    def __init__(self, request: Any, client_address: Any, server: BaseServer) -> None: ...
    def setup(self) -> None: ...
    def handle(self) -> None: ...
    def finish(self) -> None: ...

class StreamRequestHandler(BaseRequestHandler):
    rbufsize: int
    wbufsize: int
    timeout: float | None
    disable_nagle_algorithm: bool
    connection: Any  # the request's socket (an ssl.SSLSocket under TLS)
    rfile: io.BufferedIOBase
    wfile: io.BufferedIOBase

class DatagramRequestHandler(BaseRequestHandler):
    packet: bytes
    socket: socket.socket
    rfile: io.BytesIO
    wfile: io.BytesIO
