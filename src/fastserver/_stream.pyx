# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Stream I/O for StreamRequestHandler: its rfile and wfile, with the socket syscalls in C.

``stream_files(sock, rbufsize, wbufsize)`` returns what the standard library's handler makes —
``sock.makefile('rb', rbufsize)``, and for ``wbufsize == 0`` a writer whose write() is one
sendall(), else ``sock.makefile('wb', wbufsize)`` — with the same results and exceptions. The
difference is how the socket is driven. The socket module releases and retakes the GIL around
every syscall; here each recv() is first tried without blocking while the GIL is held, and the
GIL is released only to wait: in the syscall itself for a blocking socket, in poll(2) up to the
deadline for a socket with a timeout. A send() releases it too: on a local connection it runs
the receiver's side and wakes it, and the thread may lose its CPU in there. (A reader whose
last recv had to wait a while skips the first try: between requests it would only add a
syscall.) The socket's timeout is read when a wait begins (a handler may change it after setup),
signals interrupt a wait and run their handlers (which may raise) before it resumes (PEP 475),
and errors are the socket module's OSError subclasses. A request thread that takes turns
(ThreadingMixIn.request_turns, ``_turns``) gives its turn up for each wait and takes it again
before the GIL.

Anything unusual (a socket subclass such as an SSL socket, a non-stream socket, an unbuffered or
non-integer rbufsize, a buffer size beyond MAX_BUFFER_SIZE) is handed to the pure-Python maker.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals, PyErr_Clear
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t
from cpython.object cimport PyObject, PyTypeObject
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_get_thread_ident, PyThread_release_lock, PyThread_type_lock,
)
from cpython.ref cimport Py_XDECREF
from libc.errno cimport EAGAIN, EBADF, EINTR, errno
from libc.string cimport memchr, memcpy

import _socket
import io
import os
import socket

from fastserver import _stream_py
from fastserver._turns cimport give_turn, take_turn
from fastserver.includes.csrc cimport (FS_SEND_FLAGS, fs_load_int, fs_load_long, fs_store_int,
                                       fs_store_long)
from fastserver.includes.errors cimport after_failed_wait, monotonic, ms_until, raise_oserror
from fastserver.includes.system cimport (EWOULDBLOCK, MSG_DONTWAIT, POLLIN, POLLOUT, poll, pollfd,
                                         recv, send)

cdef extern from *:
    """
    /* Take the reference ``b`` (a bytes object nobody else holds), shrink it to ``n`` bytes and
       return it; NULL with an exception set on failure (``b`` is then freed). */
    static PyObject *fs_bytes_finish(PyObject *b, Py_ssize_t n) {
        if (PyBytes_GET_SIZE(b) != n && _PyBytes_Resize(&b, n) < 0)
            return NULL;
        return b;
    }
    /* With the GIL, a reader's buffer is read without its lock when it holds what is asked
       for: no other thread runs meanwhile. Without the GIL every read takes the lock. */
    #ifdef Py_GIL_DISABLED
    #define FS_GIL_GUARDS_BUFFER 0
    #else
    #define FS_GIL_GUARDS_BUFFER 1
    #endif
    """
    bint GIL_GUARDS_BUFFER "FS_GIL_GUARDS_BUFFER"
    PyObject *new_bytes "PyBytes_FromStringAndSize"(const char *data, Py_ssize_t size) except NULL
    char *bytes_data "PyBytes_AS_STRING"(PyObject *b)
    object fs_bytes_finish(PyObject *b, Py_ssize_t n)
    int get_buffer "PyObject_GetBuffer"(object obj, Py_buffer *view, int flags) noexcept

DEFAULT_BUFFER_SIZE = io.DEFAULT_BUFFER_SIZE
MAX_BUFFER_SIZE = 1 << 24
"""Buffer sizes above this (16 MiB) go to the pure-Python maker."""

cdef Py_ssize_t DEFAULT_SIZE = io.DEFAULT_BUFFER_SIZE
cdef Py_ssize_t MAX_SIZE = MAX_BUFFER_SIZE
cdef Py_ssize_t READALL_CHUNK = 65536

# transfer()'s deadlines and results beside a count
cdef double UNKNOWN = -2.0  # not computed yet
cdef double NEVER = -1.0  # a blocking socket
cdef double WAITED = 5e-6  # a wait longer than this slept: the data or room was not there
cdef enum:
    WOULD_BLOCK = -2
    TIMED_OUT = -3

cdef object _socket_class = socket.socket
cdef object _socket_type = _socket.socket.__dict__["type"]  # the C member, not the enum property
cdef int SOCK_STREAM = socket.SOCK_STREAM
cdef object _timeout_error = socket.timeout  # TimeoutError since Python 3.10
cdef object _SocketIO = socket.SocketIO
cdef object _BufferedWriter = io.BufferedWriter
cdef object _Unsupported = io.UnsupportedOperation
cdef object _pure_stream_files = _stream_py.stream_files
cdef frozenset _whences = frozenset({0, 1, 2, getattr(os, "SEEK_DATA", 0),
                                     getattr(os, "SEEK_HOLE", 0)})


# --- syscalls ---------------------------------------------------------------------------------

cdef double deadline_of(object sock) except? -3.0:
    """When a wait on ``sock`` that begins now must end: NEVER (a blocking socket), 0.0 for a
    non-blocking socket (no wait at all), else monotonic() + its timeout."""
    timeout = sock.gettimeout()
    if timeout is None:
        return NEVER
    cdef double seconds = timeout
    if seconds <= 0.0:
        return 0.0
    return monotonic() + seconds


cdef int wait_for(int fd, short events, double deadline) except -1:
    """Wait without the GIL until ``fd`` polls ready for ``events``: 1, or 0 once the monotonic
    ``deadline`` has passed. A signal runs its Python handlers (which may raise), and the wait
    resumes with the time that is left."""
    cdef pollfd entry
    cdef int ready, ms, err
    if fd < 0:
        raise_oserror(EBADF)  # poll() would ignore it and wait out the timeout
    while True:
        if deadline < monotonic():
            return 0
        ms = ms_until(deadline)
        entry.fd = fd
        entry.events = events
        entry.revents = 0
        with nogil:
            give_turn()
            ready = poll(&entry, 1, ms)
            err = errno
            take_turn()
        if ready > 0:
            return 1
        if ready < 0:
            after_failed_wait(err)


cdef inline ssize_t syscall(int fd, char *data, Py_ssize_t length, bint sending,
                            int flags) noexcept nogil:
    if sending:
        return send(fd, data, <size_t>length, flags | FS_SEND_FLAGS)
    return recv(fd, data, <size_t>length, flags)


cdef Py_ssize_t transfer(object sock, int fd, char *data, Py_ssize_t length, bint sending,
                         bint probe, double *deadline, bint *slept) except -1:
    """One recv() or send() as the socket module makes it under ``sock``'s timeout: the count
    (0 for EOF), WOULD_BLOCK where the socket module raises BlockingIOError (a non-blocking
    socket, no data or no room), or TIMED_OUT.

    With ``probe``, the syscall is first tried without blocking while the GIL is held: most of
    the time it succeeds and the GIL never changes hands. Only to wait is the GIL released: in
    the syscall itself for a blocking socket (it waits and transfers at once, as the socket
    module's does), in poll(2) until ``*deadline`` for a socket with a timeout. Without
    ``probe`` (the caller expects to wait), that wait comes first. ``*deadline`` is computed at
    the first wait (the timeout is read then) and kept for the caller's next call; ``*slept``
    tells whether the wait lasted (more than WAITED seconds). EINTR runs the signal handlers
    (which may raise), then the call resumes (PEP 475)."""
    cdef ssize_t n
    cdef int err
    cdef double started
    slept[0] = False
    if not probe:
        if deadline[0] == UNKNOWN:
            deadline[0] = deadline_of(sock)
        probe = deadline[0] == 0.0
    if probe and sending:
        # A send on a local connection runs the receiver's side too and wakes it: the thread may
        # lose its CPU in there, and must not hold the GIL while it does.
        with nogil:
            n = syscall(fd, data, length, sending, MSG_DONTWAIT)
            err = errno
        if n >= 0:
            return n
    elif probe:
        n = syscall(fd, data, length, sending, MSG_DONTWAIT)
        if n >= 0:
            return n
        err = errno
    else:
        err = EAGAIN
    while True:
        if err == EINTR:
            PyErr_CheckSignals()
        elif err != EAGAIN and err != EWOULDBLOCK:
            raise_oserror(err)
        else:
            if deadline[0] == UNKNOWN:
                deadline[0] = deadline_of(sock)
            if deadline[0] == 0.0:
                return WOULD_BLOCK
            started = monotonic()
            if deadline[0] == NEVER:
                with nogil:
                    give_turn()
                    n = syscall(fd, data, length, sending, 0)
                    err = errno
                    take_turn()
                slept[0] = monotonic() - started > WAITED
                if n >= 0:
                    return n
                if err == EAGAIN or err == EWOULDBLOCK:
                    return WOULD_BLOCK  # a blocking socket object over a non-blocking descriptor
                continue
            if not wait_for(fd, POLLOUT if sending else POLLIN, deadline[0]):
                slept[0] = True
                return TIMED_OUT
            slept[0] = monotonic() - started > WAITED
        n = syscall(fd, data, length, sending, MSG_DONTWAIT)
        if n >= 0:
            return n
        err = errno


cdef Py_ssize_t send_some(object sock, const char *data, Py_ssize_t length) except -1:
    """socket.send(): the count sent, or WOULD_BLOCK."""
    cdef double deadline = UNKNOWN
    cdef bint slept
    cdef Py_ssize_t sent = transfer(sock, sock.fileno(), <char *>data, length, True, True,
                                    &deadline, &slept)
    if sent == TIMED_OUT:
        raise _timeout_error("timed out")
    return sent


cdef int send_all(object sock, const char *data, Py_ssize_t length) except -1:
    """socket.sendall(): everything, the timeout bounding the whole call; signal handlers run
    after each send, as they do there."""
    cdef Py_ssize_t sent
    cdef int fd = sock.fileno()
    cdef double deadline = UNKNOWN
    cdef bint slept
    while True:  # at least one send(), even of nothing, as sendall() makes
        sent = transfer(sock, fd, <char *>data, length, True, True, &deadline, &slept)
        if sent == WOULD_BLOCK:
            raise_oserror(EAGAIN)  # BlockingIOError, as sendall() on a non-blocking socket
        if sent == TIMED_OUT:
            raise _timeout_error("timed out")
        data += sent
        length -= sent
        PyErr_CheckSignals()
        if length <= 0:
            return 0


cdef str type_name(object value):
    """The type's name as C code names it in messages (tp_name; "None" for None)."""
    if value is None:
        return "None"
    cls = type(value)
    return (<PyTypeObject *>cls).tp_name.decode()


cdef int writable_buffer_error(object buffer, str function) except -1:
    raise TypeError(f"{function}() argument must be read-write bytes-like object, not "
                    f"{type_name(buffer)}")


cdef int writable_buffer_check(object buffer, str function) except -1:
    """The TypeError io raises where ``buffer`` is not a writable buffer."""
    cdef Py_buffer view
    if get_buffer(buffer, &view, PyBUF_WRITABLE) < 0:
        PyErr_Clear()
        writable_buffer_error(buffer, function)
    PyBuffer_Release(&view)
    return 0


cdef Py_ssize_t ssize_or_none(object value) except? -2:
    """An optional size argument as io converts it: None is -1."""
    if value is None:
        return -1
    if not PyIndex_Check(value):
        raise TypeError(f"argument should be integer or None, not '{type_name(value)}'")
    return PyNumber_AsSsize_t(value, OverflowError)


# --- rfile ------------------------------------------------------------------------------------

cdef enum:
    OPEN = 0
    CLOSED = 1
    DETACHED = 2


@cython.final
@cython.auto_pickle(False)
cdef class SocketReader:
    """A buffered binary reader on a socket: what ``sock.makefile('rb', buffer_size)`` returns
    (an io.BufferedReader over a socket.SocketIO), with the same methods, results and errors.

    Made by stream_files(). It holds a reference on the socket as makefile's file does, so that
    ``sock.close()`` while it is open closes the descriptor only when the reader closes too.

    Threads: a handler may hand the reader to another thread, or close it from one. The buffer
    (``buf``, ``pos``, ``end``) and the socket reference change only under ``lock``; ``state``
    and ``owner`` are also read without it, as atomics. With the GIL, reads served from the
    buffer skip the lock (GIL_GUARDS_BUFFER); without it, every read takes it.
    """

    cdef object sock
    cdef char *buf  # size bytes; the unread data is buf[pos:end]
    cdef Py_ssize_t size, pos, end
    cdef int state
    cdef bint timed_out  # SocketIO's rule: after a timeout, no more reads
    cdef bint waited  # the last recv had to wait a while
    cdef PyThread_type_lock lock  # held by whatever may wait, as BufferedReader's is
    cdef long owner
    cdef dict __dict__
    cdef object __weakref__

    def __cinit__(self):
        fs_store_int(&self.state, CLOSED)
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __init__(self, *args, **kwargs):
        raise TypeError("SocketReader objects are made by stream_files()")

    def __dealloc__(self):
        PyMem_Free(self.buf)
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    def __del__(self):
        # An unclosed reader gives back its reference on the socket, as a collected BufferedReader
        # does; never while another thread is inside it, never raising.
        if self.current_state() != OPEN or not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            return
        PyThread_release_lock(self.lock)
        try:
            self.close()
        except BaseException:
            pass

    cdef int open(self, object sock, Py_ssize_t size) except -1:
        self.buf = <char *>PyMem_Malloc(size)
        if self.buf == NULL:
            raise MemoryError()
        self.size = size
        sock._io_refs += 1
        self.sock = sock
        fs_store_int(&self.state, OPEN)
        return 0

    # --- the lock and the state

    cdef int enter(self) except -1:
        cdef long me = PyThread_get_thread_ident()
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            if fs_load_long(&self.owner) == me:
                raise RuntimeError(f"reentrant call inside {self!r}")
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
        fs_store_long(&self.owner, me)
        return 0

    cdef inline void leave(self) noexcept:
        fs_store_long(&self.owner, 0)
        PyThread_release_lock(self.lock)

    cdef inline int current_state(self) noexcept:
        return fs_load_int(&self.state)

    cdef int check_open(self, str message) except -1:
        cdef int state = self.current_state()
        if state == OPEN:
            return 0
        if state == DETACHED:
            raise ValueError("raw stream has been detached")
        raise ValueError(message)

    cdef int check_attached(self) except -1:
        if self.current_state() == DETACHED:
            raise ValueError("raw stream has been detached")
        return 0

    cdef object socket_or_none(self):
        """The socket while open, else None; from any thread (close() drops it under lock)."""
        with cython.critical_section(self):
            return self.sock if self.current_state() == OPEN else None

    # --- raw reads (the lock held)

    cdef Py_ssize_t raw_read(self, char *dest, Py_ssize_t length) except -1:
        """One recv as SocketIO.readinto() makes it: the count (0 at EOF), or WOULD_BLOCK where
        it returns None. When the last one had to wait a while, this one waits at once too (a
        connection between requests): a probe would only add a syscall."""
        cdef double deadline = UNKNOWN
        cdef Py_ssize_t got
        if self.timed_out:
            raise OSError("cannot read from timed out object")
        got = transfer(self.sock, self.sock.fileno(), dest, length, False, not self.waited,
                       &deadline, &self.waited)
        if got == TIMED_OUT:
            self.timed_out = True
            raise _timeout_error("timed out")
        return got

    cdef Py_ssize_t fill(self) except -1:
        """Read into the buffer after what it holds (from the start once it was reset); the
        buffer is made again first if release_buffer() freed it."""
        cdef Py_ssize_t got
        if self.end >= self.size:  # never happens: every caller has consumed the buffer
            self.pos = self.end = 0
        if self.buf == NULL:
            self.buf = <char *>PyMem_Malloc(self.size)
            if self.buf == NULL:
                raise MemoryError()
        got = self.raw_read(self.buf + self.end, self.size - self.end)
        if got > 0:
            self.end += got
        return got

    cdef object read_to_eof(self):
        """RawIOBase.readall() on the socket: up to EOF; None when a non-blocking socket has
        nothing; what came before a would-block otherwise."""
        cdef char *data = NULL
        cdef char *grown
        cdef Py_ssize_t capacity = 0, total = 0, got
        try:
            while True:
                if capacity - total < READALL_CHUNK:
                    capacity = capacity * 2 if capacity else 2 * READALL_CHUNK
                    grown = <char *>PyMem_Realloc(data, capacity)
                    if grown == NULL:
                        raise MemoryError()
                    data = grown
                got = self.raw_read(data + total, capacity - total)
                if got == WOULD_BLOCK:
                    if total == 0:
                        return None
                    break
                if got == 0:
                    break
                total += got
            return PyBytes_FromStringAndSize(data, total)
        finally:
            PyMem_Free(data)

    # --- read

    def read(self, size=-1, /):
        """Read up to size bytes (all of them up to EOF when size is -1 or None)."""
        cdef Py_ssize_t n = ssize_or_none(size)
        cdef Py_ssize_t have
        if n < -1:
            raise ValueError("read length must be non-negative or -1")
        self.check_open("read of closed file")
        if n == -1:
            return self.read_all()
        if GIL_GUARDS_BUFFER:
            have = self.end - self.pos
            if n <= have:
                self.pos += n
                return PyBytes_FromStringAndSize(self.buf + self.pos - n, n)
        return self.read_generic(n)

    cdef object read_all(self):
        cdef Py_ssize_t have
        head = None
        self.enter()
        try:
            self.check_open("read of closed file")
            have = self.end - self.pos
            if have > 0:
                head = PyBytes_FromStringAndSize(self.buf + self.pos, have)
            self.pos = self.end = 0
            tail = self.read_to_eof()
        finally:
            self.leave()
        if head is None:
            return tail
        return head if tail is None else head + tail

    cdef object read_generic(self, Py_ssize_t n):
        """read(n) past what is buffered: exactly n bytes unless EOF (or a non-blocking socket)
        comes first; whole buffer-size blocks go straight into the result, the rest through the
        buffer."""
        cdef PyObject *result = NULL
        cdef PyObject *done
        cdef char *out
        cdef Py_ssize_t have, written, remaining, got = 0
        self.enter()
        try:
            self.check_open("read of closed file")
            have = self.end - self.pos
            if n <= have:  # buffered (another thread filled it meanwhile, or no GIL)
                self.pos += n
                return PyBytes_FromStringAndSize(self.buf + self.pos - n, n)
            result = new_bytes(NULL, n)
            out = bytes_data(result)
            if have > 0:
                memcpy(out, self.buf + self.pos, have)
            written = have
            remaining = n - have
            self.pos = self.end = 0
            while remaining >= self.size:
                got = self.raw_read(out + written, remaining - remaining % self.size)
                if got == 0 or got == WOULD_BLOCK:
                    break
                written += got
                remaining -= got
            else:
                while remaining > 0:
                    got = self.fill()
                    if got == 0 or got == WOULD_BLOCK:
                        break
                    if got > remaining:
                        got = remaining
                    memcpy(out + written, self.buf + self.pos, got)
                    self.pos += got
                    written += got
                    remaining -= got
            if remaining > 0 and written == 0 and got == WOULD_BLOCK:
                return None
            done = result
            result = NULL
            return fs_bytes_finish(done, written)
        finally:
            Py_XDECREF(result)
            self.leave()

    def read1(self, size=-1, /):
        """Read up to size bytes with at most one recv: only what is buffered when anything is."""
        cdef Py_ssize_t n = PyNumber_AsSsize_t(size, OverflowError)
        cdef Py_ssize_t have
        if n < 0:
            n = self.size
        self.check_open("read of closed file")
        if n == 0:
            return b""
        if GIL_GUARDS_BUFFER:
            have = self.end - self.pos
            if have > 0:
                if n > have:
                    n = have
                self.pos += n
                return PyBytes_FromStringAndSize(self.buf + self.pos - n, n)
        return self.read1_raw(n)

    cdef object read1_raw(self, Py_ssize_t n):
        cdef PyObject *result = NULL
        cdef PyObject *done
        cdef Py_ssize_t got, have
        self.enter()
        try:
            self.check_open("read of closed file")
            have = self.end - self.pos
            if have > 0:  # buffered (another thread filled it meanwhile, or no GIL)
                if n > have:
                    n = have
                self.pos += n
                return PyBytes_FromStringAndSize(self.buf + self.pos - n, n)
            result = new_bytes(NULL, n)
            self.pos = self.end = 0
            got = self.raw_read(bytes_data(result), n)
            done = result
            result = NULL
            return fs_bytes_finish(done, got if got > 0 else 0)
        finally:
            Py_XDECREF(result)
            self.leave()

    def readinto(self, buffer, /):
        """Read into a writable buffer until it is full or EOF; return the count."""
        return self.readinto_buffer(buffer, False)

    def readinto1(self, buffer, /):
        """Read into a writable buffer with at most one recv; return the count."""
        return self.readinto_buffer(buffer, True)

    cdef object readinto_buffer(self, object buffer, bint once):
        cdef Py_buffer view
        if get_buffer(buffer, &view, PyBUF_WRITABLE) < 0:
            PyErr_Clear()
            writable_buffer_error(buffer, "readinto1" if once else "readinto")
        try:
            return self.readinto_view(<char *>view.buf, view.len, once)
        finally:
            PyBuffer_Release(&view)

    cdef Py_ssize_t take_buffered(self, char *out, Py_ssize_t length) noexcept:
        """Copy up to ``length`` buffered bytes to ``out`` and consume them: the count."""
        cdef Py_ssize_t have = self.end - self.pos
        if have > length:
            have = length
        if have > 0:
            memcpy(out, self.buf + self.pos, have)
            self.pos += have
        return have

    cdef object readinto_view(self, char *out, Py_ssize_t length, bint once):
        cdef Py_ssize_t written = 0, remaining, got
        self.check_open("readinto of closed file")
        if GIL_GUARDS_BUFFER:
            written = self.take_buffered(out, length)
            if written == length:
                return written
        self.enter()
        try:
            self.check_open("readinto of closed file")
            if not GIL_GUARDS_BUFFER:
                written = self.take_buffered(out, length)
                if written == length:
                    return written
            self.pos = self.end = 0
            remaining = length - written
            while remaining > 0:
                if remaining > self.size:
                    got = self.raw_read(out + written, remaining)
                elif once and written:
                    break
                else:
                    got = self.fill()
                    if got > 0:
                        if got > remaining:
                            got = remaining
                        memcpy(out + written, self.buf + self.pos, got)
                        self.pos += got
                        written += got
                        remaining -= got
                        continue
                if got == 0 or (got == WOULD_BLOCK and written > 0):
                    break
                if got == WOULD_BLOCK:
                    return None
                written += got
                remaining -= got
                if once:
                    break
            return written
        finally:
            self.leave()

    def peek(self, size=0, /):
        """What is buffered, without consuming it; one recv first when nothing is."""
        cdef Py_ssize_t have, got
        PyNumber_AsSsize_t(size, OverflowError)
        self.check_open("peek of closed file")
        self.enter()
        try:
            self.check_open("peek of closed file")
            have = self.end - self.pos
            if have > 0:
                return PyBytes_FromStringAndSize(self.buf + self.pos, have)
            self.pos = self.end = 0
            got = self.fill()
            return PyBytes_FromStringAndSize(self.buf, got if got > 0 else 0)
        finally:
            self.leave()

    # --- lines

    def readline(self, size=-1, /):
        """Read one line, up to and including b'\\n' (at most size bytes when size >= 0)."""
        cdef Py_ssize_t limit = ssize_or_none(size)
        self.check_open("readline of closed file")
        return self.next_line(limit)

    cdef object next_line(self, Py_ssize_t limit):
        cdef Py_ssize_t n
        cdef char *start
        cdef char *newline
        if not GIL_GUARDS_BUFFER:  # nothing of the buffer is read without the lock
            return self.read_line(limit)
        n = self.end - self.pos
        start = self.buf + self.pos
        if 0 <= limit < n:
            n = limit
        newline = <char *>memchr(start, b"\n", n) if n > 0 else NULL
        if newline != NULL:
            n = newline - start + 1
        elif n != limit:
            return self.read_line(limit)
        self.pos += n
        return PyBytes_FromStringAndSize(start, n)

    cdef object read_line(self, Py_ssize_t limit):
        """readline() past what is buffered: the pieces up to a newline, the limit, or EOF."""
        cdef Py_ssize_t n, got
        cdef char *start
        cdef char *newline
        cdef list pieces = None
        self.enter()
        try:
            self.check_open("readline of closed file")
            n = self.end - self.pos
            if 0 <= limit < n:
                n = limit
            start = self.buf + self.pos
            newline = <char *>memchr(start, b"\n", n) if n > 0 else NULL
            if newline != NULL or n == limit:
                if newline != NULL:
                    n = newline - start + 1
                self.pos += n
                return PyBytes_FromStringAndSize(start, n)
            piece = None
            if n > 0:
                piece = PyBytes_FromStringAndSize(start, n)
                if limit >= 0:
                    limit -= n
            while True:
                self.pos = self.end = 0
                got = self.fill()
                if got <= 0:
                    break
                if 0 <= limit < got:
                    got = limit
                newline = <char *>memchr(self.buf, b"\n", got)
                if newline != NULL:
                    got = newline - self.buf + 1
                    limit = got  # stop after this piece
                self.pos = got
                if piece is not None:
                    if pieces is None:
                        pieces = [piece]
                    else:
                        pieces.append(piece)
                piece = PyBytes_FromStringAndSize(self.buf, got)
                if got == limit:
                    break
                if limit >= 0:
                    limit -= got
            if pieces is None:
                return b"" if piece is None else piece
            pieces.append(piece)
            return b"".join(pieces)
        finally:
            self.leave()

    def readlines(self, hint=-1, /):
        """The lines up to EOF, or until their total length passes hint when hint > 0."""
        cdef Py_ssize_t limit = ssize_or_none(hint)
        cdef Py_ssize_t total = 0, n
        cdef list lines = []
        self.check_open("I/O operation on closed file.")
        while True:
            self.check_open("readline of closed file")
            line = self.next_line(-1)
            if not line:
                return lines
            lines.append(line)
            if limit > 0:
                n = len(line)
                if n > limit - total:
                    return lines
                total += n

    def __iter__(self):
        self.check_open("I/O operation on closed file.")
        return self

    def __next__(self):
        self.check_open("readline of closed file")
        line = self.next_line(-1)
        if not line:
            raise StopIteration
        return line

    def release_buffer(self):
        """Free the read buffer if it holds nothing, until the next read makes it again: a
        keep-alive connection parked between requests keeps no buffer it is not using
        (fastserver._pipeline). True if it was freed (or was already)."""
        self.check_open("release_buffer of closed file")
        self.enter()
        try:
            if self.current_state() != OPEN or self.end > self.pos:
                return False
            self.pos = self.end = 0
            PyMem_Free(self.buf)
            self.buf = NULL
            return True
        finally:
            self.leave()

    # --- the rest of BufferedReader's interface

    def close(self):
        """Close the file (again: nothing); the socket closes now if it was closed meanwhile."""
        self.check_attached()
        self.enter()
        try:
            self.check_attached()
            if self.current_state() != OPEN:
                return
            self.pos = self.end = 0
            PyMem_Free(self.buf)
            self.buf = NULL
            with cython.critical_section(self):
                fs_store_int(&self.state, CLOSED)
                sock, self.sock = self.sock, None
            sock._decref_socketios()
        finally:
            self.leave()

    def detach(self):
        """Hand over the raw stream (a socket.SocketIO) and its reference on the socket; the
        buffered data is dropped, and this object is unusable afterwards."""
        self.check_open("I/O operation on closed file.")
        self.enter()
        try:
            self.check_open("I/O operation on closed file.")
            self.pos = self.end = 0
            PyMem_Free(self.buf)
            self.buf = NULL
            with cython.critical_section(self):
                fs_store_int(&self.state, DETACHED)
                sock, self.sock = self.sock, None
        finally:
            self.leave()
        raw = _SocketIO(sock, "rb")
        raw._timeout_occurred = self.timed_out
        return raw

    @property
    def closed(self):
        self.check_attached()
        return self.current_state() != OPEN

    @property
    def name(self):
        self.check_attached()
        sock = self.socket_or_none()
        return -1 if sock is None else sock.fileno()

    @property
    def mode(self):
        self.check_attached()
        return "rb"

    def fileno(self):
        sock = self.socket_or_none()
        if sock is None:
            self.check_open("I/O operation on closed file.")
        return sock.fileno()

    def readable(self):
        self.check_open("I/O operation on closed socket.")
        return True

    def writable(self):
        return False

    def seekable(self):
        self.check_open("I/O operation on closed socket.")
        return False

    def isatty(self):
        self.check_open("I/O operation on closed file.")
        return False

    def flush(self):
        self.check_open("I/O operation on closed file.")

    def tell(self):
        self.check_attached()
        raise _Unsupported("seek")

    def seek(self, target, whence=0, /):
        cdef int how = whence
        self.check_attached()
        if how not in _whences:
            raise ValueError(f"whence value {how} unsupported")
        self.check_open("seek of closed file")
        raise _Unsupported("File or stream is not seekable.")

    def truncate(self, pos=None, /):
        self.check_open("truncate of closed file")
        raise _Unsupported("truncate")

    def write(self, data, /):
        raise _Unsupported("write")

    def writelines(self, lines, /):
        self.check_open("I/O operation on closed file.")
        for line in lines:
            self.write(line)

    def __enter__(self):
        self.check_open("I/O operation on closed file.")
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _checkClosed(self):
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    def _checkReadable(self):
        self.readable()
        return True

    def _checkSeekable(self):
        self.seekable()
        raise _Unsupported("File or stream is not seekable.")

    def _checkWritable(self):
        raise _Unsupported("File or stream is not writable.")

    def __repr__(self):
        kind = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.current_state() == DETACHED:
            return f"<{kind}>"
        return f"<{kind} name={self.name!r}>"


io.BufferedIOBase.register(SocketReader)


# --- wfile ------------------------------------------------------------------------------------

@cython.final
@cython.auto_pickle(False)
cdef class SocketWriter:
    """The unbuffered wfile, as the stdlib's StreamRequestHandler makes it (socketserver's
    _SocketWriter, an io.BufferedIOBase): every write() sends all of its data (sendall), so
    nothing waits for flush(). It takes no reference on the socket, and closing it only marks it
    closed: write() still sends afterwards, as the stdlib's does. The rest of the interface is
    io.BufferedIOBase's for a write-only stream."""

    cdef readonly object _sock
    cdef int is_closed  # a bool, read and written as atomics
    cdef dict __dict__
    cdef object __weakref__

    def __init__(self, sock):
        self._sock = sock

    def write(self, b):
        """Send all of b (any C-contiguous bytes-like object); return its size in bytes."""
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            send_all(self._sock, <const char *>view.buf, view.len)
            return view.len
        finally:
            PyBuffer_Release(&view)

    def writelines(self, lines, /):
        self._checkClosed()
        for line in lines:
            self.write(line)

    def fileno(self):
        return self._sock.fileno()

    def close(self):
        fs_store_int(&self.is_closed, True)

    @property
    def closed(self):
        return <bint>fs_load_int(&self.is_closed)

    def flush(self):
        self._checkClosed()

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def isatty(self):
        self._checkClosed()
        return False

    def _checkClosed(self):
        if fs_load_int(&self.is_closed):
            raise ValueError("I/O operation on closed file.")

    def _checkReadable(self):
        raise _Unsupported("File or stream is not readable.")

    def _checkSeekable(self):
        raise _Unsupported("File or stream is not seekable.")

    def _checkWritable(self):
        return True

    def read(self, *args):
        raise _Unsupported("read")

    def read1(self, *args):
        raise _Unsupported("read1")

    def readinto(self, buffer, /):
        writable_buffer_check(buffer, "readinto")
        raise _Unsupported("read")

    def readinto1(self, buffer, /):
        writable_buffer_check(buffer, "readinto1")
        raise _Unsupported("read1")

    def readline(self, size=-1, /):
        ssize_or_none(size)
        raise _Unsupported("read")

    def readlines(self, hint=-1, /):
        ssize_or_none(hint)
        self._checkClosed()
        raise _Unsupported("read")

    def __iter__(self):
        self._checkClosed()
        return self

    def __next__(self):
        raise _Unsupported("read")

    def detach(self):
        raise _Unsupported("detach")

    def seek(self, *args):
        raise _Unsupported("seek")

    def tell(self):
        raise _Unsupported("seek")

    def truncate(self, *args):
        raise _Unsupported("truncate")

    def __enter__(self):
        self._checkClosed()
        return self

    def __exit__(self, *exc_info):
        self.close()


io.BufferedIOBase.register(SocketWriter)


class SocketRawWriter(socket.SocketIO):
    """socket.SocketIO for writing, whose write() (one send) runs here: the raw stream under a
    buffered wfile (``wbufsize != 0``)."""

    def write(self, b):
        """Send what the socket takes of b now (waiting for room first when it takes nothing):
        the count, or None when a non-blocking socket has no room."""
        cdef Py_buffer view
        cdef Py_ssize_t sent
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            sent = send_some(self._sock, <const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return None if sent == WOULD_BLOCK else sent


# --- the maker --------------------------------------------------------------------------------

cdef Py_ssize_t buffer_size(object value) except -2:
    """makefile's buffer size for ``value``, or -1 when it is not one handled here."""
    if value is None:
        return DEFAULT_SIZE
    if type(value) is not int:
        return -1
    if value < 0:
        return DEFAULT_SIZE
    if value > MAX_SIZE:
        return -1
    return <Py_ssize_t>value


def stream_files(sock, rbufsize, wbufsize):
    """(rfile, wfile) for StreamRequestHandler: ``sock.makefile('rb', rbufsize)`` and, for
    ``wbufsize == 0``, an unbuffered writer (else ``sock.makefile('wb', wbufsize)``), with the
    socket I/O done here."""
    cdef Py_ssize_t rsize, wsize
    cdef SocketReader rfile
    cdef SocketWriter wfile
    if type(sock) is not _socket_class or _socket_type.__get__(sock) != SOCK_STREAM:
        return _pure_stream_files(sock, rbufsize, wbufsize)
    rsize = buffer_size(rbufsize)
    wsize = buffer_size(wbufsize)
    if rsize <= 0 or wsize < 0:  # rbufsize 0 is makefile's raw SocketIO
        return _pure_stream_files(sock, rbufsize, wbufsize)
    rfile = SocketReader.__new__(SocketReader)
    rfile.open(sock, rsize)
    if wsize == 0:
        wfile = SocketWriter.__new__(SocketWriter)
        wfile._sock = sock
        return rfile, wfile
    raw = SocketRawWriter(sock, "wb")
    sock._io_refs += 1
    return rfile, _BufferedWriter(raw, wsize)


def wait_readable(int fd, double seconds):
    """Wait up to ``seconds`` for ``fd`` to be readable (or hung up): True if it is. A request
    thread waits so between two keep-alive requests (fastserver._pipeline): without the GIL,
    its turn given up for the wait."""
    return wait_for(fd, POLLIN, monotonic() + seconds) == 1
