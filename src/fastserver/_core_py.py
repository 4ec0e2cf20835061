"""The pure-Python core: the twin of ``_core``, the reference it must match, and the fallback.

It runs the standard library's loop over ``selectors``, with one addition: a wakeup descriptor
registered beside the listening socket, so that ``shutdown()`` ends the wait at once instead of
after ``poll_interval``. What it decides (back-off, timeouts) is ``_policy``'s; what it sees of the
server is the seam's (``_seam``): the server, its LoopState and the Hooks the API found.
"""

import os
import selectors
import threading

from . import _policy
from ._parking import Parking

_Selector = selectors.DefaultSelector
POLLER = _Selector.__name__.removesuffix("Selector").lower()


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

    def serve_forever(self, server, state, hooks, poll_interval):
        """The standard library's serve_forever loop over ``server``, until
        ``state.shutdown_request``; woken by wake()."""
        with _Selector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            parking = None
            if hooks.first_data_timeout is not None or hooks.keep_alive is not None:
                parking = Parking(
                    lambda fd: selector.register(fd, selectors.EVENT_READ), selector.unregister,
                    self.wake, hooks.first_data_timeout,
                    server.process_request, server.handle_error, server.shutdown_request)
                state.parking = parking  # _handle_request_noblock() holds connections there
            try:
                self._run(server, state, selector, hooks.accepting, parking, poll_interval)
            finally:
                if parking is not None:
                    state.parking = None
                    parking.close_all(hooks.accepting, state.finish_until)

    def _run(self, server, state, selector, accepting, parking, poll_interval):
        pacing = _policy.Pacing(poll_interval)
        armed = True
        while not state.shutdown_request:
            if parking is not None:
                parking.admit()
            wanted = pacing.listener_wanted(accepting, parking)
            if wanted != armed:
                armed = wanted
                if armed:
                    selector.register(server, selectors.EVENT_READ)
                else:
                    selector.unregister(server)
            ready = selector.select(pacing.timeout(parking))
            if state.shutdown_request:
                break
            listener_ready = False
            for key, _ in ready:
                if key.fileobj is server:
                    listener_ready = True
                elif key.fd == self._wake_r:
                    self._drain()
                else:
                    parking.readable(key.fd)
            if parking is not None:
                parking.expire()
                parking.dispatch(accepting)
            if not pacing.resume() and listener_ready:
                server._handle_request_noblock()
                pacing.accepted(state.accept_error)
            server.service_actions()


def handle_request(server, hooks):
    """The standard library's handle_request(): wait up to the timeout, then handle one request."""
    with _Selector() as selector:
        selector.register(server, selectors.EVENT_READ)
        return _policy.handle_request(server, lambda timeout: bool(selector.select(timeout)),
                                      server._handle_request_noblock)
