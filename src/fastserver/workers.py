"""Worker processes: ``workers = N`` runs N copies of the accept loop under a supervising parent.

The workers share the listening socket they inherit across fork() (not SO_REUSEPORT: with one
shared queue a worker that stops, or is replaced on reload, leaves no connection behind in a
backlog of its own). The parent only supervises:

- a worker that dies is replaced at once (the parent looks every ``TICK`` seconds at most);
- SIGTERM or SIGINT to the parent (or ``shutdown()`` from another of its threads) stops every
  worker gracefully: each stops accepting, finishes its requests (``server_close()``, which joins
  the request threads), and exits; one still running after ``graceful_timeout`` is killed;
- SIGHUP replaces the workers: new ones start first, then the old ones stop gracefully, so no
  connection is refused.

The parent returns from ``serve_forever()`` once every worker has exited: no orphan, no zombie.
On Linux a worker also stops gracefully when the parent dies without stopping it (SIGKILL).
"""

import os
import signal
import sys
import threading
from time import monotonic

TICK = 0.1
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Supervisor:
    """The parent's side of ``serve_forever()`` when ``server.workers > 1``."""

    def __init__(self, server, state, loop, poll_interval):
        self.server = server
        self.state = state  # the server's LoopState (fastserver._seam)
        self.loop = loop
        self.poll_interval = poll_interval
        self.count = int(server.workers)
        self.workers = {}  # pid -> worker index
        self.retiring = {}  # pid -> when it was asked to stop
        self.reload_requested = False

    def run(self):
        saved = self._install_signal_handlers()
        timeout = self.server.socket.gettimeout()  # the workers make it non-blocking
        try:
            for index in range(self.count):
                self._spawn(index)
            while not self.state.shutdown_request:
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                self._reap(respawn=True)
                self.loop.sleep(TICK)
        finally:
            self._stop_all()
            self.server.socket.settimeout(timeout)
            for signum, handler in saved.items():
                signal.signal(signum, handler)

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}  # only shutdown() can stop us then
        saved = {}

        def stop(signum, frame):
            self.state.request_shutdown()

        def reload(signum, frame):
            self.reload_requested = True
            self.loop.wake()

        for signum in _STOP_SIGNALS:
            saved[signum] = signal.signal(signum, stop)
        saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
        return saved

    def _spawn(self, index):
        pid = os.fork()
        if pid == 0:
            self.loop.close()  # the parent's; the worker makes its own
            _run_worker(self.server, self.state, index, self.poll_interval)  # never returns
        self.workers[pid] = index

    def _reload(self):
        """New workers first, then the old ones stop gracefully."""
        old = list(self.workers)
        for index in range(self.count):
            self._spawn(index)
        for pid in old:
            self._retire(pid)

    def _retire(self, pid):
        self.workers.pop(pid, None)
        self.retiring[pid] = monotonic()
        _signal(pid, signal.SIGTERM)

    def _reap(self, respawn):
        """Collect the workers that exited; replace the ones that were not asked to stop."""
        deadline = monotonic() - self.server.graceful_timeout
        for pid, asked in list(self.retiring.items()):
            if asked < deadline:
                _signal(pid, signal.SIGKILL)
        for pid in list(self.workers) + list(self.retiring):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # reaped elsewhere (a handler's waitpid(-1))
            if done == 0:
                continue
            self.retiring.pop(pid, None)
            index = self.workers.pop(pid, None)
            if index is not None and respawn:
                self._spawn(index)

    def _stop_all(self):
        for pid in list(self.workers):
            self._retire(pid)
        while self.retiring:
            self._reap(respawn=False)
            if self.retiring:
                self.loop.sleep(TICK / 10)


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _stop_with_parent():
    """Linux: have the kernel send SIGTERM to this worker when its parent dies (PR_SET_PDEATHSIG),
    so that a supervisor killed outright leaves no orphan serving on. True if it is set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _run_worker(server, state, index, poll_interval):
    """A worker: the ordinary loop on the inherited socket until SIGTERM/SIGINT; then exit."""
    status = 0
    parent = os.getppid()
    try:
        server.worker_id = index
        state.shutdown_request = False
        # Every worker wakes for each connection and all but one find none: accept() must not
        # block then. The flag lives in the description the workers share, so it stays set.
        server.socket.setblocking(False)

        def stop(signum, frame):
            state.request_shutdown()

        for signum in _STOP_SIGNALS:
            signal.signal(signum, stop)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        if _stop_with_parent() and os.getppid() != parent:
            return  # the parent died before the signal was asked for
        server.serve_forever(poll_interval)
        server.server_close()  # finishes the requests in flight (ThreadingMixIn joins them)
    except BaseException:
        status = 1
        import traceback

        traceback.print_exc()
    finally:
        os._exit(status)
