# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Request threads take turns running Python: ThreadingMixIn.request_turns, over csrc/turn.c.

Every syscall that releases the GIL lets another busy request thread take it, and the first must
then wait to get it back. A request thread whose last run used much CPU takes the turn when its
next run begins and holds it until it waits on its connection again (the stream files give it up
around each wait, ``_stream``) or its request ends; the others wait for the turn without the GIL,
so the holder keeps the GIL across its short syscalls. The turn's state is csrc/turn.c's, under
its own mutex. Without a GIL (a free-threaded build running without it) nobody takes turns.

The thread pool calls ``enroll()``, ``begin_request()`` and ``end_request()``; the compiled
modules cimport ``begin_turn``, ``take_turn`` and ``give_turn`` (``_turns.pxd``).
"""

from fastserver.includes.csrc cimport (fs_turn_counts, fs_turn_enroll, fs_turn_give, fs_turn_stats,
                                       fs_turn_take, fs_turn_wanted)

import sys


def enroll(bint enrolled):
    """Make the calling thread a request thread that takes turns running Python (or no longer).
    A waiter takes the turn from a holder that keeps it past the switch interval. Without a GIL
    (a free-threaded build running without it) there is nothing to take turns for."""
    if enrolled and not _gil_enabled():
        enrolled = False
    fs_turn_enroll(enrolled, max(<long>(sys.getswitchinterval() * 1e6), 1))


cdef void begin_turn() noexcept:
    """When a request begins, with the GIL held: take the turn if this thread takes turns and
    its last run was long (the GIL released only then, to wait for it)."""
    if fs_turn_wanted():
        with nogil:
            fs_turn_take()
    else:
        fs_turn_take()  # starts timing the run, never waits


cdef void take_turn() noexcept nogil:
    """begin_turn() without the GIL."""
    fs_turn_take()


cdef void give_turn() noexcept nogil:
    """When a request ends: hand the turn on if the calling thread holds it."""
    fs_turn_give()


def begin_request():
    """begin_turn(), for the thread pool."""
    begin_turn()


def end_request():
    """give_turn(), for the thread pool."""
    fs_turn_give()


def turn_stats():
    """Turns taken since the process started: ``(taken, waited, stolen)``; waited counts those
    taken after waiting for another thread, stolen those taken once the wait had lasted a whole
    switch interval (the holder kept it that long, or other threads took it first)."""
    cdef fs_turn_stats stats
    fs_turn_counts(&stats)
    return stats.taken, stats.waited, stats.stolen


cdef object _gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)
