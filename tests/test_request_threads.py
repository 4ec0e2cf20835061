"""ThreadingMixIn's request threads under load-like conditions: the cap, shutdown, joining.

On the compiled core (Linux), the request threads of a plain ThreadingMixIn server accept their
connections themselves (fastserver._acceptors); these tests hold every core to the same rules.
"""

import threading
import time

import pytest
from helpers import TIMEOUT, bounded, client_for, make_server, receive, send, serving, wait_until

import fastserver


def threaded(module, respond, **attrs):
    class Handler(module.BaseRequestHandler):
        def handle(self):
            self.request.sendall(respond(self, self.request.recv(1024)))

    return make_server(module, "tcp", Handler, base="ThreadingTCPServer", **attrs)


def uses_acceptors(module):
    if module is not fastserver or fastserver._cores.active is fastserver._cores.PURE:
        return False
    from fastserver import _acceptors

    return _acceptors.SUPPORTED


@pytest.mark.parametrize("cap", [1, 2])
def test_max_threads_caps_the_running_requests_and_serves_the_rest(fast, cap):
    lock = threading.Lock()
    running, peak, release = [0], [0], threading.Event()

    def respond(handler, data):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(TIMEOUT)
        with lock:
            running[0] -= 1
        return data

    server = threaded(fast, respond, max_threads=cap)
    with serving(server):
        clients = [client_for(server) for _ in range(cap + 2)]
        try:
            for i, client in enumerate(clients):
                send(client, server, b"%d" % i)
            assert wait_until(lambda: running[0] == cap)
            time.sleep(0.1)
            assert running[0] == cap  # the others wait in the backlog
            release.set()
            for i, client in enumerate(clients):
                assert receive(client, server) == b"%d" % i
        finally:
            release.set()
            for client in clients:
                client.close()
    assert peak[0] == cap


def test_a_slow_request_never_holds_up_the_next(ss):
    """One thread per concurrent request: requests that block do not stop the others."""
    release = threading.Event()

    def respond(handler, data):
        if data == b"slow":
            release.wait(TIMEOUT)
        return data

    server = threaded(ss, respond)
    with serving(server):
        slow = [client_for(server) for _ in range(3)]
        try:
            for client in slow:
                send(client, server, b"slow")
            for i in range(5):
                with client_for(server) as client:
                    send(client, server, b"%d" % i)
                    assert receive(client, server) == b"%d" % i
            release.set()
            for client in slow:
                assert receive(client, server) == b"slow"
        finally:
            release.set()
            for client in slow:
                client.close()


def test_no_connection_is_accepted_after_shutdown(ss):
    server = threaded(ss, lambda handler, data: data.upper())
    try:
        with serving(server, close=False):
            with client_for(server) as client:
                send(client, server, b"a")
                assert receive(client, server) == b"A"
        with client_for(server) as client:
            send(client, server, b"b")
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(1)  # queued: nobody serves it until the server runs again
            client.settimeout(TIMEOUT)
            bounded(server.handle_request)
            assert receive(client, server) == b"B"
    finally:
        server.server_close()


def test_shutdown_is_prompt_with_idle_threads(fast):
    """(The stdlib's loop notices shutdown() only at its next poll_interval.)"""
    server = threaded(fast, lambda handler, data: data)
    with serving(server, poll_interval=10, close=False):
        for i in range(4):
            with client_for(server) as client:
                send(client, server, b"%d" % i)
                assert receive(client, server) == b"%d" % i
        started = time.monotonic()
        bounded(server.shutdown)
        assert time.monotonic() - started < 0.5
    server.server_close()


@pytest.mark.parametrize("daemon", [False, True])
def test_server_close_leaves_no_thread_behind(ss, daemon):
    before = set(threading.enumerate())
    server = threaded(ss, lambda handler, data: data, daemon_threads=daemon)
    with serving(server):
        clients = [client_for(server) for _ in range(6)]
        for i, client in enumerate(clients):
            send(client, server, b"%d" % i)
        for i, client in enumerate(clients):
            assert receive(client, server) == b"%d" % i
            client.close()
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout=2)


def test_an_exception_out_of_handle_error_goes_to_excepthook_and_serving_goes_on(ss, monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(args))

    def respond(handler, data):
        if data == b"bad":
            raise LookupError("bad")
        return data

    def handle_error(self, request, client_address):
        raise KeyError("from handle_error")

    server = threaded(ss, respond, handle_error=handle_error)
    with serving(server):
        with client_for(server) as client:
            send(client, server, b"bad")
            assert receive(client, server) == b""
        assert wait_until(lambda: hooked)
        assert hooked[0].exc_type is KeyError and hooked[0].thread is not None
        with client_for(server) as client:
            send(client, server, b"good")
            assert receive(client, server) == b"good"


def echo_from_many(server, count):
    """``count`` clients connect at once, each sends its number, and each gets it back."""
    clients = [client_for(server) for _ in range(count)]
    try:
        for i, client in enumerate(clients):
            send(client, server, b"%d" % i)
        for i, client in enumerate(clients):
            assert receive(client, server) == b"%d" % i
    finally:
        for client in clients:
            client.close()


def test_many_connections_at_once_are_all_served(ss):
    server = threaded(ss, lambda handler, data: data, request_queue_size=128)
    with serving(server):
        echo_from_many(server, 64)


def test_the_compiled_core_lets_the_request_threads_accept(fast):
    if not uses_acceptors(fast):
        pytest.skip("the pure core, or no EPOLLEXCLUSIVE here: the loop accepts")
    loops = []

    def respond(handler, data):
        loops.append(type(handler.server._threads._adopted[-1]).__name__)
        return data

    server = threaded(fast, respond)
    with serving(server):
        with client_for(server) as client:
            send(client, server, b"x")
            assert receive(client, server) == b"x"
    assert loops == ["Acceptors"]


def test_a_file_left_open_keeps_the_socket_open_after_the_request(ss):
    """close_request() closes the socket only once its makefile() files are closed too."""
    files, done = [], threading.Event()

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            files.append((self.request, self.request.makefile("rb")))
            self.request.sendall(self.request.recv(1024))

        def finish(self):
            done.set()

    server = make_server(ss, "tcp", Handler, base="ThreadingTCPServer")
    with serving(server):
        with client_for(server) as client:
            send(client, server, b"x")
            assert receive(client, server) == b"x"
            assert done.wait(TIMEOUT)
            request, file = files[0]
            assert wait_until(lambda: request._closed)  # close() was called
            assert file.fileno() >= 0  # but the descriptor lives while the file is open
            file.close()
            assert request.fileno() == -1


def test_idle_threads_retire_after_a_burst(fast, monkeypatch):
    monkeypatch.setattr(fastserver._pool, "IDLE_SECONDS", 0.2)
    release = threading.Event()

    def respond(handler, data):
        release.wait(TIMEOUT)
        return data

    server = threaded(fast, respond)
    with serving(server):
        clients = [client_for(server) for _ in range(6)]
        try:
            for i, client in enumerate(clients):
                send(client, server, b"%d" % i)
            assert wait_until(lambda: len(server._threads) >= 6)
            release.set()
            for i, client in enumerate(clients):
                assert receive(client, server) == b"%d" % i
        finally:
            release.set()
            for client in clients:
                client.close()
        assert wait_until(lambda: len(server._threads) <= 1)  # one waits on, at most


def test_idle_threads_serve_the_next_burst_and_stop_at_once(fast):
    """More threads idle than wait on the listener (fastserver._acceptors.SLOTS): the others
    park. The next burst wakes them (one thread per concurrent request, no new ones), and
    server_close() ends every one of them at once, not after IDLE_SECONDS."""
    count = 40
    together = threading.Barrier(count, timeout=TIMEOUT)

    def respond(handler, data):
        together.wait()  # all of a burst run at once, or none replies
        return data

    before = set(threading.enumerate())
    server = threaded(fast, respond, request_queue_size=2 * count)  # no connection refused
    with serving(server, close=False):
        for _ in range(2):
            echo_from_many(server, count)
        assert len(server._threads) <= count * 3 // 2  # the first burst's threads, reused
    started = time.monotonic()
    server.server_close()  # block_on_close: joins every thread
    assert time.monotonic() - started < 2.0 < fastserver._pool.IDLE_SECONDS
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout=2)
