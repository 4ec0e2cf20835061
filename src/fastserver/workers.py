"""Worker processes: ``workers = N`` runs N copies of the accept loop under a supervising parent.

The workers share the listening socket they inherit across fork() (not SO_REUSEPORT: with one
shared queue a worker that stops, or is replaced on reload, leaves no connection behind in a
backlog of its own). The parent only supervises:

- a worker that dies is replaced at once (the parent looks every ``TICK`` seconds at most); one
  that dies within ``BOOT_WINDOW`` of its start failed to boot: it is replaced after a delay
  that doubles each time (``BOOT_BACKOFF``), and after ``BOOT_ATTEMPTS`` such deaths in a row the
  parent stops the others and ``serve_forever()`` raises BootError (SystemExit, status 3);
- every event (a start, an exit with its status or signal and the exception that ended it, a
  replacement, a reload, a stop) is one line on the ``fastserver`` logger (fastserver._log);
- ``workers`` is at most ``max_workers()`` (32 per CPU);
- SIGTERM or SIGINT to the parent (or ``shutdown()`` from another of its threads) stops every
  worker gracefully, and ``serve_forever()`` returns once they have all exited; one that comes
  while workers are being started stops that at once;
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
mistaken for a complete one), kills its request processes, says so in the log, and exits 1. A
worker that cannot even do that (a handler that holds the GIL) is killed by the parent
``KILL_GRACE`` seconds later; the kernel then closes its connections as after any exit (a FIN).

The parent returns from ``serve_forever()`` once every worker has exited: no orphan, no zombie.
On Linux a worker also stops gracefully when the parent dies without stopping it (SIGKILL).

``serve_until_stopped()`` gives a single process (``workers`` = 1) the same graceful SIGTERM.
"""

import _thread
import math
import mmap
import os
import signal
import socket
import struct
import sys
import threading
from time import monotonic

from ._log import logger
from ._pool import ThreadPool

log = logger()

TICK = 0.1
BOOT_WINDOW = 1.0  # a worker that dies sooner than this after its start failed to boot
BOOT_ATTEMPTS = 5  # that many in a row, and the supervisor gives up
BOOT_BACKOFF = 0.25  # seconds before the first replacement of such a worker; doubling
BOOT_FAILED = 3  # the status a program that does not catch BootError exits with (gunicorn's)
KILL_GRACE = 1.0  # the parent kills a worker this long after its own graceful_timeout
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WORKER_SIGNALS = (*_STOP_SIGNALS, signal.SIGHUP)  # what a worker handles for itself


class BootError(SystemExit):
    """Workers die as they start (five in a row, each within ``BOOT_WINDOW`` seconds of its
    start): the supervisor stopped the others, and ``serve_forever()`` raises this. A SystemExit
    of status 3 (gunicorn's "worker failed to boot"), so that a program that does not catch it
    exits with that status, without a traceback; ``reason`` says what the last one died of
    (logged too, as one line)."""

    def __init__(self, reason):
        super().__init__(BOOT_FAILED)
        self.reason = reason

    def __str__(self):
        return f"worker failed to boot: {self.reason}"


def max_workers():
    """The most workers ``serve_forever()`` accepts: 32 per CPU (``4 x CPUs x 8``).

    A worker is a whole copy of the process; its threads are what scale with blocking handlers,
    and gunicorn's own advice is 2 to 4 workers per core. Past 32 per core, a setting is a typo
    (``--workers 100000``) that would fork the machine into the ground, not a deployment."""
    return 32 * (os.cpu_count() or 1)


def describe_status(status):
    """'exited with status N' or 'was killed by signal N (SIGNAME)', from a waitpid() status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {number} ({name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


class _Slot:
    """What a worker leaves its supervisor when it fails: the exception that ended it, one line,
    in a page of memory both share (no descriptor; it survives fork())."""

    SIZE = 512

    def __init__(self):
        self.memory = mmap.mmap(-1, self.SIZE)

    def clear(self):
        self.memory[:1] = b"\0"

    def write(self, exc):  # in the worker
        text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        data = text.encode("utf-8", "replace")[:self.SIZE - 1]
        self.memory[:len(data) + 1] = data + b"\0"

    def read(self):
        return self.memory[:].split(b"\0", 1)[0].decode("utf-8", "replace")

    def close(self):
        self.memory.close()


class Supervisor:
    """The parent's side of ``serve_forever()`` when ``server.workers > 1``."""

    def __init__(self, server, state, loop, poll_interval):
        self.server = server
        self.state = state  # the server's LoopState (fastserver._seam)
        self.loop = loop
        self.poll_interval = poll_interval
        self.count = int(server.workers)
        if self.count > max_workers():
            raise ValueError(f"workers must be at most {max_workers()} (32 per CPU), "
                             f"not {self.count}")
        self.graceful_timeout = graceful_timeout(server)  # checked before any worker starts
        self.workers = {}  # pid -> worker index
        self.started = {}  # pid -> monotonic() of its start
        self.retiring = {}  # pid -> (when it was asked to stop, its index)
        self.pending = {}  # index -> monotonic() when its replacement may start (a back-off)
        self.replaced = {}  # index -> the pid that its pending replacement replaces
        self.failures = 0  # workers in a row that died within BOOT_WINDOW of their start
        self.slots = {}  # index -> _Slot
        self.reload_requested = False
        self.stop_signal = None  # the signal that asked us to stop, if one did

    def run(self):
        saved = self._install_signal_handlers()
        timeout = self.server.socket.gettimeout()  # the workers make it non-blocking
        failed = None
        try:
            log.info("supervisor (pid %d) starting %d workers on %s", os.getpid(), self.count,
                     _address(self.server))
            for index in range(self.count):
                if self.state.shutdown_request:
                    break  # a stop signal while we start them: honoured at once
                self._spawn(index)
            while not self.state.shutdown_request:
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                failed = self._reap(respawn=True)
                if failed is not None:
                    break
                self._respawn_due()
                self.loop.sleep(self._next_wait())
        finally:
            if failed is None:
                why = (signal.Signals(self.stop_signal).name if self.stop_signal
                       else "shutdown()")
                log.info("%s: stopping %d workers (graceful_timeout %g s)", why,
                         len(self.workers), self.graceful_timeout)
            self._stop_all()
            self.server.socket.settimeout(timeout)
            for signum, handler in saved.items():
                signal.signal(signum, handler)
            for slot in self.slots.values():
                slot.close()
            log.info("supervisor (pid %d) stopped", os.getpid())
        if failed is not None:
            raise BootError(failed)

    def _next_wait(self):
        if not self.pending:
            return TICK
        return max(0.0, min(TICK, min(self.pending.values()) - monotonic()))

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}  # only shutdown() can stop us then
        saved = {}

        def stop(signum, frame):
            self.stop_signal = signum
            self.state.request_shutdown()

        def reload(signum, frame):
            self.reload_requested = True
            self.loop.wake()

        for signum in _STOP_SIGNALS:
            saved[signum] = signal.signal(signum, stop)
        saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
        return saved

    def _spawn(self, index, replacing=None):
        supervisor = os.getpid()  # before fork(): the child may outlive it before it asks
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = _Slot()
        slot.clear()
        # Until the child has its own handlers, a stop signal would run the supervisor's there
        # (and be forgotten when the worker resets its state): it waits, blocked, until then.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
        pid = None
        try:
            pid = os.fork()
            if pid == 0:
                self.loop.close()  # the parent's; the worker makes its own
                _run_worker(self.server, self.state, supervisor, index, self.poll_interval,
                            mask, slot)  # never returns
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.workers[pid] = index
        self.started[pid] = monotonic()
        if replacing is None:
            log.info("worker %d (pid %d) started", index, pid)
        else:
            log.info("worker %d (pid %d) started, replacing pid %d", index, pid, replacing)

    def _reload(self):
        """New workers first, then the old ones stop gracefully."""
        old = list(self.workers)
        log.info("SIGHUP: reloading: starting %d new workers, then retiring pids %s",
                 self.count, ", ".join(map(str, old)) or "(none)")
        self.pending.clear()
        self.failures = 0
        for index in range(self.count):
            if self.state.shutdown_request:
                break
            self._spawn(index)
        for pid in old:
            self._retire(pid)

    def _retire(self, pid):
        index = self.workers.pop(pid, None)
        self.retiring[pid] = (monotonic(), index)
        _signal(pid, signal.SIGTERM)

    def _respawn_due(self):
        now = monotonic()
        for index, when in list(self.pending.items()):
            if when <= now and not self.state.shutdown_request:
                del self.pending[index]
                self._spawn(index, replacing=self.replaced.pop(index, None))

    def _reap(self, respawn):
        """Collect the workers that exited; replace the ones that were not asked to stop (after
        a growing delay when they died as they started). The reason to give up, or None."""
        deadline = monotonic() - self.graceful_timeout - KILL_GRACE  # it gave up itself by then
        for pid, (asked, index) in list(self.retiring.items()):
            if asked < deadline:
                log.warning("worker %s (pid %d) still running %g s after it was asked to stop: "
                            "killing it", index, pid, self.graceful_timeout + KILL_GRACE)
                _signal(pid, signal.SIGKILL)
        for pid in list(self.workers) + list(self.retiring):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, None  # reaped elsewhere (a handler's waitpid(-1))
            if done == 0:
                continue
            started = self.started.pop(pid, None)
            how = "exited" if status is None else describe_status(status)
            retired = self.retiring.pop(pid, None)
            if retired is not None:
                log.info("worker %s (pid %d) %s", retired[1], pid, how)
                continue
            index = self.workers.pop(pid)
            cause = self.slots[index].read() if index in self.slots else ""
            lived = monotonic() - started if started is not None else math.inf
            what = f"worker {index} (pid {pid}) {how}" + (f" ({cause})" if cause else "")
            if not respawn:
                log.info("%s", what)
                continue
            if lived >= BOOT_WINDOW:
                self.failures = 0
                log.warning("%s after %.1f s: replacing it", what, lived)
                self._spawn(index, replacing=pid)
                continue
            self.failures += 1
            if self.failures >= BOOT_ATTEMPTS:
                reason = (f"{what} {lived:.2f} s after its start, the {BOOT_ATTEMPTS}th worker "
                          f"in a row to die within {BOOT_WINDOW:g} s")
                log.error("worker failed to boot: %s; stopping the others", reason)
                return reason
            delay = BOOT_BACKOFF * 2 ** (self.failures - 1)
            log.warning("%s %.2f s after its start (%d in a row): replacing it in %g s", what,
                        lived, self.failures, delay)
            self.pending[index] = monotonic() + delay
            self.replaced[index] = pid
        return None

    def _stop_all(self):
        self.pending.clear()
        for pid in list(self.workers):
            self._retire(pid)
        while self.retiring:
            self._reap(respawn=False)
            if self.retiring:
                self.loop.sleep(TICK / 10)


def _address(server):
    address = getattr(server, "server_address", None)
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]} port {address[1]}"
    return str(address)


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
    """A graceful stop, of a worker or of a single process (``serve_until_stopped``): the signal
    handler, and the watchdog that gives up on what is still running ``graceful_timeout`` seconds
    after it (see the module docstring). ``stop_loop(finish_until)`` ends the loop without
    waiting; ``who`` names the process in the log ("worker 0", "server")."""

    def __init__(self, server, stop_loop, who):
        self.server = server
        self.stop_loop = stop_loop
        self.who = who
        self.pid = os.getpid()
        self.timeout = graceful_timeout(server)
        self.asked = None  # monotonic() of the first stop signal
        self.signum = None  # the first stop signal, None for the loop's own end
        self.port = _tcp_port(server.socket)  # of the connections to reset at the deadline
        self.finished = _thread.allocate_lock()  # released once all is finished: no give_up()
        self.finished.acquire()

    def __call__(self, signum=None, frame=None):
        """SIGTERM/SIGINT (or the loop's end): stop accepting, and start the countdown."""
        if os.getpid() != self.pid:
            return  # a request process of ForkingMixIn: it finishes its request, as its worker
        if self.asked is None:
            self.asked = monotonic()
            self.signum = signum
            # Not threading.Thread: this may run in a signal handler that interrupted the main
            # thread holding threading's own locks. (Started only now, so that a worker that
            # forks its requests does not fork with a second thread running.)
            _thread.start_new_thread(self._watch, ())
        self.stop_loop(self.asked + self.timeout)

    def cancel(self):
        """Everything finished in time: the watchdog ends without giving up."""
        if self.finished.locked():
            self.finished.release()

    def _watch(self):
        deadline = self.asked + self.timeout
        while (left := deadline - monotonic()) > 0:
            # (a huge graceful_timeout is waited for in steps: acquire() refuses one at once)
            if self.finished.acquire(timeout=min(left, 3600.0)):
                return
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
            log.error("%s (pid %d) still busy %g s (graceful_timeout) after it was asked to "
                      "stop: %d connections reset, %d request processes killed", self.who,
                      self.pid, self.timeout, reset, killed)
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


def _stopper(state):
    """shutdown() without its wait, for a stop signal's handler: the loop of ``state`` (a
    LoopState) ends, serving the connections it holds as they speak until ``finish_until``."""

    def stop_loop(finish_until):
        state.finish_until = finish_until
        state.request_shutdown()

    return stop_loop


def serve_until_stopped(server, poll_interval=0.5, ready=None):
    """``server.serve_forever(poll_interval)``, stopped gracefully by SIGTERM as a worker is.

    For a single process (``workers`` = 1, in the main thread; anything else is plain
    serve_forever(), whose supervisor handles the signals): SIGTERM stops accepting, lets the
    requests in flight finish (those of ThreadingMixIn's threads, daemon or not, ForkingMixIn's
    processes, connections held for ``first_data_timeout`` that speak in time) up to
    ``graceful_timeout``, and returns; past it, what still runs is reset and the process exits 1,
    as a worker does. SIGINT keeps its meaning (KeyboardInterrupt). The caller closes the server.
    ``ready()``, if given, is called once SIGTERM is handled, just before the loop starts.
    """
    workers = server.workers
    if (server.worker_id is not None or type(workers) is not int or workers != 1
            or threading.current_thread() is not threading.main_thread()):
        if ready is not None:
            ready()
        return server.serve_forever(poll_interval)
    stop = _Stop(server, _stopper(server._loop_state()), "server")
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        try:
            if ready is not None:
                ready()
            server.serve_forever(poll_interval)
        finally:
            if stop.asked is not None:
                log.info("%s: stopped accepting; finishing the requests in flight "
                         "(graceful_timeout %g s)", signal.Signals(stop.signum).name,
                         stop.timeout)
                _finish_requests(server)
                stop.cancel()
                log.info("server (pid %d) stopped", os.getpid())
    finally:
        stop.cancel()
        signal.signal(signal.SIGTERM, previous)


def _run_worker(server, state, supervisor, index, poll_interval, mask, slot=None):
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
        stop = _Stop(server, _stopper(state), f"worker {index}")
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
    except BaseException as exc:
        status = 1
        if slot is not None:
            slot.write(exc)  # for the supervisor's line
        log.error("worker %d (pid %d) failed: %s: %s", index, os.getpid(), type(exc).__name__,
                  exc, exc_info=True)
    finally:
        os._exit(status)
