"""The pure-Python core: the reference the compiled core must match, and the fallback.

It runs the standard library's loop over ``selectors``, with one addition: a wakeup descriptor
registered beside the listening socket, so that ``shutdown()`` ends the wait at once instead of
after ``poll_interval``.
"""

import errno
import os
import selectors
import threading
from io import BufferedIOBase
from time import monotonic

from ._parked import ParkedConnections

_Selector = selectors.DefaultSelector
POLLER = _Selector.__name__.removesuffix("Selector").lower()

# Out of descriptors or memory, accept() fails at once for as long as it lasts: instead of spinning
# (the stdlib's loop does), leave the client queued and retry after a delay that doubles from
# BACKOFF_MIN to BACKOFF_MAX seconds. Same policy as _core.
BACKOFF_MIN = 0.001
BACKOFF_MAX = 0.05
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def _wakeup_pair():
    """(read end, write end); the same descriptor twice for an eventfd."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    r, w = os.pipe()
    for fd in (r, w):
        os.set_blocking(fd, False)
    return r, w


class Loop:
    """One serve_forever() run: a selector over the server and a wakeup descriptor."""

    def __init__(self):
        self._lock = threading.Lock()  # wake() must never write to a descriptor close() freed
        self._wake_r, self._wake_w = _wakeup_pair()
        self._closed = False

    def wake(self):
        """End the current wait at once; a no-op once the loop is closed."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._wake_w, (1).to_bytes(8, "little"))
            except BlockingIOError:
                pass  # already signalled

    def sleep(self, seconds):
        """Wait until wake() or for ``seconds``."""
        with _Selector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            if selector.select(seconds):
                self._drain()

    def _drain(self):
        try:
            os.read(self._wake_r, 8 if self._wake_r == self._wake_w else 4096)
        except BlockingIOError:
            pass

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._wake_r)
            if self._wake_w != self._wake_r:
                os.close(self._wake_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def serve_forever(self, server, poll_interval):
        from .servers import Hooks

        hooks = Hooks(server)
        with _Selector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            parked = None
            if hooks.first_data_timeout is not None:
                parked = ParkedConnections(
                    hooks.first_data_timeout,
                    lambda fd: selector.register(fd, selectors.EVENT_READ), selector.unregister,
                    server.process_request, server.handle_error, server.shutdown_request)
                server._BaseServer__parked = parked  # _handle_request_noblock() parks with it
            try:
                self._run(server, selector, hooks.accepting, parked, poll_interval)
            finally:
                if parked is not None:
                    server._BaseServer__parked = None
                    parked.close_all(hooks.accepting)

    def _run(self, server, selector, accepting, parked, poll_interval):
        armed, paused, backoff = True, False, 0.0
        while not server._BaseServer__shutdown_request:
            # The listener is polled unless accepting is paused or no thread is free (with
            # parking: while a readable connection waits for one).
            if parked is None:
                wanted = not paused and (accepting is None or accepting())
            else:
                wanted = not paused and not parked.ready
            if wanted != armed:
                armed = wanted
                if armed:
                    selector.register(server, selectors.EVENT_READ)
                else:
                    selector.unregister(server)
            timeout = poll_interval
            if paused and (timeout is None or timeout > backoff):
                timeout = backoff
            if parked is not None:
                due = parked.next_timeout()
                if due is not None and (timeout is None or due < timeout):
                    timeout = due
            ready = selector.select(timeout)
            if server._BaseServer__shutdown_request:
                break
            listener_ready = False
            for key, _ in ready:
                if key.fileobj is server:
                    listener_ready = True
                elif key.fd == self._wake_r:
                    self._drain()
                else:
                    parked.readable(key.fd)
            if parked is not None:
                parked.expire()
                parked.dispatch(accepting)
            if paused:
                paused = False  # over (a wakeup, e.g. a freed thread, ends it early)
            elif listener_ready:
                server._handle_request_noblock()
                if server._BaseServer__accept_error in _OUT_OF_RESOURCES:
                    backoff = min(max(2 * backoff, BACKOFF_MIN), BACKOFF_MAX)
                    paused = True
                else:
                    backoff = 0.0
            server.service_actions()


def handle_request(server):
    """The standard library's handle_request(): wait up to the timeout, then handle one request."""
    timeout = server.socket.gettimeout()
    if timeout is None:
        timeout = server.timeout
    elif server.timeout is not None:
        timeout = min(timeout, server.timeout)
    if timeout is not None:
        deadline = monotonic() + timeout
    with _Selector() as selector:
        selector.register(server, selectors.EVENT_READ)
        while True:
            if selector.select(timeout):
                return server._handle_request_noblock()
            if timeout is not None:
                timeout = deadline - monotonic()
                if timeout < 0:
                    return server.handle_timeout()


def stream_files(sock, rbufsize, wbufsize):
    """(rfile, wfile) for StreamRequestHandler, as the stdlib makes them."""
    rfile = sock.makefile("rb", rbufsize)
    wfile = _SocketWriter(sock) if wbufsize == 0 else sock.makefile("wb", wbufsize)
    return rfile, wfile


class _SocketWriter(BufferedIOBase):
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
