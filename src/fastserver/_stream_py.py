"""StreamRequestHandler's rfile and wfile on the pure core: the standard library's own.

The twin of the compiled ``_stream`` (which the compiled core uses instead).
"""

import select
from io import BufferedIOBase


def stream_files(sock, rbufsize, wbufsize):
    """(rfile, wfile) for StreamRequestHandler, as the stdlib makes them."""
    rfile = sock.makefile("rb", rbufsize)
    wfile = SocketWriter(sock) if wbufsize == 0 else sock.makefile("wb", wbufsize)
    return rfile, wfile


class SocketWriter(BufferedIOBase):
    """Unbuffered wfile: every write() is one sendall(), so data goes out without flush()."""

    def __init__(self, sock):
        self._sock = sock

    def writable(self):
        return True

    def write(self, b):
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self):
        return self._sock.fileno()


def wait_readable(fd, seconds):
    """Wait up to ``seconds`` for ``fd`` to be readable (or hung up): True if it is. A request
    thread waits so between two keep-alive requests (fastserver._pipeline)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(seconds * 1000.0))
