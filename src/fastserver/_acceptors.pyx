# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Request threads that accept their own connections: ThreadingMixIn's default path on Linux.

Handing each connection from the loop thread to a request thread costs more CPU than a small
request: the loop wakes and takes the GIL to accept, wakes a request thread, which then waits for
the GIL that the loop holds until it sleeps again. Here the idle request threads wait on the
listening socket themselves, without the GIL, so that the kernel wakes one of them per
connection. That thread accepts, takes the GIL, runs the request, and then tries to accept the
next one before it sleeps again. The serve_forever() thread only waits for shutdown().

A thread waits on the listener in one of a few waiting slots (``SLOTS``), each an epoll instance
registered with EPOLLEXCLUSIVE: the kernel wakes one slot's thread per connection. Idle threads
beyond those park without a descriptor, on a lock of their own, and the most recently parked one
is woken to take a slot when a thread takes the last waiter's place. A thread that ends a request
takes a free slot itself before it parks, so that the usual path wakes nobody but the one thread
the connection needs. The request threads of one serve_forever() thus hold ``SLOTS`` epoll
instances and one eventfd at most, whatever their number, where the stdlib's hold none.

What the standard library promises is kept: one thread per concurrent request (a thread that
takes a connection while no other waits wakes or starts one first, so that the next connection
never waits for a request to end), no cap unless ``max_threads`` (then, while that many requests
run, nobody accepts and connections wait in the kernel's backlog), ``daemon_threads``,
handle_error() called in the request's thread, an exception that escapes a request going to
``threading.excepthook``. ``Acceptors.join()`` / ``close()`` serve ThreadingMixIn.server_close().
Idle threads retire after ``_pool.IDLE_SECONDS`` (the last one waiting stays), and stop() wakes
every waiting and parked thread at once.
"""

cimport cython
from cpython.pythread cimport (
    NOWAIT_LOCK, PY_LOCK_ACQUIRED, WAIT_LOCK, PyLockStatus, PyThread_acquire_lock,
    PyThread_allocate_lock, PyThread_free_lock, PyThread_release_lock, PyThread_type_lock,
)
from libc.errno cimport EAGAIN, EINTR, errno
from posix.unistd cimport close

from fastserver._dispatch cimport Dispatcher, next_backoff_ms, peer_gone, sockaddr_to_python
from fastserver._turns cimport begin_turn, give_turn, take_turn
from fastserver.includes.csrc cimport *
from fastserver.includes.system cimport sockaddr, sockaddr_storage, socklen_t

import sys
import threading

from fastserver import _pool, _turns

cdef extern from "pythread.h" nogil:
    ctypedef long long PY_TIMEOUT_T
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, PY_TIMEOUT_T microseconds,
                                             int intr_flag)


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

cdef enum:
    # take()'s result besides a descriptor
    EXIT = -1  # stopped, or retired after IDLE_MS
    # At most this many idle threads wait on the listener, each in its slot's epoll instance.
    # More than the requests that usually begin at the same moment (a thread that takes the last
    # waiter's place wakes a parked one), few enough to cost nothing beside the connections.
    SLOT_COUNT = 8
    # RequestThread.slot, besides a slot's index
    NO_SLOT = -1  # not waiting, or waiting on the listener without a slot (no descriptor left)
    PARKED = -2  # in Acceptors.parked
    # Parking.state
    IDLE = 0  # parked, and nobody has released its lock
    PROMOTED = 1  # taken out by a thread that left nobody waiting: look for a connection
    RELEASED = 2  # taken out by stop(): exit

SLOTS = SLOT_COUNT
"""How many idle request threads at most wait on the listener, each in an epoll instance: all
the descriptors (but one eventfd) that the request threads of one serve_forever() hold."""


cdef struct Parking:
    # A thread's place in Acceptors.parked: its links and state under Acceptors.mutex.
    PyThread_type_lock wake  # held but from a release (promote or stop) to the thread's acquire
    Parking *newer
    Parking *older
    int state


@cython.final
cdef class RequestThread:
    """One request thread, and the lock it parks on."""

    cdef Parking parking
    cdef int slot  # while it waits: a slot's index, NO_SLOT or PARKED (set by its thread, locked)
    cdef bint daemon
    cdef int busy  # in a request (a bool): written by its thread, read by join(), as atomics
    cdef bint spawn  # the connection just taken left nobody waiting: start a thread first
    cdef bint waited  # the last take() found no connection queued and waited
    cdef object thread

    def __cinit__(self):
        self.slot = NO_SLOT
        self.parking.wake = PyThread_allocate_lock()
        if self.parking.wake == NULL:
            raise MemoryError()
        PyThread_acquire_lock(self.parking.wake, NOWAIT_LOCK)

    def __dealloc__(self):
        if self.parking.wake != NULL:
            PyThread_release_lock(self.parking.wake)
            PyThread_free_lock(self.parking.wake)


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
    cdef int waiting  # threads waiting on the listener (in a slot, or backing off without one)
    cdef int starting  # threads started or promoted that have not looked for a connection yet
    cdef int slot_fds[SLOT_COUNT]  # each slot's epoll instance, made when first needed (or -1)
    cdef bint slot_taken[SLOT_COUNT]  # a thread waits in it: only that thread uses its instance
    cdef Parking *parked  # idle threads without a slot, the most recently parked first
    # Under the GIL:
    # Under ``members`` (a start, an exit and a join may run at once in different threads):
    cdef cython.pymutex members
    cdef set threads  # the RequestThreads alive
    cdef list leaving  # the threading.Threads of those that left it: still ending
    cdef object __weakref__

    def __cinit__(self, server, Dispatcher dispatcher):
        cdef int slot
        self.stop_fd = -1
        for slot in range(SLOT_COUNT):
            self.slot_fds[slot] = -1
        self.mutex = PyThread_allocate_lock()
        if self.mutex == NULL:
            raise MemoryError()
        self.server = server
        self.threads = set()
        self.leaving = []
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
        cdef int slot
        for slot in range(SLOT_COUNT):
            if self.slot_fds[slot] >= 0:
                close(self.slot_fds[slot])
        if self.stop_fd >= 0:
            close(self.stop_fd)
        if self.mutex != NULL:
            PyThread_free_lock(self.mutex)

    def __len__(self):
        """Threads alive, busy or waiting."""
        return len(self.threads)

    # --- for the loop and server_close()

    def start(self):
        """Start the first thread: it waits for a connection and starts more as they come."""
        self.lock()
        self.alive += 1
        self.starting += 1
        self.unlock()
        self.spawn()

    def stop(self):
        """Accept no more: waiting and parked threads exit now, busy ones when their request
        ends. Once this returns no thread accepts a connection (they accept with the mutex
        held)."""
        cdef Parking *released
        cdef Parking *parking
        self.lock()
        self.stopped = True
        released, self.parked = self.parked, NULL
        parking = released
        while parking != NULL:
            parking.state = RELEASED
            parking = parking.older
        self.unlock()
        fs_stop_signal(self.stop_fd)  # stays readable: every wait ends at once from now on
        while released != NULL:
            parking, released = released, released.older  # before the thread can go
            PyThread_release_lock(parking.wake)

    def close(self):
        """stop(), for server_close() with block_on_close False (and at exit)."""
        self.stop()

    def join(self):
        """stop(), then wait for the threads (not for daemon threads' running requests)."""
        cdef RequestThread each
        self.stop()
        current = threading.current_thread()
        for each in self.members_now():
            if each.thread is not current and (not each.daemon or not fs_load_int(&each.busy)):
                try:
                    each.thread.join()
                except RuntimeError:
                    pass  # not started yet: it finds the threads stopped and exits
        self.join_leaving()

    def join_all(self):
        """stop(), then wait for every thread, those running a daemon thread's request too: a
        worker process that stops finishes what it accepted (ThreadPool.finish_jobs())."""
        cdef RequestThread each
        self.stop()
        current = threading.current_thread()
        for each in self.members_now():  # none starts a request after stop()
            if each.thread is not current:
                try:
                    each.thread.join()
                except RuntimeError:
                    pass  # not started yet: it finds the threads stopped and exits
        self.join_leaving()

    cdef list members_now(self):
        with self.members:
            return list(self.threads)

    cdef int join_leaving(self) except -1:
        """Wait for the threads that have left ``threads`` and are ending (their request and
        its hooks are over: a moment), so that none outlives server_close()."""
        current = threading.current_thread()
        with self.members:
            leaving, self.leaving = self.leaving, []
        for thread in leaving:
            if thread is not current:
                thread.join()
        return 0

    # --- the mutex: held only for a few instructions or a non-blocking accept()

    cdef inline void lock(self) noexcept:
        """Take the mutex with the GIL held: without it if the mutex is busy."""
        if not lock_try_spinning(self.mutex):
            with nogil:
                PyThread_acquire_lock(self.mutex, WAIT_LOCK)

    cdef inline void lock_nogil(self) noexcept nogil:
        if not lock_try_spinning(self.mutex):
            PyThread_acquire_lock(self.mutex, WAIT_LOCK)

    cdef inline void unlock(self) noexcept nogil:
        PyThread_release_lock(self.mutex)

    # --- what follows runs with the mutex held

    cdef inline bint want_watcher(self, Parking **promote) noexcept nogil:
        """After taking a connection: make sure a thread will wait for the next one. Sets
        ``promote`` to a parked thread to wake (after the mutex) for it, or returns True (and
        counts it) when a thread must be started."""
        if self.waiting + self.starting > 0 or self.stopped:
            return False
        if self.parked != NULL:
            promote[0] = self.parked
            self.unlink(self.parked)
            promote[0].state = PROMOTED
            self.starting += 1
            return False
        if 0 <= self.max_threads <= self.alive:
            return False
        self.alive += 1
        self.starting += 1
        return True

    cdef int accept_locked(self, sockaddr_storage *addr, socklen_t *length) noexcept nogil:
        """accept(): a descriptor, or -1 (errno says why, unless stopped)."""
        cdef int fd
        if self.stopped:
            return -1
        while True:
            length[0] = sizeof(sockaddr_storage)
            fd = fs_accept(self.listen_fd, <sockaddr *>addr, length)
            if fd >= 0 or (errno != EINTR and not peer_gone(errno)):
                return fd

    cdef int free_slot(self) noexcept nogil:
        """A slot nobody waits in, its epoll instance made if it had none; NO_SLOT if every
        slot is taken or no instance can be made (out of descriptors)."""
        cdef int slot, unmade = NO_SLOT
        for slot in range(SLOT_COUNT):
            if not self.slot_taken[slot]:
                if self.slot_fds[slot] >= 0:
                    return slot
                if unmade == NO_SLOT:
                    unmade = slot
        if unmade != NO_SLOT:
            self.slot_fds[unmade] = fs_acceptor_epoll(self.listen_fd, self.stop_fd)
            if self.slot_fds[unmade] < 0:
                return NO_SLOT
        return unmade

    cdef void enqueue(self, RequestThread me) noexcept nogil:
        """A thread found no connection: it waits in a free slot, else it parks (or, when no
        other thread waits and no slot can be had, it waits without one)."""
        cdef int slot = self.free_slot()
        if slot == NO_SLOT and self.waiting > 0:
            me.parking.state = IDLE
            me.parking.newer = NULL
            me.parking.older = self.parked
            if self.parked != NULL:
                self.parked.newer = &me.parking
            self.parked = &me.parking
            me.slot = PARKED
            return
        me.slot = slot
        if slot >= 0:
            self.slot_taken[slot] = True
        self.waiting += 1

    cdef inline void leave(self, RequestThread me) noexcept nogil:
        """A waiting thread stops waiting (to accept, or to exit)."""
        if me.slot >= 0:
            self.slot_taken[me.slot] = False
        me.slot = NO_SLOT
        self.waiting -= 1

    cdef inline void unlink(self, Parking *parking) noexcept nogil:
        if parking.newer != NULL:
            parking.newer.older = parking.older
        else:
            self.parked = parking.older
        if parking.older != NULL:
            parking.older.newer = parking.newer
        parking.newer = parking.older = NULL

    cdef void requeue(self, int slot) noexcept nogil:
        """Put the slot behind the other processes' in the listener's queue of waiters (see
        fs_acceptor_requeue()). Should that fail, the slot's instance is made anew when next
        needed."""
        if fs_acceptor_requeue(self.slot_fds[slot], self.listen_fd) < 0:
            close(self.slot_fds[slot])
            self.slot_fds[slot] = -1

    # --- the threads

    cdef int spawn(self) except -1:
        """Start a thread counted in alive and starting (by start() or want_watcher())."""
        cdef RequestThread started = RequestThread()
        started.daemon = self.daemon
        try:
            started.thread = threading.Thread(target=self.run, args=(started,),
                                              daemon=self.daemon,
                                              name=_pool.thread_name())
            with self.members:
                self.leaving = [thread for thread in self.leaving if thread.is_alive()]
                self.threads.add(started)
            started.thread.start()
        except BaseException:
            with self.members:
                self.threads.discard(started)
            self.lock()
            self.alive -= 1
            self.starting -= 1
            self.unlock()
            raise
        return 0

    def run(self, RequestThread me):
        """A request thread: take connections and serve them until stopped or retired."""
        cdef sockaddr_storage addr
        cdef socklen_t length = 0
        cdef int fd
        cdef bint first = True
        if self.turns:
            _turns.enroll(True)
        try:
            while True:
                fd = self.take(me, &addr, &length, first)
                first = False
                if fd == EXIT:
                    return
                fs_store_int(&me.busy, True)
                try:
                    self.serve(me, fd, &addr, length)
                except BaseException:
                    # As a dying Thread would report it; the thread itself carries on.
                    threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(),
                                                                   me.thread)))
                fs_store_int(&me.busy, False)
        finally:
            with self.members:
                self.leaving.append(me.thread)
                self.threads.discard(me)

    cdef int take(self, RequestThread me, sockaddr_storage *addr, socklen_t *length,
                  bint first) except? -2:
        """The next connection: at once if one is queued, else after a wait without the GIL;
        EXIT to end the thread. Sets ``me.spawn``. A thread that had to wait last time goes
        straight to the wait (which ends at once if a connection is queued): an accept() that
        fails costs a syscall, and contends with the kernel's handshakes for the listener."""
        cdef int fd = -1, err = EAGAIN
        cdef bint spawn = False, wait = False
        cdef Parking *promote = NULL
        self.lock()
        if first:
            self.starting -= 1
        if not me.waited or self.stopped:
            fd = self.accept_locked(addr, length)
            err = errno
        if fd >= 0:
            spawn = self.want_watcher(&promote)
        elif self.stopped:
            self.alive -= 1
        else:
            self.enqueue(me)
            wait = True
        self.unlock()
        if fd >= 0:
            if promote != NULL:
                PyThread_release_lock(promote.wake)
            self.dispatcher.set_nodelay(fd)
            begin_turn()
        elif wait:
            with nogil:
                fd = self.wait_and_accept(me, addr, length, err, &spawn)
        me.spawn = spawn
        me.waited = wait
        return fd if fd >= 0 else EXIT

    cdef int wait_and_accept(self, RequestThread me, sockaddr_storage *addr, socklen_t *length,
                             int err, bint *spawn) noexcept nogil:
        """take() past an empty backlog (``err``: why accept() failed), the thread counted in
        waiting or parked (``me.slot`` says which): the descriptor, or -1 when the thread
        stops or retires."""
        cdef int fd, slot, ready, backoff_ms = 0
        cdef bint retire
        cdef Parking *promote = NULL
        while True:
            slot = me.slot
            if slot == PARKED:
                if self.unpark(me) == EXIT:
                    self.unlock()
                    return -1
                slot = NO_SLOT
            else:
                if slot >= 0 and err == EAGAIN:
                    backoff_ms = 0
                    ready = fs_acceptor_wait(self.slot_fds[slot], self.idle_ms)
                else:  # EMFILE & co (accept() fails at once), or no slot: back off as the loop
                    backoff_ms = next_backoff_ms(backoff_ms)
                    ready = fs_stop_wait(self.stop_fd, backoff_ms)
                self.lock_nogil()
                # stopped, or idle while others wait: retire
                retire = self.stopped or (ready == 0 and backoff_ms == 0 and self.waiting > 1)
                self.leave(me)
                if retire:
                    self.alive -= 1
                    self.unlock()
                    return -1
            # Counted in nothing now but alive.
            fd = self.accept_locked(addr, length)
            if fd >= 0:
                if self.shared and slot >= 0:
                    self.requeue(slot)  # the next connection for another process
                spawn[0] = self.want_watcher(&promote)
                self.unlock()
                if promote != NULL:
                    PyThread_release_lock(promote.wake)
                self.dispatcher.set_nodelay(fd)  # before the GIL is taken again: held less long
                take_turn()
                return fd
            if self.stopped:
                self.alive -= 1
                self.unlock()
                return -1
            err = errno
            self.enqueue(me)
            self.unlock()

    cdef int unpark(self, RequestThread me) noexcept nogil:
        """Sleep parked until promoted, stopped or IDLE_MS pass. Returns with the mutex held:
        EXIT (counted out of alive: stopped, or retired while others wait), else 0 (counted in
        nothing but alive: look for a connection)."""
        cdef Parking *parking = &me.parking
        cdef bint woken = PyThread_acquire_lock_timed(
            parking.wake, <PY_TIMEOUT_T>self.idle_ms * 1000, 0) == PY_LOCK_ACQUIRED
        self.lock_nogil()
        me.slot = NO_SLOT
        if parking.state == IDLE:  # nobody released it: IDLE_MS passed
            self.unlink(parking)
            if self.waiting + self.starting > 0:
                self.alive -= 1
                return EXIT
            return 0
        if not woken:  # released as the wait ended, or soon (the releaser does it unlocked)
            self.unlock()
            PyThread_acquire_lock(parking.wake, WAIT_LOCK)
            self.lock_nogil()
        if parking.state == RELEASED:
            self.alive -= 1
            return EXIT
        self.starting -= 1  # PROMOTED
        return 0

    cdef int serve(self, RequestThread me, int fd, sockaddr_storage *addr,
                   socklen_t length) except -1:
        """process_request_thread(): finish_request(), handle_error() on an Exception, and
        shutdown_request() in any case, but for a keep-alive connection parked between two
        requests (fastserver._pipeline: it is closed where it ends). A thread that fails to
        start is reported as the stdlib reports it (handle_error() for the request, which is
        then closed)."""
        cdef Dispatcher dispatcher = self.dispatcher
        cdef bint parked = False
        request = dispatcher.wrap(fd)
        client_address = sockaddr_to_python(addr, length)
        try:
            if me.spawn:
                me.spawn = False
                self.spawn()
            if dispatcher.keep_alive is not None:
                parked = dispatcher.keep_alive.start(request, client_address)
            else:
                dispatcher.finish(request, client_address)
        except Exception:
            self.server.handle_error(request, client_address)
        finally:
            try:
                if not parked:
                    dispatcher.end_request(request)
            finally:
                give_turn()
        return 0
