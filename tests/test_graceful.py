"""Worker processes that stop (SIGTERM) or retire (SIGHUP) finish what they accepted.

Real processes and real sockets on loopback: ``python -m fastserver.http --workers 2`` and
fastserver server classes with ``workers = 2``, each on the compiled and the pure core (the child
gets ``FASTSERVER_NO_EXTENSIONS=1`` for the pure one). A slow client downloads a file too big to
sit in the socket buffers while the server is signalled: every byte must arrive. A request still
running after ``graceful_timeout`` is cut off with a reset, never a clean EOF.
"""

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from helpers import TIMEOUT, alive, child_env, children_of, wait_until

import fastserver

CORES = ["cython", "python"]
SIZE = 16 * 2**20  # many times what the socket buffers hold: the download is in flight
CHUNK = 65536
READ_PAUSE = 0.004  # the slow client: 64 KiB, then this pause (about 10 MB/s at most)
SIGNAL_AT = SIZE // 8  # bytes received when the server is signalled
MEDIUM = 4 * 2**20  # each reply under load: more than the socket buffers hold


@pytest.fixture(params=CORES)
def core(request):
    """The core the child processes run on."""
    if request.param not in fastserver._cores.CORES:
        pytest.skip("no compiled core in this installation")
    return request.param


def env_for(core):
    env = child_env()
    env.pop("FASTSERVER_NO_EXTENSIONS", None)
    if core == "python":
        env["FASTSERVER_NO_EXTENSIONS"] = "1"
    return env


def pattern(size):
    """The bytes the servers send: 64 KiB blocks of noise, each starting with its own index."""
    noise = random.Random(12).randbytes(CHUNK)
    for index, offset in enumerate(range(0, size, CHUNK)):
        yield (index.to_bytes(8, "big") + noise[8:])[:size - offset]


def digest(size):
    sha = hashlib.sha256()
    for block in pattern(size):
        sha.update(block)
    return sha.hexdigest()


class Server:
    """A server process (its own session, so that nothing it leaves survives the test), its
    stderr in a file; ``port`` is where it listens."""

    def __init__(self, argv, core, tmp_path):
        self.stderr_path = tmp_path / "stderr.txt"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=env_for(core), start_new_session=True)
        self.port = None
        self.seen = set()  # every worker (and request child) pid seen

    def line(self, timeout=TIMEOUT * 2):
        """The next line of its stdout, failing if none comes within ``timeout``."""
        got = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not got or not got[0]:
            self.kill()
            pytest.fail(f"no line from the server; stderr:\n{self.errors()}")
        return got[0].decode()

    def workers(self):
        pids = set(children_of(self.proc.pid))
        self.seen |= pids
        for pid in pids:
            self.seen.update(children_of(pid))
        return pids

    def wait_for_workers(self, count=2, not_in=()):
        started = wait_until(lambda: len(self.workers() - set(not_in)) >= count,
                             timeout=TIMEOUT * 2)
        assert started, f"workers did not start; stderr:\n{self.errors()}"
        return self.workers() - set(not_in)

    def signal(self, signum):
        self.workers()  # note who runs now, to check later that all of them are gone
        os.kill(self.proc.pid, signum)

    def stop(self, timeout=TIMEOUT * 3):
        """SIGTERM, then the parent's exit code; no worker or request child may outlive it."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout=TIMEOUT * 3):
        """The exit code of a parent that was told to stop; nothing of it may outlive it."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the parent did not exit within {timeout} s; stderr:\n{self.errors()}")
        self.assert_nothing_left()
        return code

    def assert_nothing_left(self):
        """The parent has exited: none of its workers or their request processes may run on."""
        left = [pid for pid in self.seen if alive(pid)]
        assert not left, f"left running: {left}"
        assert not children_of(self.proc.pid)  # reaped (wait() reaped the parent)

    def errors(self):
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.seen:  # a worker that outlived its session's leader
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(TIMEOUT)

    def close(self):
        if self.proc.poll() is None or any(alive(pid) for pid in self.seen):
            self.kill()
        self.proc.stdout.close()
        self.stderr.close()


def start_http_cli(core, tmp_path):
    """``python -m fastserver.http --workers 2`` serving ``tmp_path`` (on a port it picks)."""
    with open(tmp_path / "big.bin", "wb") as f:
        for block in pattern(SIZE):
            f.write(block)
    (tmp_path / "medium.bin").write_bytes(random.Random(3).randbytes(MEDIUM))
    server = Server([sys.executable, "-m", "fastserver.http", "--bind", "127.0.0.1",
                     "--directory", str(tmp_path), "--workers", "2", "0"], core, tmp_path)
    first = server.line()
    assert first.startswith("Serving HTTP on 127.0.0.1 port "), first
    server.port = int(first.split()[5])
    server.request = b"GET /big.bin HTTP/1.0\r\n\r\n"
    return server


# A fastserver server class with workers = 2 whose handler sends SIZE bytes of pattern(), or,
# asked for "stuck", sends a line and then hangs. argv: base class (with "+verify": it overrides
# verify_request, so that on the compiled core the loop accepts and hands each connection to the
# pool, instead of the request threads accepting their own), graceful_timeout, SIZE,
# first_data_timeout ("none": unset; else verify_request says which client it accepted).
SERVER_SCRIPT = """\
import os, random, signal, sys, threading, time
import fastserver

BASE, GRACEFUL, SIZE, FIRST_DATA = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
BASE, _, VERIFY = BASE.partition("+")
CHUNK = 65536
NOISE = random.Random(12).randbytes(CHUNK)


class Handler(fastserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        if line == b"stuck\\n":
            self.wfile.write(b"started %d\\n" % os.getpid())
            time.sleep(60)
            return
        if line.startswith(b"echo "):
            self.wfile.write(b"ok " + line)
            return
        if line == b"signal me\\n":  # SIGTERM that this request's thread, not the main one, takes
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            time.sleep(0.2)
            self.wfile.write(b"signalled %d\\n" % os.getpid())
            return
        if line.startswith(b"work "):  # an application's request: some time, then the reply
            time.sleep(0.01)
            self.wfile.write(b"done " + line)
            return
        for index, offset in enumerate(range(0, SIZE, CHUNK)):
            self.wfile.write((index.to_bytes(8, "big") + NOISE[8:])[:SIZE - offset])


class Server(getattr(fastserver, BASE)):
    workers = 2
    graceful_timeout = GRACEFUL
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    first_data_timeout = None if FIRST_DATA == "none" else float(FIRST_DATA)

    if VERIFY or FIRST_DATA != "none":
        def verify_request(self, request, client_address):
            if self.first_data_timeout is not None:
                print("accepted", client_address[1], flush=True)
            return True


with Server(("127.0.0.1", 0), Handler) as server:
    print(fastserver.IMPLEMENTATION, server.server_address[1], flush=True)
    server.serve_forever(0.5)
"""


def start_server_class(core, tmp_path, base, graceful_timeout=10.0, first_data_timeout=None):
    server = Server([sys.executable, "-c", SERVER_SCRIPT, base, str(graceful_timeout), str(SIZE),
                     "none" if first_data_timeout is None else str(first_data_timeout)],
                    core, tmp_path)
    implementation, port = server.line().split()
    assert implementation.startswith(core), implementation
    server.port = int(port)
    server.request = b"download\n"
    return server


def slow_download(server, at=SIGNAL_AT, signum=None):
    """Download from ``server`` at a bounded rate, sending it ``signum`` once ``at`` bytes have
    arrived: (bytes received, sha256 of what followed the HTTP header if any, error or None)."""
    sha = hashlib.sha256()
    received, error, header = 0, None, b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHUNK)
        client.sendall(server.request)
        http = server.request.startswith(b"GET")
        while True:
            try:
                data = client.recv(CHUNK)
            except OSError as exc:
                error = exc
                break
            if not data:
                break
            if http and not header:
                head, sep, data = data.partition(b"\r\n\r\n")
                assert sep, "the header came in pieces"  # http.server sends it in one write
                header = head
            received += len(data)
            sha.update(data)
            if signum is not None and received >= at:
                server.signal(signum)
                signum = None
            time.sleep(READ_PAUSE)
    if header:
        assert header.split(b" ", 2)[1] == b"200" and header.startswith(b"HTTP/1."), header
        assert b"Content-Length: %d" % SIZE in header, header
    return received, sha.hexdigest(), error


SERVERS = ["http-cli", "ThreadingTCPServer"]  # on the compiled core: request threads accept
POOL = "ThreadingTCPServer+verify"  # on the compiled core: the loop accepts, hands to the pool


def start(kind, core, tmp_path):
    if kind == "http-cli":
        return start_http_cli(core, tmp_path)
    return start_server_class(core, tmp_path, kind)


@pytest.mark.parametrize("kind", SERVERS + [POOL, "TCPServer", "ForkingTCPServer"])
def test_sigterm_lets_a_slow_download_finish(core, kind, tmp_path):
    server = start(kind, core, tmp_path)
    try:
        server.wait_for_workers()
        received, sha, error = slow_download(server, signum=signal.SIGTERM)
        assert (received, error) == (SIZE, None), f"cut off; stderr:\n{server.errors()}"
        assert sha == digest(SIZE)
        assert server.wait_exit() == 0
    finally:
        server.close()


@pytest.mark.parametrize("kind", SERVERS + [POOL])
def test_sighup_lets_the_retired_worker_finish_a_slow_download(core, kind, tmp_path):
    server = start(kind, core, tmp_path)
    try:
        old = server.wait_for_workers()
        received, sha, error = slow_download(server, signum=signal.SIGHUP)
        assert (received, error) == (SIZE, None), f"cut off; stderr:\n{server.errors()}"
        assert sha == digest(SIZE)
        new = server.wait_for_workers(not_in=old)
        assert wait_until(lambda: not any(alive(pid) for pid in old)), "old workers still run"
        assert server.workers() == new
        assert server.stop() == 0
    finally:
        server.close()


def http_exchange(port, number):
    """One GET of medium.bin: its body, or raises."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 2) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHUNK)
        sock.sendall(b"GET /medium.bin HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := sock.recv(CHUNK):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200") or len(body) != MEDIUM:
        raise AssertionError(f"incomplete reply: {head[:40]!r}, {len(body)} bytes")
    return body


def work_exchange(port, number):
    """One request to SERVER_SCRIPT's "work" handler: ok, or raises."""
    line = b"work %d\n" % number
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 2) as sock:
        sock.sendall(line)
        chunks = []
        while chunk := sock.recv(CHUNK):
            chunks.append(chunk)
    reply = b"".join(chunks)
    if reply != b"done " + line:
        raise AssertionError(f"incomplete reply: {reply!r}")
    return reply


@pytest.mark.parametrize("kind", SERVERS)
def test_sighup_loop_under_load_fails_no_request(core, kind, tmp_path):
    server = start(kind, core, tmp_path)
    if kind == "http-cli":
        expected = (tmp_path / "medium.bin").read_bytes()
        exchange = http_exchange
    else:
        expected = None
        exchange = work_exchange
    failures, done = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number):
        count = 0
        while not stop.is_set() and count < 2000:
            try:
                reply = exchange(server.port, number * 10000 + count)
                if expected is not None and reply != expected:
                    raise AssertionError("a reply with other bytes")
            except (OSError, AssertionError) as exc:
                with lock:
                    failures.append(repr(exc))
            count += 1
        with lock:
            done.append(count)

    try:
        first = server.wait_for_workers()
        clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
        for thread in clients:
            thread.start()
        time.sleep(0.3)
        for _ in range(5):
            before = server.workers()
            server.signal(signal.SIGHUP)
            server.wait_for_workers(not_in=before)  # the next reload once this one has begun
            time.sleep(0.3)
        stop.set()
        for thread in clients:
            thread.join(TIMEOUT * 3)
        assert not any(thread.is_alive() for thread in clients), "a client hung"
        assert failures == [], f"{len(failures)} of {sum(done)} requests failed: {failures[:5]}"
        assert sum(done) >= 100, done  # it was under load
        assert not server.workers() & first
        assert server.stop() == 0
    finally:
        stop.set()
        server.close()


@pytest.mark.parametrize("base", ["ThreadingTCPServer", "TCPServer"])
def test_a_request_stuck_past_graceful_timeout_is_reset(core, base, tmp_path):
    server = start_server_class(core, tmp_path, base, graceful_timeout=1.0)
    try:
        server.wait_for_workers()
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            client.sendall(b"stuck\n")
            assert client.recv(100).startswith(b"started ")
            began = time.monotonic()
            server.signal(signal.SIGTERM)
            with pytest.raises(ConnectionResetError):  # not a clean EOF: the client can tell
                client.recv(100)
            reset_after = time.monotonic() - began
        assert 0.9 <= reset_after <= 1.0 + TIMEOUT / 2
        assert server.wait_exit(TIMEOUT) == 0
        assert "graceful_timeout" in server.errors()  # the worker says what it did
    finally:
        server.close()


def test_a_forked_request_stuck_past_graceful_timeout_is_killed(core, tmp_path):
    server = start_server_class(core, tmp_path, "ForkingTCPServer", graceful_timeout=1.0)
    try:
        server.wait_for_workers()
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            client.sendall(b"stuck\n")
            request_child = int(client.recv(100).split()[1])
            server.signal(signal.SIGTERM)
            try:
                assert client.recv(100) == b""
            except ConnectionResetError:
                pass
        server.seen.add(request_child)
        assert server.wait_exit(TIMEOUT) == 0  # and the request's process is gone: no orphan
    finally:
        server.close()


def test_a_stop_signal_that_a_request_thread_takes_stops_the_worker(core, tmp_path):
    # The kernel gives a process's signal to any thread that does not block it; Python runs the
    # handler in the main thread, which must notice even while it waits in the compiled loop.
    server = start_server_class(core, tmp_path, "ThreadingTCPServer")
    try:
        workers = server.wait_for_workers()
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            client.sendall(b"signal me\n")
            reply = client.recv(100)  # its request still finishes
            assert reply.startswith(b"signalled "), reply
            signalled = int(reply.split()[1])
        assert signalled in workers
        assert wait_until(lambda: not alive(signalled)), "the worker ignored its SIGTERM"
        server.wait_for_workers(not_in=[signalled])  # and the parent replaced it
        assert server.stop() == 0
    finally:
        server.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_connection_held_until_it_speaks_is_served_not_dropped(core, signum, tmp_path):
    server = start_server_class(core, tmp_path, "ThreadingTCPServer", first_data_timeout=5.0)
    try:
        server.wait_for_workers()
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            port = client.getsockname()[1]
            assert server.line() == f"accepted {port}\n"  # a worker holds it (silent so far)
            server.signal(signum)
            time.sleep(0.3)  # the worker is stopping meanwhile
            client.sendall(b"echo late\n")
            assert client.recv(100) == b"ok echo late\n"
        assert (server.stop() if signum == signal.SIGHUP else server.wait_exit()) == 0
    finally:
        server.close()


@pytest.mark.parametrize("value, error", [(-1, ValueError), (float("nan"), ValueError),
                                          (float("inf"), ValueError), ("10", TypeError),
                                          (None, TypeError), (True, TypeError)])
def test_bad_graceful_timeout_raises_before_any_worker_starts(value, error):
    class Server(fastserver.ThreadingTCPServer):
        workers = 2
        graceful_timeout = value

    before = set(children_of(os.getpid()))
    outcome = []

    def serve():
        try:
            server.serve_forever(0.05)
        except Exception as exc:
            outcome.append(exc)

    with Server(("127.0.0.1", 0), fastserver.StreamRequestHandler) as server:
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        thread.join(1.0)
        if thread.is_alive():  # it took the setting and forked its workers
            server.shutdown()
            thread.join(TIMEOUT)
    assert set(children_of(os.getpid())) == before  # no worker left (none was forked)
    assert len(outcome) == 1 and isinstance(outcome[0], error), outcome
    assert "graceful_timeout" in str(outcome[0])


# http.server's handler speaking HTTP/1.1 under workers = 2: its idle keep-alive connections park.
KEEP_ALIVE_SCRIPT = """\
import functools, sys
import fastserver, fastserver.http as cli


class Handler(cli.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass


class Server(cli.ThreadingHTTPServer):
    workers = 2
    graceful_timeout = 10.0
    daemon_threads = True
    keep_alive_linger = 0.0


with Server(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[1])) as server:
    print(fastserver.IMPLEMENTATION, server.server_address[1], flush=True)
    server.serve_forever(0.5)
"""


def test_a_stopping_worker_finishes_its_download_and_closes_its_parked_connections(core,
                                                                                   tmp_path):
    with open(tmp_path / "big.bin", "wb") as f:
        for block in pattern(SIZE):
            f.write(block)
    (tmp_path / "small.txt").write_bytes(b"small")
    server = Server([sys.executable, "-c", KEEP_ALIVE_SCRIPT, str(tmp_path)], core, tmp_path)
    try:
        implementation, port = server.line().split()
        assert implementation.startswith(core), implementation
        server.port = int(port)
        server.request = b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        server.wait_for_workers()
        idle = []
        for _ in range(4):  # on either worker: each has its own parked connections
            client = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            idle.append(client)
            client.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"\r\n\r\nsmall"):
                reply += client.recv(1000)
            assert reply.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        received, sha, error = slow_download(server, signum=signal.SIGTERM)
        assert (received, error) == (SIZE, None), f"cut off; stderr:\n{server.errors()}"
        assert sha == digest(SIZE)
        for client in idle:  # closed cleanly (EOF), not left to graceful_timeout's reset
            assert client.recv(100) == b""
            client.close()
        assert server.wait_exit() == 0
        assert time.monotonic() - started < 10.0  # nobody waited out graceful_timeout
    finally:
        server.close()
