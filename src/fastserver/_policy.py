"""What both cores decide, written once: they differ only in how they wait and accept.

- which accept() errors mean "try the next connection", and which "out of resources: back off";
- the back-off: the delays between accept() attempts while descriptors or memory run out;
- how many connections a loop accepts per readiness;
- how long a serve_forever() loop waits (:class:`Pacing`), and whether it polls the listener;
- how long handle_request() waits, and what it does when the time is up (:func:`handle_request`).

The compiled core copies the constants into C when it is imported; the decisions it makes per
wakeup (not per connection) it asks :class:`Pacing` for, as the pure core does.
"""

import errno
from time import monotonic

#: accept() failed because the peer gave up while queued: take the next connection at once.
PEER_GONE = frozenset((errno.ECONNABORTED, errno.EPROTO))
#: accept() fails at once for as long as this lasts: instead of spinning (the stdlib's loop
#: does), leave the client queued and retry after :data:`BACKOFF_MS`.
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
#: Milliseconds to wait before each further accept() while out of resources: doubling, capped.
BACKOFF_MS = (1, 2, 4, 8, 16, 32, 50)
#: Connections a loop accepts per readiness before it looks at its wakeup descriptor again.
#: A server that overrides service_actions() (ForkingMixIn: reaping, max_children) gets one:
#: the stdlib calls it between requests.
ACCEPT_BATCH = 32


class Pacing:
    """One serve_forever() loop's decisions: how long to wait, and whether to poll the listener.

    The loop reports what happened with :meth:`accepted` after it handled the listener, and
    calls :meth:`resume` after each wait: a loop that backs off skips the listener once.
    """

    __slots__ = ("poll_interval", "_step", "_paused")

    def __init__(self, poll_interval):
        self.poll_interval = poll_interval  # seconds, or None: wait until woken
        self._step = -1  # index into BACKOFF_MS of the current delay; -1: not backing off
        self._paused = False

    def listener_wanted(self, accepting=None, parking=None):
        """Whether the listener is polled in the next wait: not while backing off, nor while a
        readable parked connection waits for a thread, nor while no thread is free
        (``accepting()`` says no) for a new connection (one the loop holds until it speaks
        needs none)."""
        if self._paused:
            return False
        if parking is not None:
            if parking.ready:
                return False
            if parking.first_data_timeout is not None:
                return True
        return accepting is None or accepting()

    def timeout(self, parking=None):
        """Seconds the next wait may last (None: until woken)."""
        timeout = self.poll_interval
        if self._paused:
            delay = BACKOFF_MS[self._step] / 1000
            if timeout is None or timeout > delay:
                timeout = delay
        if parking is not None:
            due = parking.next_timeout()
            if due is not None and (timeout is None or due < timeout):
                timeout = due
        return timeout

    def resume(self):
        """After a wait: True if the loop was backing off (it then leaves the listener alone this
        once: the wait was the back-off, or a wakeup such as a freed thread cut it short)."""
        paused, self._paused = self._paused, False
        return paused

    def accepted(self, err):
        """The listener was handled; ``err`` is the errno of its last failed accept (0: none)."""
        if err in OUT_OF_RESOURCES:
            self._step = min(self._step + 1, len(BACKOFF_MS) - 1)
            self._paused = True
        else:
            self._step = -1


def request_timeout(server):
    """Seconds handle_request() waits: the shorter of the socket's timeout and server.timeout
    (None: no limit), as the standard library decides."""
    timeout = server.socket.gettimeout()
    if timeout is None:
        return server.timeout
    if server.timeout is not None:
        return min(timeout, server.timeout)
    return timeout


def handle_request(server, wait_readable, handle_one):
    """The standard library's handle_request(), over a core's mechanics.

    ``wait_readable(seconds)`` waits for the listener (None: no limit) and says whether it is
    ready; False may also mean "interrupted, wait again". ``handle_one()`` then handles a request
    and its value is returned. When the timeout passes first, ``server.handle_timeout()`` runs.
    """
    timeout = request_timeout(server)
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        if wait_readable(timeout):
            return handle_one()
        if deadline is not None:
            timeout = deadline - monotonic()
            if timeout < 0:
                return server.handle_timeout()
