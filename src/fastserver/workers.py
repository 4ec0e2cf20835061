"""Worker processes: ``workers = N`` runs N copies of the accept loop under a supervising parent.

The workers share the listening socket they inherit across fork() (not SO_REUSEPORT: with one
shared queue a worker that stops, or is replaced on reload, leaves no connection behind in a
backlog of its own). The parent only supervises:

- a worker that dies is replaced at once (the parent looks every ``TICK`` seconds at most);
- SIGTERM or SIGINT to the parent (or ``shutdown()`` from another of its threads) stops every
  worker gracefully, and ``serve_forever()`` returns once they have all exited;
- SIGHUP replaces the workers: new ones start first, then the old ones stop gracefully, so no
  connection is refused.

A worker that stops gracefully (SIGTERM or SIGINT; the parent sends SIGTERM) stops accepting and
finishes every request it has accepted, whatever ``daemon_threads`` and ``block_on_close`` say:
the requests of its threads (pooled or accepting their own connections), its forked request
processes (ForkingMixIn), and the connections it holds for ``first_data_timeout`` (served if they
speak in time). Connections still in the listener's backlog are left to the other workers. Then
it calls ``server_close()`` and exits 0.

``graceful_timeout`` (seconds, from the stop signal; 0 to give up at once) bounds that: a worker
still finishing then gives up itself. It resets the TCP connections it accepted that are still
open (SO_LINGER 0: the client's next read fails with ECONNRESET, so a cut-off reply is never
mistaken for a complete one), kills its request processes, says so on stderr, and exits 1. A
worker that cannot even do that (a handler that holds the GIL) is killed by the parent
``KILL_GRACE`` seconds later; the kernel then closes its connections as after any exit (a FIN).

The parent returns from ``serve_forever()`` once every worker has exited: no orphan, no zombie.
On Linux a worker also stops gracefully when the parent dies without stopping it (SIGKILL).
"""

import _thread
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from time import monotonic

from ._pool import ThreadPool

TICK = 0.1
KILL_GRACE = 1.0  # the parent kills a worker this long after its own graceful_timeout
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WORKER_SIGNALS = (*_STOP_SIGNALS, signal.SIGHUP)  # what a worker handles for itself


class Supervisor:
    """The parent's side of ``serve_forever()`` when ``server.workers > 1``."""

    def __init__(self, server, state, loop, poll_interval):
        self.server = server
        self.state = state  # the server's LoopState (fastserver._seam)
        self.loop = loop
        self.poll_interval = poll_interval
        self.count = int(server.workers)
        self.graceful_timeout = graceful_timeout(server)  # checked before any worker starts
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
        supervisor = os.getpid()  # before fork(): the child may outlive it before it asks
        # Until the child has its own handlers, a stop signal would run the supervisor's there
        # (and be forgotten when the worker resets its state): it waits, blocked, until then.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
        pid = None
        try:
            pid = os.fork()
            if pid == 0:
                self.loop.close()  # the parent's; the worker makes its own
                _run_worker(self.server, self.state, supervisor, index, self.poll_interval,
                            mask)  # never returns
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
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
        deadline = monotonic() - self.graceful_timeout - KILL_GRACE  # it gave up itself by then
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


def graceful_timeout(server):
    """``server.graceful_timeout`` as seconds (a finite number, 0 or more), or TypeError or
    ValueError naming it."""
    value = server.graceful_timeout
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"graceful_timeout must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value < math.inf:  # NaN too
        raise ValueError(f"graceful_timeout must be a finite number of seconds, 0 or more, "
                         f"not {value!r}")
    return float(value)


class _Stop:
    """A worker's graceful stop: the signal handler, and the watchdog that gives up on what is
    still running ``graceful_timeout`` seconds after it (see the module docstring)."""

    def __init__(self, server, state, index):
        self.server = server
        self.state = state  # the server's LoopState (fastserver._seam)
        self.index = index
        self.pid = os.getpid()
        self.timeout = graceful_timeout(server)
        self.asked = None  # monotonic() of the first stop signal
        self.port = _tcp_port(server.socket)  # of the connections to reset at the deadline

    def __call__(self, signum=None, frame=None):
        """SIGTERM/SIGINT (or the loop's end): stop accepting, and start the countdown."""
        if os.getpid() != self.pid:
            return  # a request process of ForkingMixIn: it finishes its request, as its worker
        if self.asked is None:
            self.asked = monotonic()
            self.state.finish_until = self.asked + self.timeout
            # Not threading.Thread: this may run in a signal handler that interrupted the main
            # thread holding threading's own locks. (Started only now, so that a worker that
            # forks its requests does not fork with a second thread running.)
            _thread.start_new_thread(self._watch, ())
        self.state.request_shutdown()

    def _watch(self):
        deadline = self.asked + self.timeout
        while (left := deadline - monotonic()) > 0:
            time.sleep(min(left, 3600.0))  # (sleep() refuses a huge graceful_timeout at once)
        self.give_up()

    def give_up(self):
        """graceful_timeout has passed: reset what is still open, kill the request processes,
        exit 1 (the rest of the process, the requests' threads included, ends with it)."""
        killed = 0
        for pid in list(getattr(self.server, "active_children", None) or ()):
            _signal(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
                killed += 1
            except ChildProcessError:
                pass  # reaped meanwhile (it had just finished)
        reset = _reset_connections(self.port) if self.port is not None else 0
        try:
            print(f"fastserver: worker {self.index} (pid {self.pid}) still busy "
                  f"{self.timeout:g} s (graceful_timeout) after it was asked to stop: "
                  f"{reset} connections reset, {killed} request processes killed",
                  file=sys.stderr, flush=True)
        finally:
            os._exit(1)


def _tcp_port(sock):
    """The port a TCP listener is bound to (its accepted connections have it too), else None."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return sock.getsockname()[1]
    except OSError:
        pass
    return None


def _reset_connections(port):
    """Have the kernel reset, instead of closing in order, every TCP connection of this process
    whose local port is ``port`` and that is not listening: those it accepted and still holds
    (SO_LINGER with a zero timeout; the reset is sent when the process exits). Their number."""
    directory = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        fds = [int(name) for name in os.listdir(directory)]
    except (OSError, ValueError):
        return 0
    abort = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}
    reset = 0
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)  # not a socket (or closed since): OSError
        except OSError:
            continue
        try:
            if (sock.type == socket.SOCK_STREAM
                    and sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.getsockname()[1] == port):
                sock.getpeername()  # a listener has no peer: OSError
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, abort)
                reset += 1
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor stays its owner's
    return reset


def _finish_requests(server):
    """Wait for every request the worker accepted (the loop has ended; its watchdog ends the
    wait at graceful_timeout): its threads' requests, daemon or not, and its request processes."""
    threads = getattr(server, "_threads", None)
    if type(threads) is ThreadPool:
        threads.finish_jobs()
    if getattr(server, "active_children", None) and hasattr(server, "collect_children"):
        server.collect_children(blocking=True)


def _run_worker(server, state, supervisor, index, poll_interval, mask):
    """A worker: the ordinary loop on the inherited socket until SIGTERM/SIGINT; then it finishes
    the requests it accepted (up to graceful_timeout), closes the server and exits. Its stop
    signals come blocked; ``mask`` is the signal mask to restore once it handles them."""
    status = 0
    try:
        server.worker_id = index
        state.shutdown_request = False
        # Every worker wakes for each connection and all but one find none: accept() must not
        # block then. The flag lives in the description the workers share, so it stays set.
        server.socket.setblocking(False)
        stop = _Stop(server, state, index)
        for signum in _STOP_SIGNALS:
            signal.signal(signum, stop)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one sent meanwhile arrives now
        if _stop_with_parent() and os.getppid() != supervisor:
            return  # the parent died before the signal was asked for
        try:
            server.serve_forever(poll_interval)
        finally:
            stop()  # (after a failed loop too: what it accepted still finishes, or is reset)
            _finish_requests(server)
        server.server_close()
    except BaseException:
        status = 1
        import traceback

        traceback.print_exc()
    finally:
        os._exit(status)
