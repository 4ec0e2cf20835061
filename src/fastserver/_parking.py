"""Parking: connections held in a loop's poller, without a thread, until they are readable.

A connection that waits for its client costs a descriptor here, not a thread, a stack or a read
buffer. Four waits park:

- first data (``first_data_timeout``): a new connection is held until its first bytes arrive;
- a TLS handshake run in the loop: each step waits here for the client's next flight;
- keep-alive (``fastserver._pipeline``): between two requests of an HTTP/1.1 connection whose
  handler's request loop fastserver knows, the connection and its handler instance wait here,
  and a request thread takes them up again when the next request (or EOF) arrives.

Each parked connection is a :class:`Parked` with its own deadline and two callbacks: ``resume()``
when it becomes readable (the loop calls it while a thread is free: ``accepting()``), ``close()``
when its deadline passes or the loop ends. What they do is the pipeline's business; this module
only holds, watches and times.

Threads. The loop's thread owns ``_waiting``, ``_deadlines`` and ``ready``. Any other thread (a
request thread parking its keep-alive connection) calls :meth:`Parking.park`, which puts the
connection in ``_inbox`` under ``_lock``; the loop takes the inbox in at the top of its next turn
(:meth:`admit`). Where the poller may be changed from any thread (epoll), ``park()`` also adds
the descriptor to it, under the same lock, and wakes the loop only when the new deadline comes
before the loop's next wakeup: the loop learns of the connection when it becomes readable (the
poller says so until it is served) or at that wakeup, whichever comes first; a park then costs
one epoll_ctl() and no thread switch. Elsewhere ``park()`` wakes the loop, which watches the
descriptor itself. Once the loop has ended (:meth:`close_all`), ``park()`` says no and the
caller closes the connection itself: nothing is ever left unowned.

When a loop ends, the connections it holds are closed, as the listener's backlog would be; but in
a worker process that stops gracefully (``fastserver.workers`` sets its LoopState's
``finish_until``), the loop first serves each new connection that speaks before its deadline, up
to the worker's ``graceful_timeout``: a worker finishes what it accepted. Idle keep-alive
connections are closed at once then (HTTP lets a server close an idle persistent connection).
"""

import heapq
import itertools
import selectors
import threading
from collections import deque
from time import monotonic


class Parked:
    """One parked connection: ``sock`` (its fileno() is watched) from ``client_address``, a
    monotonic() ``deadline``, and what to do with it. ``idle`` marks a keep-alive connection
    between requests (closed at once when a worker stops, where a new one is still served)."""

    __slots__ = ("sock", "client_address", "deadline", "resume", "close", "idle", "watched")

    def __init__(self, sock, client_address, deadline, resume, close, idle=False):
        self.sock = sock
        self.client_address = client_address
        self.deadline = deadline
        self.resume = resume
        self.close = close
        self.idle = idle
        self.watched = False  # in the poller already (park() from another thread, epoll)


class Parking:
    """The connections one loop holds until they are readable or their deadline passes.

    - ``watch(fd)`` / ``unwatch(fd)``: add or remove a descriptor in the loop's poller (the
      loop's thread only, unless ``watch_anywhere``: then ``watch`` from any thread);
      ``wake()``: end the loop's current wait (any thread);
    - ``first_data_timeout``, ``process(request, client_address)``, ``fail(request,
      client_address)`` and ``close(request)``: what :meth:`hold` does with a new connection
      (the loop's process_request, handle_error and shutdown_request); ``fail`` also runs,
      before ``close()``, when any ``resume()`` raises an Exception.
    """

    def __init__(self, watch, unwatch, wake, first_data_timeout, process, fail, close,
                 watch_anywhere=False):
        self._watch = watch
        self._watch_anywhere = watch_anywhere
        self._wakes_by = float("inf")  # the loop wakes by then (monotonic()): next_timeout()
        self._unwatch = unwatch
        self._wake = wake
        self.first_data_timeout = first_data_timeout
        self._process = process
        self._fail = fail
        self._close = close
        self._owner = threading.get_ident()  # the loop's thread
        self._lock = threading.Lock()  # _inbox and _closed, shared with parking threads
        self._inbox = []
        self._closed = False
        self._waiting = {}  # fd -> Parked, watched for readability
        self._deadlines = []  # heap of (deadline, order, Parked)
        self._order = itertools.count()  # ties in the heap never compare two Parked
        self.ready = deque()  # Parked, readable, waiting for a free thread

    def __len__(self):
        return len(self._waiting) + len(self.ready) + len(self._inbox)

    def park(self, parked):
        """Hold ``parked`` until it is readable; from any thread. False once the loop has ended
        (the caller closes the connection then). An OSError (a closed socket) parks nothing."""
        if threading.get_ident() == self._owner:
            if self._closed:
                return False
            self._hold(parked)
            return True
        with self._lock:
            if self._closed:
                return False
            if self._watch_anywhere:
                self._watch(parked.sock.fileno())  # under the lock: never after close_all()
                parked.watched = True
            self._inbox.append(parked)
        if not self._watch_anywhere or parked.deadline < self._wakes_by:
            self._wake()
        return True

    def hold(self, request, client_address, timeout=None):
        """Hold a new connection (the loop's thread) until it speaks, then process it; close it
        after ``timeout`` seconds (default: ``first_data_timeout``) of silence."""
        process, close = self._process, self._close
        self._hold(Parked(
            request, client_address,
            monotonic() + (self.first_data_timeout if timeout is None else timeout),
            lambda: process(request, client_address), lambda: close(request)))

    def _hold(self, parked):
        fd = parked.sock.fileno()
        if not parked.watched:
            self._watch(fd)
        self._waiting[fd] = parked
        heapq.heappush(self._deadlines, (parked.deadline, next(self._order), parked))

    def admit(self):
        """Watch what other threads parked since the last turn (the loop's thread)."""
        if not self._inbox:
            return
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for parked in inbox:
            try:
                self._hold(parked)
            except OSError:  # closed meanwhile: nothing to watch
                self._forget(parked)

    def _forget(self, parked):
        """Close a parked connection that is not in ``_waiting`` (the inbox's)."""
        if parked.watched:
            try:
                self._unwatch(parked.sock.fileno())
            except OSError:
                pass
        parked.close()

    def readable(self, fd):
        """The poller says ``fd`` is readable: queue its connection for a thread. False when
        ``fd`` is not a parked connection's."""
        parked = self._waiting.pop(fd, None)
        if parked is None:
            return False
        self._unwatch(fd)
        self.ready.append(parked)
        return True

    def _live(self, parked):
        try:
            return self._waiting.get(parked.sock.fileno()) is parked
        except OSError:
            return False

    def next_timeout(self):
        """Seconds until the next deadline (None: nothing waits)."""
        deadlines = self._deadlines
        while deadlines and not self._live(deadlines[0][2]):
            heapq.heappop(deadlines)  # became readable (its fd may since belong to another)
        if not deadlines:
            self._wakes_by = float("inf")
            return None
        self._wakes_by = deadlines[0][0]
        return max(deadlines[0][0] - monotonic(), 0.0)

    def expire(self):
        """Close the connections whose deadline has passed."""
        deadlines = self._deadlines
        now = monotonic()
        while deadlines and deadlines[0][0] <= now:
            parked = heapq.heappop(deadlines)[2]
            if self._live(parked):
                fd = parked.sock.fileno()
                del self._waiting[fd]
                self._unwatch(fd)
                parked.close()

    def dispatch(self, accepting=None):
        """Resume the readable connections, while ``accepting()`` (a free thread) allows."""
        ready = self.ready
        while ready and (accepting is None or accepting()):
            parked = ready.popleft()
            try:
                parked.resume()
            except Exception:
                self._fail(parked.sock, parked.client_address)
                parked.close()
            except BaseException:
                parked.close()
                raise

    def close_all(self, accepting=None, finish_until=None):
        """The loop ends: resume the readable connections that a free thread can take now, and
        close the rest and every one still waiting. With ``finish_until`` (a monotonic() time: a
        worker that stops), serve the new ones as they speak until then first."""
        with self._lock:
            self._closed = True
            inbox, self._inbox = self._inbox, []
        try:
            for parked in inbox:
                self._forget(parked)
            if finish_until is not None:
                self._serve_until(finish_until)
            self.dispatch(accepting)
        finally:
            waiting, self._waiting = self._waiting, {}
            ready, self.ready = self.ready, deque()
            self._deadlines.clear()
            for fd in waiting:
                self._unwatch(fd)
            for parked in [*waiting.values(), *ready]:
                parked.close()

    def _serve_until(self, deadline):
        """Serve the new connections as they speak, without the loop's poller (its loop has
        ended), each closed at its own deadline, until none is held or ``deadline`` passes.
        Idle keep-alive connections are closed at once."""
        loop_unwatch = self._unwatch
        for fd, parked in list(self._waiting.items()):
            if parked.idle:
                del self._waiting[fd]
                loop_unwatch(fd)
                parked.close()
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
                for fd, parked in silent.items():
                    selector.unregister(fd)
                    parked.close()
