"""BaseRequestHandler, StreamRequestHandler and DatagramRequestHandler, as in the stdlib."""

import socket
from io import BytesIO

from . import _cores, _stdlib

__all__ = ["BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler"]


class BaseRequestHandler:
    """Base class for request handler classes.

    An instance is created for each request; the constructor sets the instance variables request,
    client_address and server, then calls setup(), handle() and finish() (the last even when
    handle() raises). Override handle() to serve a request; setup() and finish() may be overridden
    to prepare and to clean up.
    """

    def __init__(self, request, client_address, server):
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self):
        pass

    def handle(self):
        pass

    def finish(self):
        pass


class StreamRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for stream sockets.

    Class variables that may be overridden:

    - rbufsize: rfile's buffer size (-1, the default, for io's default)
    - wbufsize: wfile's buffer size (0, the default, writes each call through unbuffered)
    - timeout: a socket timeout for the connection, in seconds (default None: none)
    - disable_nagle_algorithm: set TCP_NODELAY on the connection (default False)
    """

    rbufsize = _stdlib.default("StreamRequestHandler", "rbufsize")
    wbufsize = _stdlib.default("StreamRequestHandler", "wbufsize")
    timeout = _stdlib.default("StreamRequestHandler", "timeout")
    disable_nagle_algorithm = _stdlib.default("StreamRequestHandler", "disable_nagle_algorithm")

    def setup(self):
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile, self.wfile = _cores.active.stream_files(self.connection, self.rbufsize,
                                                            self.wbufsize)

    def finish(self):
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                pass  # the peer went away: nothing left to deliver
        self.wfile.close()
        self.rfile.close()


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile (the datagram) and self.wfile (the reply, sent by finish())."""

    def setup(self):
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self):
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
