# cython: language_level=3
# How the compiled modules turn an errno into an exception, and get past an interrupted wait.

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.math cimport ceil
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline int raise_oserror(int err) except -1:
    """Raise what the socket module raises for ``err``: OSError picks the subclass
    (ConnectionResetError, TimeoutError...) from the errno."""
    from os import strerror
    raise OSError(err, strerror(err))


cdef inline int raise_errno() except -1:
    return raise_oserror(errno)


cdef inline double monotonic() noexcept nogil:
    """time.monotonic(), without the GIL."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


cdef inline int ms_until(double deadline) noexcept nogil:
    """Milliseconds from now to the monotonic ``deadline``, rounded up (0 once it passed)."""
    cdef double left = deadline - monotonic()
    if left <= 0.0:
        return 0
    return <int>ceil(left * 1000.0) if left < 2e6 else 2000000000


cdef inline int after_failed_wait(int err) except -1:
    """A wait failed with ``err``: raise it, unless it is EINTR; then run the signal handlers
    (which may raise, as PEP 475 has it) and return, so that the caller waits again for what
    is left of its time."""
    if err != EINTR:
        raise_oserror(err)
    PyErr_CheckSignals()
    return 0
