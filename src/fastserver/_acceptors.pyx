# cython: language_level=3, embedsignature=True
"""Request threads that accept their own connections: ThreadingMixIn's default path on Linux.

Handing each connection from the loop thread to a request thread costs more CPU than a small
request: the loop wakes and takes the GIL to accept, wakes a worker, and the worker then waits for
the GIL that the loop holds until it sleeps again. Here the idle request threads wait on the
listening socket themselves, without the GIL, each in an epoll instance of its own registered
with EPOLLEXCLUSIVE, so that the kernel wakes one of them per connection. That thread accepts,
takes the GIL, runs the request, and then tries to accept the next one before it sleeps again.
The serve_forever() thread only waits for shutdown().

What the standard library promises is kept: one thread per concurrent request (a thread that
takes a connection while no other waits starts one first, so that the next connection never
waits for a request to end), no cap unless ``max_threads`` (then, while that many requests run,
nobody accepts and connections wait in the kernel's backlog), ``daemon_threads``, handle_error()
called in the request's thread, an exception that escapes a request going to
``threading.excepthook``. ``Acceptors.join()`` / ``close()`` serve ThreadingMixIn.server_close().
"""

cimport cython
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_release_lock, PyThread_type_lock,
)
from libc.errno cimport EAGAIN, ECONNABORTED, EINTR, EPROTO, errno
from posix.unistd cimport close

from fastserver._core cimport Dispatcher, next_backoff_ms, sockaddr_to_python
from fastserver._stream cimport begin_turn, give_turn, take_turn
from fastserver._poller cimport fs_accept, sockaddr, sockaddr_storage, socklen_t

import sys
import threading

from fastserver import _pool, _stream

cdef extern from "acceptor.h" nogil:
    const int fs_acceptors_supported
    int fs_acceptor_epoll(int listen_fd, int stop_fd)
    int fs_acceptor_wait(int epfd, int timeout_ms)
    int fs_acceptor_requeue(int epfd, int listen_fd)
    int fs_stop_open()
    int fs_stop_signal(int fd)
    int fs_stop_wait(int fd, int timeout_ms)
    void FS_CPU_RELAX()


cdef bint lock_try_spinning(PyThread_type_lock lock) noexcept nogil:
    """Take ``lock`` if it frees within a short spin. It is held for a few instructions or one
    accept(): a sleep and a wakeup on it cost far more than that wait."""
    cdef int _
    for _ in range(200):
        if PyThread_acquire_lock(lock, NOWAIT_LOCK):
            return True
        FS_CPU_RELAX()
    return False

SUPPORTED = bool(fs_acceptors_supported)
"""Whether this platform has them (Linux: epoll with EPOLLEXCLUSIVE)."""

# take()'s results besides a descriptor
cdef enum:
    EXIT = -1  # stopped, or retired after IDLE_MS


@cython.final
cdef class Worker:
    """One request thread and its epoll instance."""

    cdef int epfd
    cdef bint daemon, busy
    cdef bint spawn  # the connection just taken left nobody waiting: start a thread first
    cdef bint waited  # the last take() found no connection queued and waited
    cdef object thread

    def __cinit__(self):
        self.epfd = -1

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)


@cython.final
cdef class Acceptors:
    """The request threads of one serve_forever(): start() them, stop() them when it returns."""

    cdef object server
    cdef Dispatcher dispatcher  # the server's hooks, and how to wrap, finish and end a request
    cdef int listen_fd, stop_fd
    cdef int max_threads  # -1: no cap
    cdef int idle_ms  # a thread retires after this long without a connection, unless the last
    cdef bint daemon
    cdef bint shared  # worker processes share the listener: take turns with them
    cdef bint turns  # ThreadingMixIn.request_turns
    # Shared by the threads, under ``mutex`` (never held across a wait, never needs the GIL):
    cdef PyThread_type_lock mutex
    cdef bint stopped
    cdef int alive  # threads started and not exited
    cdef int waiting  # threads waiting for a connection
    cdef int starting  # threads started that have not looked for a connection yet
    # Under the GIL:
    cdef set workers
    cdef object __weakref__

    def __cinit__(self, server, Dispatcher dispatcher):
        self.stop_fd = -1
        self.mutex = PyThread_allocate_lock()
        if self.mutex == NULL:
            raise MemoryError()
        self.server = server
        self.workers = set()
        self.dispatcher = dispatcher
        self.listen_fd = dispatcher.listen_fd
        self.max_threads = -1 if server.max_threads is None else max(int(server.max_threads), 1)
        self.daemon = bool(server.daemon_threads)
        self.shared = server.worker_id is not None
        self.turns = bool(server.request_turns)
        self.idle_ms = max(<int>(_pool.IDLE_SECONDS * 1000), 1)
        self.stop_fd = fs_stop_open()
        if self.stop_fd < 0:
            raise OSError(errno, "eventfd")

    def __dealloc__(self):
        if self.stop_fd >= 0:
            close(self.stop_fd)
        if self.mutex != NULL:
            PyThread_free_lock(self.mutex)

    def __len__(self):
        """Threads alive, busy or waiting."""
        return len(self.workers)

    # --- for the loop and server_close()

    def start(self):
        """Start the first thread: it waits for a connection and starts more as they come."""
        self.lock()
        self.alive += 1
        self.starting += 1
        self.unlock()
        self.spawn()

    def stop(self):
        """Accept no more: waiting threads exit now, busy ones when their request ends. Once this
        returns no thread accepts a connection (they accept with the mutex held)."""
        self.lock()
        self.stopped = True
        self.unlock()
        fs_stop_signal(self.stop_fd)  # stays readable: every wait ends at once from now on

    def close(self):
        """stop(), for server_close() with block_on_close False (and at exit)."""
        self.stop()

    def join(self):
        """stop(), then wait for the threads (not for daemon threads' running requests)."""
        cdef Worker worker
        self.stop()
        current = threading.current_thread()
        for worker in list(self.workers):
            if worker.thread is not current and (not worker.daemon or not worker.busy):
                try:
                    worker.thread.join()
                except RuntimeError:
                    pass  # not started yet: it finds the threads stopped and exits

    def join_all(self):
        """stop(), then wait for every thread, those running a daemon thread's request too: a
        worker process that stops finishes what it accepted (ThreadPool.finish_jobs())."""
        cdef Worker worker
        self.stop()
        current = threading.current_thread()
        for worker in list(self.workers):  # none starts a request after stop()
            if worker.thread is not current:
                try:
                    worker.thread.join()
                except RuntimeError:
                    pass  # not started yet: it finds the threads stopped and exits

    # --- the mutex: held only for a few instructions or a non-blocking accept()

    cdef inline void lock(self) noexcept:
        """Take the mutex with the GIL held: without it if the mutex is busy."""
        if not lock_try_spinning(self.mutex):
            with nogil:
                PyThread_acquire_lock(self.mutex, WAIT_LOCK)

    cdef inline void unlock(self) noexcept nogil:
        PyThread_release_lock(self.mutex)

    cdef inline bint want_watcher(self) noexcept nogil:
        """With the mutex held, after taking a connection: True (and counted) when a thread must
        be started so that one waits for the next connection."""
        if self.waiting + self.starting > 0 or self.stopped:
            return False
        if 0 <= self.max_threads <= self.alive:
            return False
        self.alive += 1
        self.starting += 1
        return True

    cdef int accept_locked(self, sockaddr_storage *addr, socklen_t *length) noexcept nogil:
        """accept() with the mutex held: a descriptor, or -1 (errno says why, unless stopped)."""
        cdef int fd
        if self.stopped:
            return -1
        while True:
            length[0] = sizeof(sockaddr_storage)
            fd = fs_accept(self.listen_fd, <sockaddr *>addr, length)
            if fd >= 0 or (errno != EINTR and errno != ECONNABORTED and errno != EPROTO):
                return fd

    # --- the threads

    cdef int spawn(self) except -1:
        """Start a thread counted in alive and starting (by start() or want_watcher())."""
        cdef Worker worker = Worker()
        worker.daemon = self.daemon
        try:
            worker.thread = threading.Thread(target=self.run, args=(worker,), daemon=self.daemon,
                                             name=f"fastserver-{next(_pool._names)}")
            self.workers.add(worker)
            worker.thread.start()
        except BaseException:
            self.workers.discard(worker)
            self.lock()
            self.alive -= 1
            self.starting -= 1
            self.unlock()
            raise
        return 0

    def run(self, Worker worker):
        """A request thread: take connections and serve them until stopped or retired."""
        cdef sockaddr_storage addr
        cdef socklen_t length = 0
        cdef int fd
        cdef bint first = True
        worker.epfd = fs_acceptor_epoll(self.listen_fd, self.stop_fd)
        if self.turns:
            _stream.enroll(True)
        try:
            while True:
                fd = self.take(worker, &addr, &length, first)
                first = False
                if fd == EXIT:
                    return
                worker.busy = True
                try:
                    self.serve(worker, fd, &addr, length)
                except BaseException:
                    # As a dying Thread would report it; the thread itself carries on.
                    threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(),
                                                                   worker.thread)))
                worker.busy = False
        finally:
            self.workers.discard(worker)
            close(worker.epfd)
            worker.epfd = -1

    cdef int take(self, Worker worker, sockaddr_storage *addr, socklen_t *length,
                  bint first) except? -2:
        """The next connection: at once if one is queued, else after a wait without the GIL;
        EXIT to end the thread. Sets ``worker.spawn``. A thread that had to wait last time goes
        straight to the wait (which ends at once if a connection is queued): an accept() that
        fails costs a syscall, and contends with the kernel's handshakes for the listener."""
        cdef int fd = -1, err = EAGAIN
        cdef bint spawn = False, wait = False
        self.lock()
        if first:
            self.starting -= 1
        if not worker.waited or self.stopped:
            fd = self.accept_locked(addr, length)
            err = errno
        if fd >= 0:
            spawn = self.want_watcher()
        elif self.stopped:
            self.alive -= 1
        else:
            self.waiting += 1
            wait = True
        self.unlock()
        if fd >= 0:
            self.dispatcher.set_nodelay(fd)
            begin_turn()
        elif wait:
            with nogil:
                fd = self.wait_and_accept(worker, addr, length, err, &spawn)
        worker.spawn = spawn
        worker.waited = wait
        return fd if fd >= 0 else EXIT

    cdef int wait_and_accept(self, Worker worker, sockaddr_storage *addr, socklen_t *length,
                             int err, bint *spawn) noexcept nogil:
        """take() past an empty backlog (``err``: why accept() failed), counted in waiting: the
        descriptor, or -1 when the thread stops or retires."""
        cdef int fd, ready, backoff_ms = 0
        while True:
            if worker.epfd < 0:  # out of descriptors when the thread started: retry
                worker.epfd = fs_acceptor_epoll(self.listen_fd, self.stop_fd)
                if worker.epfd < 0:
                    err = errno
            if err != EAGAIN or worker.epfd < 0:  # EMFILE & co: accept() fails at once
                backoff_ms = next_backoff_ms(backoff_ms)  # out of descriptors: as the loop
                ready = fs_stop_wait(self.stop_fd, backoff_ms)
            else:
                backoff_ms = 0
                ready = fs_acceptor_wait(worker.epfd, self.idle_ms)
            if not lock_try_spinning(self.mutex):
                PyThread_acquire_lock(self.mutex, WAIT_LOCK)
            if self.stopped or (ready == 0 and backoff_ms == 0 and self.waiting > 1):
                self.waiting -= 1  # stopped, or idle while others wait: retire
                self.alive -= 1
                self.unlock()
                return -1
            fd = self.accept_locked(addr, length)
            if fd >= 0:
                self.waiting -= 1
                spawn[0] = self.want_watcher()
                self.unlock()
                if self.shared and worker.epfd >= 0:
                    fs_acceptor_requeue(worker.epfd, self.listen_fd)  # the next one for another
                self.dispatcher.set_nodelay(fd)  # before the GIL is taken again: held less long
                take_turn()
                return fd
            err = errno
            self.unlock()

    cdef int serve(self, Worker worker, int fd, sockaddr_storage *addr,
                   socklen_t length) except -1:
        """process_request_thread(): finish_request(), handle_error() on an Exception, and
        shutdown_request() in any case. A thread that fails to start is reported as the stdlib
        reports it (handle_error() for the request, which is then closed)."""
        cdef Dispatcher dispatcher = self.dispatcher
        request = dispatcher.wrap(fd)
        client_address = sockaddr_to_python(addr, length)
        try:
            if worker.spawn:
                worker.spawn = False
                self.spawn()
            dispatcher.finish(request, client_address)
        except Exception:
            self.server.handle_error(request, client_address)
        finally:
            try:
                dispatcher.end_request(request)
            finally:
                give_turn()
        return 0
