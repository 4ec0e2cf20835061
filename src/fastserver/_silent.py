"""Silent connections: held in the loop, without a thread, until their first bytes arrive.

With ``first_data_timeout`` set on a stream server, the loop does not hand a connection it has
accepted (and verify_request() has passed) to process_request() at once: it watches the socket in
its own poller and processes the connection when data (or the peer's EOF) arrives. A client that
connects and sends nothing therefore holds a descriptor, not a thread, and is closed after the
timeout without a handler ever running. That is what keeps an idle flood from starving a server
whose threads are bounded (``max_threads``), or a single-threaded one.

Both cores use this class; each passes its own poller functions and dispatch.

When a loop ends, the connections it holds are closed, as the listener's backlog would be; but in
a worker process that stops gracefully (``fastserver.workers`` sets its LoopState's
``finish_until``), the loop ends by serving each one that speaks before its
``first_data_timeout``, up to the worker's ``graceful_timeout``: a worker finishes what it
accepted.
"""

import selectors
from collections import deque
from time import monotonic


class SilentConnections:
    """The connections one loop holds until they are readable (or time out).

    - ``watch(fd)`` / ``unwatch(fd)``: add or remove a descriptor in the loop's poller;
    - ``process(request, client_address)``: what the loop does with a request (process_request);
    - ``fail(request, client_address)``: after process raised an Exception (handle_error);
    - ``close(request)``: shutdown_request.
    """

    def __init__(self, timeout, watch, unwatch, process, fail, close):
        self.timeout = timeout
        self._watch = watch
        self._unwatch = unwatch
        self._process = process
        self._fail = fail
        self._close = close
        self._waiting = {}  # fd -> (request, client_address), watched for readability
        self._deadlines = deque()  # (deadline, fd, request), oldest first (one timeout for all)
        self.ready = deque()  # (request, client_address): readable, waiting for a free thread

    def __len__(self):
        return len(self._waiting) + len(self.ready)

    def hold(self, request, client_address):
        """Watch ``request`` until it is readable; an OSError leaves nothing behind."""
        fd = request.fileno()
        self._watch(fd)
        self._waiting[fd] = (request, client_address)
        self._deadlines.append((monotonic() + self.timeout, fd, request))

    def readable(self, fd):
        """The poller says ``fd`` is readable: queue its connection for processing.

        False when ``fd`` is not a silent connection's."""
        entry = self._waiting.pop(fd, None)
        if entry is None:
            return False
        self._unwatch(fd)
        self.ready.append(entry)
        return True

    def _live(self, entry):
        _, fd, request = entry
        waiting = self._waiting.get(fd)
        return waiting is not None and waiting[0] is request

    def next_timeout(self):
        """Seconds until the oldest waiting connection times out (None: no connection waits)."""
        deadlines = self._deadlines
        while deadlines and not self._live(deadlines[0]):
            deadlines.popleft()  # became readable (its fd may since belong to another)
        return max(deadlines[0][0] - monotonic(), 0.0) if deadlines else None

    def expire(self):
        """Close the connections that sent nothing within the timeout."""
        deadlines = self._deadlines
        now = monotonic()
        while deadlines and deadlines[0][0] <= now:
            entry = deadlines.popleft()
            if self._live(entry):
                _, fd, request = entry
                del self._waiting[fd]
                self._unwatch(fd)
                self._close(request)

    def dispatch(self, accepting=None):
        """Process the readable connections, while ``accepting()`` (a free thread) allows."""
        ready = self.ready
        while ready and (accepting is None or accepting()):
            request, client_address = ready.popleft()
            try:
                self._process(request, client_address)
            except Exception:
                self._fail(request, client_address)
                self._close(request)
            except BaseException:
                self._close(request)
                raise

    def close_all(self, accepting=None, finish_until=None):
        """The loop ends: process the readable connections that a free thread can take now, and
        close the rest (as the listener's backlog would be) and every silent one. With
        ``finish_until`` (a monotonic() time: a worker that stops), serve them as they speak
        until then first."""
        try:
            if finish_until is not None:
                self._serve_until(finish_until)
            self.dispatch(accepting)
        finally:
            waiting, self._waiting = self._waiting, {}
            ready, self.ready = self.ready, deque()
            self._deadlines.clear()
            for fd in waiting:
                self._unwatch(fd)
            for request, _ in [*waiting.values(), *ready]:
                self._close(request)

    def _serve_until(self, deadline):
        """Serve the held connections as they speak, without the loop's poller (its loop has
        ended): each readable one is processed (waiting for a free thread under max_threads),
        each silent past first_data_timeout closed, until none is held or ``deadline`` passes;
        then those still silent are closed."""
        loop_unwatch = self._unwatch
        with selectors.DefaultSelector() as selector:
            for fd in self._waiting:
                loop_unwatch(fd)
                selector.register(fd, selectors.EVENT_READ)
            self._unwatch = selector.unregister  # readable() and expire() unwatch from here
            try:
                while True:
                    self.dispatch()
                    due = self.next_timeout()
                    left = deadline - monotonic()
                    if due is None or left <= 0:
                        break
                    for key, _ in selector.select(min(due, left)):
                        self.readable(key.fd)
                    self.expire()
            finally:
                self._unwatch = loop_unwatch
                silent, self._waiting = self._waiting, {}
                self._deadlines.clear()
                for fd, (request, _) in silent.items():
                    selector.unregister(fd)
                    self._close(request)
