"""first_data_timeout: a connection gets a thread (or the single thread) only once it has spoken.

fastserver-only (the stdlib processes every connection as soon as it is accepted), so these run on
both of fastserver's cores. Each test counts what matters: replies, handler runs, handle_error
calls, threads, descriptors.
"""

import os
import socket
import threading
import time

import pytest
from helpers import TIMEOUT, ask, closed_by_peer, make_server, serving, wait_until


class Recorder:
    """What a server's handlers and handle_error saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines = []
        self.errors = []

    def handler(self, module, delay=0.0):
        recorder = self

        class Handler(module.StreamRequestHandler):
            timeout = TIMEOUT

            def handle(self):
                line = self.rfile.readline()
                with recorder.lock:
                    recorder.lines.append(line)
                time.sleep(delay)
                self.wfile.write(b"ok " + line)

        return Handler

    def handle_error(self):
        recorder = self

        def handle_error(server, request, client_address):
            with recorder.lock:
                recorder.errors.append(client_address)

        return handle_error


def connect(server):
    return socket.create_connection(server.server_address, timeout=TIMEOUT)


def open_fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


def test_an_idle_client_does_not_block_a_single_threaded_server(fast):
    recorder = Recorder()
    server = make_server(fast, "tcp", recorder.handler(fast), first_data_timeout=TIMEOUT,
                         handle_error=recorder.handle_error())
    with serving(server):
        with connect(server) as idle:
            # Without parking the one thread would sit in the idle client's readline().
            assert ask(server.server_address, b"first\n") == b"ok first\n"
            assert ask(server.server_address, b"second\n") == b"ok second\n"
            idle.sendall(b"late\n")  # the idle one is served too, once it speaks
            assert idle.recv(100) == b"ok late\n"
    assert recorder.lines == [b"first\n", b"second\n", b"late\n"]
    assert recorder.errors == []


@pytest.mark.parametrize("base", ["TCPServer", "ThreadingTCPServer"])
def test_silent_connections_are_closed_after_the_timeout_without_a_handler(fast, base):
    recorder = Recorder()
    server = make_server(fast, "tcp", recorder.handler(fast), base=base, first_data_timeout=0.2,
                         handle_error=recorder.handle_error())
    fds = open_fds()
    with serving(server):
        silent = [connect(server) for _ in range(20)]
        start = time.monotonic()
        for client in silent:
            assert closed_by_peer(client)  # EOF, within the client's own timeout
            client.close()
        elapsed = time.monotonic() - start
        assert ask(server.server_address, b"after\n") == b"ok after\n"
    assert 0.15 <= elapsed < TIMEOUT
    assert recorder.lines == [b"after\n"]  # no handler ran for the silent ones
    assert recorder.errors == []
    if fds is not None:
        assert wait_until(lambda: open_fds() <= fds, timeout=2.0), "descriptors leaked"


def test_a_client_that_speaks_before_the_timeout_is_served(fast):
    recorder = Recorder()
    server = make_server(fast, "tcp", recorder.handler(fast), base="ThreadingTCPServer",
                         first_data_timeout=1.0, handle_error=recorder.handle_error())
    with serving(server):
        with connect(server) as client:
            time.sleep(0.3)
            client.sendall(b"slow\n")
            assert client.recv(100) == b"ok slow\n"
        with connect(server) as client:  # EOF is readable too: the handler sees it, as usual
            client.shutdown(socket.SHUT_WR)
            assert client.recv(100) == b"ok "
    assert recorder.lines == [b"slow\n", b""]


def test_ready_connections_wait_for_a_free_thread_and_none_is_lost(fast):
    recorder = Recorder()
    server = make_server(fast, "tcp", recorder.handler(fast, delay=0.05),
                         base="ThreadingTCPServer", max_threads=2, first_data_timeout=TIMEOUT,
                         request_queue_size=64, handle_error=recorder.handle_error())
    base_threads = threading.active_count()
    peak = [0]
    with serving(server):
        clients = [connect(server) for _ in range(12)]
        for number, client in enumerate(clients):
            client.sendall(b"%d\n" % number)
        replies = []
        for client in clients:
            with client:
                peak[0] = max(peak[0], threading.active_count() - base_threads)
                replies.append(client.recv(100))
    assert replies == [b"ok %d\n" % n for n in range(12)]
    assert sorted(recorder.lines) == sorted(b"%d\n" % n for n in range(12))
    assert peak[0] <= 2 + 1  # two request threads, plus serve_forever's
    assert recorder.errors == []


def test_verify_request_runs_before_parking(fast):
    recorder = Recorder()
    server = make_server(fast, "tcp", recorder.handler(fast), first_data_timeout=TIMEOUT,
                         verify_request=lambda self, request, address: False)
    with serving(server):
        with connect(server) as client:
            start = time.monotonic()
            assert closed_by_peer(client)
            assert time.monotonic() - start < TIMEOUT / 2  # refused at once, not timed out
    assert recorder.lines == []


def test_shutdown_closes_silent_connections_and_the_server_serves_again(fast):
    recorder = Recorder()
    server = make_server(fast, "tcp", recorder.handler(fast), base="ThreadingTCPServer",
                         first_data_timeout=60.0)
    fds = open_fds()
    try:
        with serving(server, close=False):
            silent = [connect(server) for _ in range(5)]
            assert ask(server.server_address, b"one\n") == b"ok one\n"
        for client in silent:  # closed by the loop's end, not left open and unowned
            assert closed_by_peer(client)
            client.close()
        with serving(server, close=False):
            assert ask(server.server_address, b"two\n") == b"ok two\n"
    finally:
        server.server_close()
    if fds is not None:
        assert wait_until(lambda: open_fds() <= fds - 1, timeout=2.0), "descriptors leaked"


def test_an_error_in_a_silent_request_goes_to_handle_error_once(fast):
    recorder = Recorder()

    class Failing(fast.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            raise RuntimeError("handler fails")

    server = make_server(fast, "tcp", Failing, first_data_timeout=TIMEOUT,
                         handle_error=recorder.handle_error())
    with serving(server):
        with connect(server) as client:
            client.sendall(b"x\n")
            assert closed_by_peer(client)
    assert len(recorder.errors) == 1


def test_datagram_servers_ignore_it(fast):
    class Echo(fast.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(b"ok " + self.rfile.read())

    server = make_server(fast, "udp", Echo, first_data_timeout=0.1)
    with serving(server):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(TIMEOUT)
            client.sendto(b"ping", server.server_address)
            assert client.recv(100) == b"ok ping"


def test_at_the_loop_end_readable_connections_get_a_free_thread_and_the_rest_are_closed():
    # Parking on its own, with real sockets: 3 connections have spoken, one has not; one
    # thread is free when the loop ends.
    from fastserver._parking import Parking

    watched, processed, closed = set(), [], []
    free_threads = [1]

    def process(request, client_address):
        free_threads[0] -= 1
        processed.append(client_address)

    parked = Parking(watched.add, watched.discard, lambda: None, 60.0, process,
                     lambda request, client_address: None, closed.append)
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        for number, (server_side, _) in enumerate(pairs):
            parked.hold(server_side, number)
        assert watched == {server_side.fileno() for server_side, _ in pairs}
        for server_side, _ in pairs[:3]:
            assert parked.readable(server_side.fileno())
        assert not parked.readable(pairs[0][0].fileno())  # no longer parked
        parked.dispatch(lambda: free_threads[0] > 0)
        assert processed == [0] and len(parked.ready) == 2
        free_threads[0] = 1
        parked.close_all(lambda: free_threads[0] > 0)
        assert processed == [0, 1]
        assert closed == [pairs[3][0], pairs[2][0]]  # the silent one, then the one left waiting
        assert watched == set() and len(parked) == 0 and parked.next_timeout() is None
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()
