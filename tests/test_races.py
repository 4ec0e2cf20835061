"""Races between the threads of a running server: a stress test, bounded in count and time.

Many clients talk to a server while other threads call ``shutdown()`` at random moments, the
serving thread calls ``serve_forever()`` again each time it returns, and handlers close their own
streams, hand them to another thread, or close them from another thread while they use them. At
the end of each round the loop is stopped, ``server_close()`` runs (after the loop stopped, as the
contract asks), and the process must hold the descriptors and threads it held before.

What is tested as "must succeed" is what CPython's documentation promises: ``shutdown()`` from
another thread while ``serve_forever()`` runs, ``serve_forever()`` again after it returned,
``server_close()`` once the loop stopped. Misuse that the standard library itself loses
(``server_close()`` while the loop waits) is held only to "no crash, no hang, no leak".

These races matter most on a free-threaded interpreter running without the GIL, where two
threads really run a stream's or a loop's C code at once; ``scripts/sanitize.sh tsan`` runs this
file under ThreadSanitizer. Every wait is bounded (``helpers.TIMEOUT``), so that a hang fails a
test instead of blocking the suite.
"""

import contextlib
import os
import random
import socket
import threading
import time
import traceback

import pytest
from helpers import TIMEOUT, bounded, make_server, wait_until

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                                reason="counts descriptors and threads in /proc/self")

ROUNDS = 2  # a fresh server each round
CLIENT_THREADS = 5
REQUESTS_PER_CLIENT = 10  # each on a connection of its own (stream servers)
STOPPERS = 2  # threads that call shutdown() at random moments
STOP_EVERY = 0.01  # a stopper's mean pause between two shutdown() calls, in seconds
ROUND_DEADLINE = 20.0  # a round that takes longer has hung somewhere

# (kind, server class): the threaded servers without workers, and the synchronous ones.
SERVERS = [
    ("tcp", "ThreadingTCPServer"),
    ("unix", "ThreadingUnixStreamServer"),
    ("udp", "ThreadingUDPServer"),
    ("tcp", "TCPServer"),
    ("udp", "UDPServer"),
]

# What a stream handler does with its rfile and wfile, picked by the request.
STREAM_MODES = [
    "plain",  # read a line, write the reply; finish() closes the files
    "close_own",  # ... then close wfile and rfile itself before finish() does
    "hand_off",  # another thread reads the line and writes the reply; the handler joins it
    "close_both",  # after the reply, the handler and another thread close both files at once
    "close_under_read",  # another thread closes rfile while the handler reads to EOF
]
DGRAM_MODES = ["plain", "hand_off"]


def sanitizer_logs():
    """Where a sanitizer writes its reports (scripts/sanitize.sh sets log_path): the file it
    opens at its first report is its own, not a leak."""
    options = os.environ.get("TSAN_OPTIONS", "") + ":" + os.environ.get("ASAN_OPTIONS", "")
    return tuple(o.split("=", 1)[1] for o in options.split(":") if o.startswith("log_path="))


def open_fds():
    """The descriptors this process holds, with what each one is."""
    found, logs = set(), sanitizer_logs()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if not (logs and target.startswith(logs)):
            found.add((int(name), target))
    return found


def os_threads():
    return len(os.listdir("/proc/self/task"))


def in_thread(target, *args, name):
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def join_all(threads, timeout):
    """Join ``threads`` within ``timeout`` seconds in all; the names of those still running."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


def racing_handler(module, stream, errors):
    """A handler that echoes the request's first line, in the way the line itself names (one of
    STREAM_MODES / DGRAM_MODES); anything unexpected it meets goes to ``errors``."""

    def helper(target):
        thread = in_thread(target, name="handler-helper")
        thread.join(TIMEOUT)
        if thread.is_alive():
            errors.append("a handler's helper thread hung")

    class StreamHandler(module.StreamRequestHandler):
        def handle(self):
            mode = self.mode()
            if mode == "hand_off":
                helper(self.echo)
                return
            line = self.rfile.readline()
            if mode == "close_under_read":
                closer = in_thread(self.rfile.close, name="rfile-closer")
                try:
                    self.rfile.read()  # EOF (the client shut its side) or a closed file
                except ValueError:
                    pass
                closer.join(TIMEOUT)
            self.wfile.write(line)
            if mode == "close_own":
                self.wfile.close()
                self.rfile.close()
            elif mode == "close_both":
                closer = in_thread(self.close_files, name="files-closer")
                self.close_files()
                closer.join(TIMEOUT)

        def mode(self):
            # Peeked, not read: in "hand_off" another thread reads the whole line from rfile.
            peeked = self.request.recv(64, socket.MSG_PEEK)
            return peeked.split(b" ", 1)[0].decode()

        def echo(self):
            self.wfile.write(self.rfile.readline())
            self.wfile.flush()

        def close_files(self):
            for file in (self.wfile, self.rfile):
                try:
                    file.close()
                except ValueError:
                    # The other thread's close() won: io's buffered files raise when two
                    # threads close one at once (the stdlib's own, with the GIL or without).
                    pass

    class DatagramHandler(module.DatagramRequestHandler):
        def handle(self):
            if self.packet.startswith(b"hand_off"):
                helper(self.echo)
            else:
                self.echo()

        def echo(self):
            self.wfile.write(self.rfile.readline())

    return StreamHandler if stream else DatagramHandler


def racing_server(module, kind, base, directory, errors):
    """A ``base`` server of ``kind`` with the racing handler; handle_error() records into
    ``errors``. Its backlog is deep: connections wait there while the loop restarts, instead of
    being dropped and retried a second later."""
    stream = kind != "udp"

    def handle_error(server, request, client_address):
        errors.append(f"handle_error: {traceback.format_exc()}")

    return make_server(module, kind, racing_handler(module, stream, errors), directory,
                       base=base, request_queue_size=128, handle_error=handle_error)


def request(server, line, sock=None, timeout=TIMEOUT):
    """Send ``line`` to ``server`` and return the reply: on a connection of its own for a
    stream server (the whole reply, to EOF), else from the datagram socket ``sock``."""
    if sock is not None:
        sock.sendto(line, server.server_address)
        return sock.recv(65536)
    with socket.socket(server.address_family, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(server.server_address)
        conn.sendall(line)
        conn.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: conn.recv(65536), b""))


def datagram_client(server, timeout=TIMEOUT):
    sock = socket.socket(server.address_family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.bind(("127.0.0.1", 0))
    return sock


def requests_of(number, count, stream):
    """Client ``number``'s ``count`` request lines, going through the handler's modes."""
    modes = STREAM_MODES if stream else DGRAM_MODES
    for i in range(count):
        yield f"{modes[(number + i) % len(modes)]} {number} {i}\n".encode()


@contextlib.contextmanager
def leaves_nothing_behind():
    """Fail unless the threads and descriptors of the process are back where they were."""
    # A runtime may start a helper thread of its own at the first thread (ThreadSanitizer does):
    # one thread run to its end first, so that it is counted before.
    in_thread(lambda: None, name="warm-up").join(TIMEOUT)
    threads_before, tasks_before = set(threading.enumerate()), os_threads()
    fds_before = open_fds()
    yield
    assert wait_until(lambda: set(threading.enumerate()) <= threads_before, timeout=2), (
        set(threading.enumerate()) - threads_before)
    # A thread that Python has joined may still be leaving the kernel for a moment.
    assert wait_until(lambda: os_threads() <= tasks_before, timeout=2), os_threads()
    assert wait_until(lambda: open_fds() <= fds_before, timeout=2), open_fds() - fds_before


def stop_serving(server, serving):
    """shutdown() until the thread ``serving`` (which may start serve_forever() once more)
    has ended; False if it has not within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while serving.is_alive() and time.monotonic() < deadline:
        bounded(server.shutdown)
        serving.join(0.05)
    return not serving.is_alive()


def stress_round(module, kind, base, directory):
    """One server under CLIENT_THREADS clients, STOPPERS stoppers and a serving thread that
    restarts serve_forever(); fails on a wrong reply, an error in a handler, or a hang."""
    errors = []
    stream = kind != "udp"
    threads_before = set(threading.enumerate())
    server = racing_server(module, kind, base, directory, errors)
    done = threading.Event()
    served = [0]  # serve_forever() calls that returned

    def serve():
        while not done.is_set():
            try:
                server.serve_forever(poll_interval=0.05)
            except BaseException as exc:  # noqa: B036 - the test fails on it
                errors.append(f"serve_forever raised {exc!r}")
                return
            served[0] += 1

    def stop(seed):
        rng = random.Random(seed)
        while not done.is_set():
            time.sleep(rng.expovariate(1 / STOP_EVERY))
            server.shutdown()  # serve() calls serve_forever() again at once: never a deadlock

    def client(number):
        sock = None if stream else datagram_client(server)
        try:
            for line in requests_of(number, REQUESTS_PER_CLIENT, stream):
                reply = request(server, line, sock)
                if reply != line:
                    errors.append(f"{line!r} got {reply!r}")
        except OSError as exc:
            errors.append(f"client {number}: {exc!r}")
        finally:
            if sock is not None:
                sock.close()

    serving = in_thread(serve, name="serve_forever")
    stoppers = [in_thread(stop, seed, name=f"stopper-{seed}") for seed in range(STOPPERS)]
    clients = [in_thread(client, n, name=f"client-{n}") for n in range(CLIENT_THREADS)]
    try:
        hung = join_all(clients, ROUND_DEADLINE)
    finally:
        done.set()
        # The last serve_forever() may have begun after the stoppers' last shutdown(); and a
        # stopper may wait in a shutdown() whose request the loop before consumed (set just as
        # that loop ended, the stdlib's window too): it returns when this last loop ends.
        hung += [] if stop_serving(server, serving) else [serving.name]
        hung = join_all(stoppers, TIMEOUT) + hung
        if not hung:
            bounded(server.server_close)
    assert not hung, f"still running: {hung}"
    assert not errors, "\n".join(map(str, errors[:5]))
    # server_close() has joined the request threads (block_on_close): none is left, not even
    # one about to end.
    assert set(threading.enumerate()) <= threads_before, set(threading.enumerate()) - threads_before
    assert served[0] >= 1  # the stoppers did stop it, and it served again after


def server_ids():
    return [base for _, base in SERVERS]


@pytest.mark.parametrize(("kind", "base"), SERVERS, ids=server_ids())
def test_shutdown_and_serve_again_under_load_leaves_nothing_behind(ss, kind, base, sock_dir):
    if not hasattr(ss, base):
        pytest.skip(f"no {base} here")
    with leaves_nothing_behind():
        for _ in range(ROUNDS):
            stress_round(ss, kind, base, sock_dir)


def recording(function, errors):
    """Call ``function()``; what it raises goes to ``errors``."""
    try:
        function()
    except BaseException as exc:  # noqa: B036 - the test fails on it
        errors.append(f"{function.__name__}() raised {exc!r}")


def serve_until_closed(server, errors):
    """serve_forever(); a close that came first makes it raise as the stdlib's does (ValueError
    for the descriptor -1, or an OSError), which is this misuse's own outcome."""
    try:
        server.serve_forever(poll_interval=0.05)
    except (ValueError, OSError):
        pass
    except BaseException as exc:  # noqa: B036 - the test fails on it
        errors.append(f"serve_forever raised {exc!r}")


def close_round(module, kind, base, directory):
    """server_close() and shutdown() from two threads at once while serve_forever() runs and
    clients talk; fails on a hang or a wrong reply (no reply at all is allowed)."""
    errors = []
    stream = kind != "udp"
    server = racing_server(module, kind, base, directory, errors)
    closing = threading.Event()

    def client(number):
        # A short timeout: a datagram sent as the socket closes is never answered.
        sock = None if stream else datagram_client(server, timeout=0.5)
        try:
            for line in requests_of(number, REQUESTS_PER_CLIENT, stream):
                if closing.is_set():
                    return
                try:
                    reply = request(server, line, sock, timeout=0.5)
                except OSError:
                    continue  # refused, reset or unanswered once the socket closed
                if reply and reply != line:
                    errors.append(f"{line!r} got {reply!r}")
        finally:
            if sock is not None:
                sock.close()

    with contextlib.ExitStack() as cleanup:
        serving = in_thread(serve_until_closed, server, errors, name="serve_forever")
        cleanup.callback(bounded, server.server_close)  # once more, now the loop has stopped
        clients = [in_thread(client, n, name=f"client-{n}") for n in range(CLIENT_THREADS)]
        time.sleep(0.02)  # clients in flight
        closing.set()
        closer = in_thread(recording, server.server_close, errors, name="server_close")
        stopper = in_thread(recording, server.shutdown, errors, name="shutdown")
        hung = join_all([closer, stopper, *clients], TIMEOUT + 1)
        hung += [] if stop_serving(server, serving) else [serving.name]
        assert not hung, f"still running: {hung}"
    # A handler whose connection the closing server reset may fail (handle_error): the
    # misuse's own doing, and the stdlib's too.
    assert not [e for e in errors if not e.startswith("handle_error")], errors[:5]


@pytest.mark.parametrize(("kind", "base"), SERVERS, ids=server_ids())
def test_server_close_while_serving_neither_crashes_nor_leaks(fast, kind, base, sock_dir):
    """Misuse: server_close() while serve_forever() waits, and shutdown() at the same moment
    from a third thread. The contract asks for server_close() after the loop stopped, and the
    standard library loses this race at times (its ThreadingMixIn.server_close() may raise
    RuntimeError, joining a thread not yet started). fastserver must not: neither call raises,
    the loop stops, nothing hangs, nothing is left open; its clients see refused or reset
    connections and lost datagrams, never a wrong reply."""
    if not hasattr(fast, base):
        pytest.skip(f"no {base} here")
    with leaves_nothing_behind():
        for _ in range(ROUNDS):
            close_round(fast, kind, base, sock_dir)
