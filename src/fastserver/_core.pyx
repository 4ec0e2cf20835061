# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""The compiled core: serve_forever() and handle_request() over the C poller.

The loop waits without the GIL on the listening socket and a wakeup descriptor, accepts with
accept4() (close-on-exec) in batches with the GIL held on a listener it made non-blocking, and
dispatches each connection as ``BaseServer._handle_request_noblock`` would. It sees a server
through the seam (``fastserver._seam``): the server's LoopState, and the Hooks the API layer
found for this loop, called exactly where the standard library calls them; the defaults run
here without a Python call. What it decides is ``fastserver._policy``'s; ``_core_py`` is its
pure-Python twin.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno
from libc.math cimport ceil

from fastserver._dispatch cimport Dispatcher
from fastserver.includes.csrc cimport *
from fastserver.includes.errors cimport (after_failed_wait, monotonic, ms_until, raise_errno,
                                         raise_oserror)

from fastserver import _acceptors, _policy
from fastserver._parking import Parking

POLLER = fs_poller_name.decode()

cdef int ACCEPT_BATCH = _policy.ACCEPT_BATCH
cdef int EVENTS_MAX = 64  # the size of the loop's event array


cdef int timeout_ms(object seconds) except? -2:
    """poll_interval in seconds -> milliseconds for the poller, rounded up (None: -1, forever)."""
    if seconds is None:
        return -1
    cdef double s = seconds
    if s <= 0:
        return 0
    if s > 2000000.0:
        return 2000000000
    return <int>ceil(s * 1000.0)


cdef class Loop:
    """One serve_forever() run: the poller, the wakeup descriptor, and the loop itself."""

    cdef fs_poller *poller  # the serve_forever() thread's alone
    cdef int wake_r, wake_w
    cdef bint closed
    # wake() runs in any thread (shutdown(), a signal handler, a freed request thread) and
    # close() in the loop's: under this mutex, wake() never writes to a descriptor that close()
    # freed and the process may have reused.
    cdef cython.pymutex lock

    def __cinit__(self):
        self.wake_r = self.wake_w = -1
        self.poller = fs_poller_new()
        if self.poller == NULL:
            raise_errno()
        if (fs_wakeup_open(&self.wake_r, &self.wake_w) < 0
                or fs_poller_add(self.poller, self.wake_r, FS_READABLE) < 0):
            err = errno
            self.close()
            raise_oserror(err)

    def __dealloc__(self):
        self.close()

    def close(self):
        """Free the poller and the wakeup descriptor; wake() does nothing afterwards."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            fs_wakeup_close(self.wake_r, self.wake_w)
            fs_poller_free(self.poller)
            self.poller = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wake(self):
        """End the current wait at once (shutdown() calls it); from any thread."""
        cdef int err = 0
        with self.lock:
            if not self.closed and fs_wakeup_signal(self.wake_w) < 0:
                err = errno
        if err:
            raise_oserror(err)

    def sleep(self, seconds):
        """Wait until wake() or for ``seconds`` (the workers' supervisor waits so)."""
        cdef fs_event events[1]
        cdef int n = self.wait(events, 1, timeout_ms(seconds))
        if n > 0:
            fs_wakeup_drain(self.wake_r)

    def watch(self, int fd):
        """Add ``fd`` to the poller, for readability (a parked connection); from any thread
        with epoll (the kernel's own lock), else from the loop's only."""
        if fs_poller_add(self.poller, fd, FS_READABLE) < 0:
            raise_errno()

    def unwatch(self, int fd):
        fs_poller_remove(self.poller, fd)

    def serve_forever(self, server, state, hooks, poll_interval):
        """The standard library's serve_forever loop over ``server``, until
        ``state.shutdown_request``; waiting in C and woken by wake()."""
        if self.closed:
            raise ValueError("serve_forever() on a closed Loop")
        cdef Dispatcher dispatcher = Dispatcher(server, hooks)
        cdef int listen_fd = dispatcher.listen_fd
        cdef int was_nonblocking = 0
        if dispatcher.accept_in_c and hooks.threads_accept and _acceptors.SUPPORTED:
            return self.serve_with_acceptors(server, state, dispatcher, poll_interval)
        if fs_poller_add(self.poller, listen_fd, FS_READABLE) < 0:
            raise_errno()
        if dispatcher.accept_in_c and fs_set_nonblocking(listen_fd, 1, &was_nonblocking) < 0:
            fs_poller_remove(self.poller, listen_fd)
            raise_errno()
        parking = None
        if hooks.first_data_timeout is not None or hooks.keep_alive is not None:
            parking = Parking(self.watch, self.unwatch, self.wake, hooks.first_data_timeout,
                              dispatcher.process_silent, server.handle_error,
                              dispatcher.close_silent, POLLER == "epoll")
            if hooks.first_data_timeout is not None:
                dispatcher.silent = parking  # new connections are held until they speak
            state.parking = parking  # as the pure core: process_request() may park again
        try:
            self.run(state, dispatcher, parking, _policy.Pacing(poll_interval))
        finally:
            state.parking = None
            try:
                if parking is not None:
                    parking.close_all(hooks.accepting, state.finish_until)
            finally:
                if dispatcher.accept_in_c and not was_nonblocking:
                    fs_set_nonblocking(listen_fd, 0, NULL)
                fs_poller_remove(self.poller, listen_fd)

    cdef int run(self, state, Dispatcher dispatcher, parking, pacing) except -1:
        cdef fs_event events[64]
        cdef int n, i
        cdef bint listener_ready, armed = True, wanted
        accepting = dispatcher.hooks.accepting
        while not state.shutdown_request:
            if parking is not None:
                parking.admit()
            wanted = pacing.listener_wanted(accepting, parking)
            if wanted != armed:
                if wanted:
                    if fs_poller_add(self.poller, dispatcher.listen_fd, FS_READABLE) < 0:
                        raise_errno()
                else:
                    fs_poller_remove(self.poller, dispatcher.listen_fd)
                armed = wanted
            n = self.wait(events, EVENTS_MAX, timeout_ms(pacing.timeout(parking)))
            if state.shutdown_request:
                break
            listener_ready = False
            for i in range(n):
                if events[i].fd == self.wake_r:
                    fs_wakeup_drain(self.wake_r)
                elif events[i].fd == dispatcher.listen_fd:
                    listener_ready = True
                else:
                    parking.readable(events[i].fd)
            if parking is not None:
                parking.expire()
                parking.dispatch(accepting)
            if not pacing.resume() and listener_ready:
                dispatcher.handle_ready(
                    state, ACCEPT_BATCH if dispatcher.service_actions is None else 1,
                    accepting if dispatcher.silent is None else None)
                pacing.accepted(dispatcher.accept_error)
            if dispatcher.service_actions is not None:
                dispatcher.service_actions()
        if not armed:  # serve_forever() removes it
            fs_poller_add(self.poller, dispatcher.listen_fd, FS_READABLE)
        return 0

    cdef int serve_with_acceptors(self, server, state, Dispatcher dispatcher,
                                  poll_interval) except -1:
        """ThreadingMixIn's default path: the request threads accept the connections themselves
        (see fastserver._acceptors) and this thread only waits for shutdown(), and watches the
        keep-alive connections they park (``hooks.keep_alive``): those that speak again go to
        the server's thread pool."""
        cdef fs_event events[64]
        cdef int was_nonblocking = 0, n
        cdef int listen_fd = dispatcher.listen_fd
        hooks = dispatcher.hooks
        parking = None
        if fs_set_nonblocking(listen_fd, 1, &was_nonblocking) < 0:
            raise_errno()
        try:
            if hooks.keep_alive is not None:
                parking = Parking(self.watch, self.unwatch, self.wake, None, None,
                                  server.handle_error, dispatcher.close_silent,
                                  POLLER == "epoll")
                state.parking = parking
            threads = _acceptors.Acceptors(server, dispatcher)
            hooks.thread_pool().adopt(threads)
            try:
                threads.start()
                if parking is None:
                    n = timeout_ms(poll_interval)
                    while not state.shutdown_request:
                        if self.wait(events, 1, n) > 0:  # the wakeup descriptor: all it waits on
                            fs_wakeup_drain(self.wake_r)
                else:
                    self.watch_parked(state, parking, _policy.Pacing(poll_interval))
            finally:
                state.parking = None
                try:
                    if parking is not None:
                        parking.close_all(None, state.finish_until)
                finally:
                    threads.stop()
        finally:
            if not was_nonblocking:
                fs_set_nonblocking(listen_fd, 0, NULL)
        return 0

    cdef int watch_parked(self, state, parking, pacing) except -1:
        """The loop of serve_with_acceptors() while request threads park connections: the
        wakeup descriptor and the parked connections, until shutdown()."""
        cdef fs_event events[64]
        cdef int n, i
        while not state.shutdown_request:
            parking.admit()
            n = self.wait(events, EVENTS_MAX, timeout_ms(pacing.timeout(parking)))
            if state.shutdown_request:
                break
            for i in range(n):
                if events[i].fd == self.wake_r:
                    fs_wakeup_drain(self.wake_r)
                else:
                    parking.readable(events[i].fd)
            parking.expire()
            parking.dispatch()
        return 0

    cdef int wait(self, fs_event *events, int capacity, int ms) except -1:
        """Wait without the GIL, up to ``ms`` (-1: until woken); a signal runs its Python handler
        (which may raise) and the wait goes on for what is left of the timeout (PEP 475)."""
        cdef int n, err
        cdef double deadline = monotonic() + ms / 1000.0 if ms > 0 else 0.0
        while True:
            with nogil:
                n = fs_poller_wait(self.poller, events, capacity, ms)
                err = errno
            if n >= 0:
                # A signal that another thread took (no EINTR here), or that came while this
                # thread ran C code, has its handler run now, as the interpreter would run it at
                # its next bytecode: within poll_interval (a no-op outside the main thread).
                PyErr_CheckSignals()
                return n
            after_failed_wait(err)
            if ms > 0:
                ms = ms_until(deadline)


def handle_request(server, hooks):
    """The standard library's handle_request(): wait up to the timeout, then handle one request."""
    cdef Dispatcher dispatcher = Dispatcher(server, hooks)
    return _policy.handle_request(
        server, lambda timeout: wait_readable(dispatcher.listen_fd, timeout_ms(timeout)),
        lambda: handle_one(dispatcher))


cdef object handle_one(Dispatcher dispatcher):
    cdef int was_nonblocking = 0
    if dispatcher.handle_noblock is not None:
        return dispatcher.handle_noblock()  # handle_request() returns what it returns
    if not dispatcher.accept_in_c:
        dispatcher.handle_ready(None, 1)
        return None
    if fs_set_nonblocking(dispatcher.listen_fd, 1, &was_nonblocking) < 0:
        raise_errno()
    try:
        request = dispatcher.accept()
    finally:
        if not was_nonblocking:
            fs_set_nonblocking(dispatcher.listen_fd, 0, NULL)
    if request is not None:
        dispatcher.dispatch(request[0], request[1])
    return None


cdef bint wait_readable(int fd, int ms) except -1:
    """Wait without the GIL; after a signal (its Python handler may raise) say not ready, so
    that the caller waits again for what is left of its timeout."""
    cdef int ready, err
    with nogil:
        ready = fs_wait_readable(fd, ms)
        err = errno
    if ready >= 0:
        return ready
    after_failed_wait(err)
    return False
