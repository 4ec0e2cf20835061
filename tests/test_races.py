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

import os
import random
import socket
import threading
import time

import pytest
from helpers import TIMEOUT, bounded, make_server, wait_until

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                                reason="counts descriptors and threads in /proc/self")

ROUNDS = 3  # a fresh server each round
CLIENT_THREADS = 6
REQUESTS_PER_CLIENT = 12  # each on a connection of its own (stream servers)
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


def open_fds():
    """The descriptors this process holds, with what each one is."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:
            pass  # the listing's own descriptor, closed by now
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


def stress_round(module, kind, base, directory):
    """One server under CLIENT_THREADS clients, STOPPERS stoppers and a serving thread that
    restarts serve_forever(); fails on a wrong reply, an error in a handler, or a hang."""
    errors = []
    stream = kind != "udp"
    handler = racing_handler(module, stream, errors)

    def handle_error(server, request, client_address):
        import traceback

        errors.append(f"handle_error: {traceback.format_exc()}")

    # A deep backlog: connections wait there while the loop restarts, instead of SYN retries.
    server = make_server(module, kind, handler, directory, base=base, request_queue_size=128,
                         handle_error=handle_error)
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

    modes = STREAM_MODES if stream else DGRAM_MODES

    def client(number):
        try:
            if not stream:
                sock = socket.socket(server.address_family, socket.SOCK_DGRAM)
                sock.settimeout(TIMEOUT)
                sock.bind(("127.0.0.1", 0))
            for i in range(REQUESTS_PER_CLIENT):
                mode = modes[(number + i) % len(modes)]
                line = f"{mode} {number} {i}\n".encode()
                if stream:
                    with socket.socket(server.address_family, socket.SOCK_STREAM) as sock:
                        sock.settimeout(TIMEOUT)
                        sock.connect(server.server_address)
                        sock.sendall(line)
                        sock.shutdown(socket.SHUT_WR)
                        reply = b"".join(iter(lambda: sock.recv(65536), b""))
                else:
                    sock.sendto(line, server.server_address)
                    reply = sock.recv(65536)
                if reply != line:
                    errors.append(f"{line!r} got {reply!r}")
        except OSError as exc:
            errors.append(f"client {number}: {exc!r}")
        finally:
            if not stream:
                sock.close()

    serving = in_thread(serve, name="serve_forever")
    stoppers = [in_thread(stop, seed, name=f"stopper-{seed}") for seed in range(STOPPERS)]
    clients = [in_thread(client, n, name=f"client-{n}") for n in range(CLIENT_THREADS)]
    try:
        hung = join_all(clients, ROUND_DEADLINE)
    finally:
        done.set()
        hung = join_all(stoppers, TIMEOUT) + hung
        # The last serve_forever() may have begun after the stoppers' last shutdown().
        deadline = time.monotonic() + TIMEOUT
        while serving.is_alive() and time.monotonic() < deadline:
            bounded(server.shutdown)
            serving.join(0.05)
        hung += [serving.name] if serving.is_alive() else []
        if not hung:
            bounded(server.server_close)
    assert not hung, f"still running: {hung}"
    assert not errors, "\n".join(map(str, errors[:5]))
    assert served[0] >= 1  # the stoppers did stop it, and it served again after


@pytest.mark.parametrize(("kind", "base"), SERVERS, ids=[base for _, base in SERVERS])
def test_shutdown_and_serve_again_under_load_leaves_nothing_behind(ss, kind, base, sock_dir):
    if not hasattr(ss, base):
        pytest.skip(f"no {base} here")
    threads_before, tasks_before = set(threading.enumerate()), os_threads()
    fds_before = open_fds()
    for _ in range(ROUNDS):
        stress_round(ss, kind, base, sock_dir)
    assert wait_until(lambda: set(threading.enumerate()) <= threads_before, timeout=2), (
        set(threading.enumerate()) - threads_before)
    # A thread that Python has joined may still be leaving the kernel for a moment.
    assert wait_until(lambda: os_threads() <= tasks_before, timeout=2), os_threads()
    assert wait_until(lambda: open_fds() <= fds_before, timeout=2), open_fds() - fds_before
