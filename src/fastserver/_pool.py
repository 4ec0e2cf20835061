"""Reused request threads for ThreadingMixIn.

The standard library starts a thread per request and lets it die; starting one costs tens of
microseconds and a GIL round trip. Here a thread that finishes a request waits idle on its own
lock and takes the next one; it exits after ``IDLE_SECONDS`` without work, or when the server
closes. The semantics stay the stdlib's: one thread per concurrent request, no cap unless
``max_threads``, ``daemon_threads`` honoured, an exception that escapes a request goes to
``threading.excepthook``. (A worker process that stops waits for daemon threads' requests too:
``finish_jobs()``.)
"""

import itertools
import sys
import threading
import weakref

IDLE_SECONDS = 5.0
# Shared by every server's threads; without the GIL neither a count's next() nor a WeakSet is
# atomic, so both are taken under this lock.
_registry_lock = threading.Lock()
_names = itertools.count(1)
_pools = weakref.WeakSet()


def thread_name():
    """A new request thread's name: fastserver-1, fastserver-2, ..."""
    with _registry_lock:
        return f"fastserver-{next(_names)}"


def _release_idle_threads():
    """At exit, idle threads must not hold the interpreter up (busy ones finish, as in the
    stdlib)."""
    with _registry_lock:
        pools = list(_pools)
    for pool in pools:
        pool.close()


threading._register_atexit(_release_idle_threads)


class _RequestThread:
    __slots__ = ("wake", "job", "thread")

    def __init__(self, job):
        self.wake = threading.Lock()  # held while idle; released to hand over a job
        self.wake.acquire()
        self.job = job
        self.thread = None


class ThreadPool:
    """Threads that run ``fn(*args)`` jobs, reused; the pool of one server.

    Every field but ``max_threads``, ``on_free`` and ``turns`` (set once) is under ``_lock``;
    ``full()`` alone reads ``_running`` without it, for the loop's pacing, which on_free() wakes
    after every change that matters to it.

    ``on_free`` is called (outside the lock) when a thread becomes free while the pool was full,
    so that a loop that stopped accepting can start again. With ``turns`` (the compiled stream
    module) the threads take turns running Python (ThreadingMixIn.request_turns).
    """

    def __init__(self, max_threads=None, on_free=None, turns=None):
        self.max_threads = max_threads
        self.on_free = on_free
        self.turns = turns
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._idle = []  # idle threads, most recent last (its stack is warm)
        self._threads = set()
        self._busy = 0  # jobs running on non-daemon threads, for join()
        self._running = 0  # jobs running on any thread
        self._closed = False
        self._adopted = []  # thread groups of the compiled core (see adopt())
        with _registry_lock:
            _pools.add(self)

    def __len__(self):
        """Threads alive, busy or idle (the adopted ones too)."""
        return len(self._threads) + sum(len(group) for group in self._adopted)

    def adopt(self, group):
        """Have join() and close() join or close ``group`` (fastserver._acceptors.Acceptors: the
        threads of one serve_forever that accept their own connections) with this pool."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot add threads to a closed thread pool")
            self._adopted = [g for g in self._adopted if len(g)] + [group]

    def full(self):
        """True while max_threads jobs are running: no job can start without waiting."""
        return self.max_threads is not None and self._running >= self.max_threads

    def submit(self, fn, args, daemon=False):
        """Run ``fn(*args)`` on a free thread; wait for one if ``max_threads`` are busy."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a closed thread pool")
            while self.full():
                self._changed.wait()
            self._running += 1
            if not daemon:
                self._busy += 1
            job = (fn, args, daemon)
            if self._idle:
                idle = self._idle.pop()
                idle.job = job
                idle.wake.release()
                return
            new = _RequestThread(job)
            self._threads.add(new)
        thread = threading.Thread(target=self._work, args=(new,), daemon=daemon,
                                  name=thread_name())
        new.thread = thread
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(new)
                self._finished(daemon)
            raise

    def _finished(self, daemon):
        """Count one job done (with the lock held); True if that freed a full pool."""
        was_full = self.full()
        self._running -= 1
        if not daemon:
            self._busy -= 1
        self._changed.notify_all()
        return was_full

    def _work(self, me):
        turns = self.turns
        if turns is not None:
            turns.enroll(True)
        while True:
            fn, args, daemon = me.job
            me.job = None
            if turns is not None:
                turns.begin_request()
            try:
                fn(*args)
            except BaseException:
                # As a dying Thread would report it; the thread itself carries on.
                threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), me.thread)))
            if turns is not None:
                turns.end_request()
            fn = args = None  # drop the request before going idle
            with self._lock:
                freed = self._finished(daemon)
                if self._closed:
                    self._threads.discard(me)
                    return
                self._idle.append(me)
            if freed and self.on_free is not None:
                self.on_free()
            if not me.wake.acquire(timeout=IDLE_SECONDS):
                with self._lock:
                    if me in self._idle:  # nobody handed us a job: retire
                        self._idle.remove(me)
                        self._threads.discard(me)
                        return
                me.wake.acquire()  # a job was handed over just as the wait ended
            if me.job is None:  # close() woke us
                return

    def stop_accepting(self):
        """Have the adopted groups accept no more (their busy threads finish their requests)."""
        with self._lock:
            adopted = list(self._adopted)
        for group in adopted:
            group.stop()

    def finish_jobs(self):
        """Wait until every job has ended, on daemon threads too, and so have the adopted groups'
        threads (stop them first: this does not stop the pool). A worker process that stops
        calls it (fastserver.workers): it finishes each request it accepted, whatever
        ``daemon_threads`` says; the worker's watchdog ends a wait past ``graceful_timeout``."""
        with self._lock:
            while self._running:
                self._changed.wait()
            adopted = list(self._adopted)
        for group in adopted:
            group.join_all()

    def join(self):
        """Wait for the running jobs of non-daemon threads, then stop every idle thread."""
        with self._lock:
            while self._busy:
                self._changed.wait()
        self.close(wait=True)

    def close(self, wait=False):
        """Stop idle threads now and busy ones when their job ends; join them if ``wait``."""
        with self._lock:
            self._closed = True
            adopted, self._adopted = self._adopted, []
            idle, self._idle = self._idle, []
            for each in idle:
                self._threads.discard(each)
                each.wake.release()  # with no job: the thread returns
        for group in adopted:
            group.join() if wait else group.close()
        if wait:
            for each in idle:
                if each.thread is not None and each.thread is not threading.current_thread():
                    each.thread.join()
