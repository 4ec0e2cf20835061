"""The loops call what a server overrides exactly where and when the stdlib calls it, and run
the rest in C; batches of connections and many concurrent clients are all served."""

import os
import socket
import sys
import threading

import pytest
from helpers import (
    KINDS,
    TIMEOUT,
    bounded,
    client_for,
    core_of,
    make_server,
    receive,
    reply_handler,
    send,
    serving,
    talk,
    wait_until,
)

import fastserver.servers

HOOKS = ["get_request", "verify_request", "process_request", "finish_request",
         "shutdown_request", "close_request", "service_actions", "handle_error", "handle_timeout"]

NORMAL = ["get_request", "verify_request", "process_request", "finish_request", "handle",
          "shutdown_request", "close_request"]
REJECTED = ["get_request", "verify_request", "shutdown_request", "close_request"]
FAILED = ["get_request", "verify_request", "process_request", "finish_request", "handle",
          "handle_error", "shutdown_request", "close_request"]


class Script:
    """What the recorded hooks and the handler do, and the log of their calls."""

    def __init__(self, reject=False, get_errors=0, raise_in_handle=None):
        self.log = []
        self.reject = reject
        self.get_errors = get_errors
        self.raise_in_handle = raise_in_handle

    def wrap(self, name, original):
        """``original`` (a bound method), recorded in the log and steered by the script."""
        def hook(*args):
            self.log.append(name)
            if name == "get_request" and self.get_errors:
                self.get_errors -= 1
                raise OSError("get_request failed")
            if name == "verify_request" and self.reject:
                original(*args)
                return False
            return original(*args)
        return hook

    def handler(self, module, kind):
        script = self

        class Handler(module.BaseRequestHandler):
            def handle(self):
                script.log.append("handle")
                if not isinstance(self.request, tuple):
                    while self.request.recv(1024):  # read it all: closing a Unix socket with
                        pass                         # unread data resets the connection
                if script.raise_in_handle is not None:
                    raise script.raise_in_handle("from handle")
                if isinstance(self.request, tuple):
                    self.request[1].sendto(b"ok", self.client_address)
                else:
                    self.request.sendall(b"ok")

        return Handler


def recording_server(module, kind, where, script, directory, **attrs):
    """A server whose hooks log their calls, overridden on the class or on the instance."""
    if where == "class":
        methods = {}
        for name in HOOKS:
            def method(self, *args, _name=name):
                original = getattr(super(type(self), self), _name)
                return script.wrap(_name, original)(*args)
            methods[name] = method
        return make_server(module, kind, script.handler(module, kind), directory, **methods,
                           **attrs)
    server = make_server(module, kind, script.handler(module, kind), directory, **attrs)
    for name in HOOKS:
        setattr(server, name, script.wrap(name, getattr(server, name)))
    return server


WHERE = ["class", "instance"]
DISPATCH_KINDS = ["tcp", "udp", "unix"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", DISPATCH_KINDS)
@pytest.mark.parametrize("case, expected", [
    ("normal", NORMAL), ("rejected", REJECTED), ("failed", FAILED),
])
def test_handle_request_calls_the_hooks_in_order(ss, kind, where, case, expected, sock_dir):
    script = Script(reject=case == "rejected",
                    raise_in_handle=RuntimeError if case == "failed" else None)
    with recording_server(ss, kind, where, script, sock_dir) as server:
        with client_for(server, sock_dir) as client:
            send(client, server, b"hello")
            assert bounded(server.handle_request) is None
            assert script.log == expected
            reply = b"ok" if case == "normal" else b""
            if case == "normal" or KINDS[kind][2] == socket.SOCK_STREAM:
                try:
                    assert receive(client, server) == reply
                except ConnectionResetError:
                    assert case != "normal"  # closed with the request unread


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", DISPATCH_KINDS)
@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt])
def test_base_exception_propagates_after_shutdown_request(ss, kind, where, exception, sock_dir):
    script = Script(raise_in_handle=exception)
    with recording_server(ss, kind, where, script, sock_dir) as server:
        with client_for(server, sock_dir) as client:
            send(client, server, b"hello")
            with pytest.raises(exception):
                bounded(server.handle_request)
            assert script.log == NORMAL
            # The server still serves afterwards.
            script.raise_in_handle = None
            script.log.clear()
            with client_for(server, sock_dir) as second:
                send(second, server, b"again")
                bounded(server.handle_request)
                assert receive(second, server) == b"ok"
            assert script.log == NORMAL


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", DISPATCH_KINDS)
def test_get_request_oserror_skips_silently(ss, kind, where, sock_dir):
    script = Script(get_errors=1)
    with recording_server(ss, kind, where, script, sock_dir) as server:
        with client_for(server, sock_dir) as client:
            send(client, server, b"hello")
            assert bounded(server.handle_request) is None
            assert script.log == ["get_request"]
            script.log.clear()
            # The request is still there for the next call.
            assert bounded(server.handle_request) is None
            assert script.log == NORMAL
            assert receive(client, server) == b"ok"


@pytest.mark.parametrize("where", WHERE)
def test_timeout_calls_only_handle_timeout(ss, where):
    script = Script()
    with recording_server(ss, "tcp", where, script, None) as server:
        server.timeout = 0.05
        assert bounded(server.handle_request) is None
        assert script.log == ["handle_timeout"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", DISPATCH_KINDS)
@pytest.mark.parametrize("case, expected", [("normal", NORMAL), ("rejected", REJECTED),
                                            ("failed", FAILED)])
def test_serve_forever_calls_the_hooks_in_order(ss, kind, where, case, expected, sock_dir):
    script = Script(reject=case == "rejected",
                    raise_in_handle=RuntimeError if case == "failed" else None)
    with recording_server(ss, kind, where, script, sock_dir) as server:
        with serving(server, poll_interval=0.05), client_for(server, sock_dir) as client:
            send(client, server, b"hello")
            if case == "normal":
                assert receive(client, server) == b"ok"
            assert wait_until(lambda: script.log.count("service_actions") > 0
                              and "close_request" in script.log)
            assert wait_until(lambda: script.log[-1] == "service_actions")
    log = script.log
    start = log.index("get_request")
    assert set(log[:start]) <= {"service_actions"}  # the waits that timed out before
    assert log[start:start + len(expected) + 1] == expected + ["service_actions"]
    assert set(log[start + len(expected):]) == {"service_actions"}


@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("where", WHERE)
def test_base_exception_ends_serve_forever(ss, where, exception):
    script = Script(raise_in_handle=exception)
    with recording_server(ss, "tcp", where, script, None) as server:
        with pytest.raises(exception):
            with serving(server, poll_interval=0.5) as thread, client_for(server) as client:
                send(client, server, b"hello")
                thread.join(TIMEOUT)
                assert not thread.is_alive()
    log = script.log
    assert log[log.index("get_request"):] == NORMAL


def test_service_actions_exception_ends_serve_forever(ss):
    class Trouble(Exception):
        pass

    def service_actions(self):
        raise Trouble

    with make_server(ss, "tcp", Script().handler(ss, "tcp"),
                     service_actions=service_actions) as server:
        with pytest.raises(Trouble):
            bounded(server.serve_forever, 0.01)
        server.service_actions = lambda: None
        with serving(server, close=False):  # it serves again
            with client_for(server) as client:
                send(client, server, b"x")
                assert receive(client, server) == b"ok"


def test_threading_mixin_hands_finish_request_to_a_thread(ss):
    script = Script()
    threads = []
    with recording_server(ss, "tcp", "class", script, None, base="ThreadingTCPServer") as server:
        wrap = script.wrap

        def wrap_with_thread(name, original):
            recorded = wrap(name, original)

            def hook(*args):
                threads.append((name, threading.current_thread()))
                return recorded(*args)
            return hook

        script.wrap = wrap_with_thread
        with client_for(server) as client:
            send(client, server, b"hello")
            bounded(server.handle_request)
            assert receive(client, server) == b"ok"
            assert wait_until(lambda: "close_request" in script.log)
    assert script.log == NORMAL
    loop_thread = threads[0][1]  # the one that ran handle_request()
    where = [(name, thread is loop_thread) for name, thread in threads]
    assert where == [("get_request", True), ("verify_request", True), ("process_request", True),
                     ("finish_request", False), ("shutdown_request", False),
                     ("close_request", False)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_forking_parent_only_closes_its_copy(ss):
    """The parent calls close_request (not shutdown_request, which would end the child's
    conversation); the child does the rest, and replies."""
    script = Script()
    with recording_server(ss, "tcp", "class", script, None, base="ForkingTCPServer") as server:
        with client_for(server) as client:
            send(client, server, b"hello")
            bounded(server.handle_request)
            assert script.log == ["get_request", "verify_request", "process_request",
                                  "close_request"]
            assert receive(client, server) == b"ok"


def test_handle_request_returns_what_handle_request_noblock_returns(ss):
    class Server(ss.TCPServer):
        def _handle_request_noblock(self):
            super()._handle_request_noblock()
            return "handled"

    handler = reply_handler(ss, "tcp", lambda handler, data: b"ok")
    with Server(("127.0.0.1", 0), handler) as server, client_for(server) as client:
        send(client, server, b"")
        assert bounded(server.handle_request) == "handled"
        assert receive(client, server) == b"ok"


def test_override_set_while_serving_applies_from_the_next_loop(ss):
    """An instance override set from a handler while serve_forever runs is in force once the
    loop starts again (the stdlib looks it up at each request; the compiled core once per
    serve_forever/handle_request call: a documented difference)."""
    rejected = []

    def reject(request, client_address):
        rejected.append(client_address)
        return False

    def respond(handler, data):
        handler.server.verify_request = reject
        return b"accepted"

    with make_server(ss, "tcp", reply_handler(ss, "tcp", respond)) as server:
        with client_for(server) as client:
            send(client, server, b"first")
            bounded(server.handle_request)
            assert receive(client, server) == b"accepted"
        with client_for(server) as client:
            send(client, server, b"second")
            bounded(server.handle_request)
            assert receive(client, server) == b""
    assert len(rejected) == 1


def test_a_baseserver_of_ones_own(ss):
    """BaseServer with its own fileno/get_request (no listening socket): the loops serve it."""
    served = []

    class PairServer(ss.BaseServer):
        def __init__(self, handler):
            super().__init__("pair", handler)
            self.socket, self.peer = socket.socketpair()
            self.peer.settimeout(TIMEOUT)

        def fileno(self):
            return self.socket.fileno()

        def get_request(self):
            return self.socket.recv(100), "the peer"

        def server_close(self):
            self.socket.close()
            self.peer.close()

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            served.append((self.request, self.client_address))
            self.server.socket.sendall(self.request.upper())

    with PairServer(Handler) as server:
        server.peer.sendall(b"one")
        bounded(server.handle_request)
        assert server.peer.recv(100) == b"ONE"
        with serving(server, close=False):
            server.peer.sendall(b"two")
            assert server.peer.recv(100) == b"TWO"
    assert served == [(b"one", "the peer"), (b"two", "the peer")]


# --- what is not overridden runs in C ------------------------------------------------------

SERVER_HOOKS = {"verify_request", "process_request", "finish_request", "get_request",
                "shutdown_request", "close_request", "_handle_request_noblock"}


def profiled_calls(run):
    """(file, function) of every Python call ``run()`` makes in its thread."""
    calls = []

    def profiler(frame, event, arg):
        if event == "call":
            calls.append((frame.f_code.co_filename, frame.f_code.co_name))

    def profiled():
        sys.setprofile(profiler)
        try:
            run()
        finally:
            sys.setprofile(None)

    bounded(profiled)
    return calls


def test_defaults_run_without_python_calls(fast):
    class Server(fast.TCPServer):
        pass

    class Handler(fast.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    with Server(("127.0.0.1", 0), Handler) as server, client_for(server) as client:
        calls = profiled_calls(server.handle_request)
        assert client.recv(10) == b"ok"
    assert (__file__, "handle") in calls
    hooks = {name for path, name in calls if path == fastserver.servers.__file__} & SERVER_HOOKS
    if core_of(fast) == "cython":
        assert hooks == set()
    else:
        assert hooks == SERVER_HOOKS


def test_serve_forever_defaults_run_without_python_calls(fast):
    calls = []

    def profiler(frame, event, arg):
        if event == "call":
            calls.append((frame.f_code.co_filename, frame.f_code.co_name))

    handler = reply_handler(fast, "tcp", lambda handler, data: data)
    with make_server(fast, "tcp", handler) as server:
        # for the threads started from now on: the loop's, which reads it as it starts (reset
        # once it has served, not as soon as it is started: it may not have read it yet)
        threading.setprofile(profiler)
        try:
            with serving(server, poll_interval=0.01):
                assert talk(server, b"a") == b"a"
                assert talk(server, b"b") == b"b"
        finally:
            threading.setprofile(None)
    hooks = {name for path, name in calls if path == fastserver.servers.__file__}
    assert ("handle" in {name for _, name in calls})
    if core_of(fast) == "cython":
        assert hooks & (SERVER_HOOKS | {"service_actions"}) == set()
    else:
        assert hooks >= SERVER_HOOKS | {"service_actions"}


# --- batches and concurrency ----------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_connections_queued_before_serve_forever_are_all_served(ss, kind, sock_dir):
    handler = reply_handler(ss, kind, lambda handler, data: data.upper())
    server = make_server(ss, kind, handler, sock_dir, request_queue_size=32)
    clients = []
    try:
        for i in range(8):  # a Unix datagram socket queues 10 at most (max_dgram_qlen)
            client = client_for(server, sock_dir)
            clients.append(client)
            send(client, server, b"early %d" % i)
        with serving(server):
            for i, client in enumerate(clients):
                assert receive(client, server) == b"EARLY %d" % i
    finally:
        for client in clients:
            client.close()
        server.server_close()


def test_many_concurrent_clients_on_a_threading_server(ss):
    count = 50
    barrier = threading.Barrier(count, timeout=TIMEOUT)

    threads = set()

    def respond(handler, data):
        threads.add(threading.current_thread())
        barrier.wait()  # every request is being handled at once, each in its own thread
        return data[::-1]

    handler = reply_handler(ss, "tcp", respond)
    replies = {}

    def client(i):
        replies[i] = talk(server, b"client %02d" % i)

    with make_server(ss, "tcp", handler, base="ThreadingTCPServer",
                     request_queue_size=count) as server:
        with serving(server):
            clients = [threading.Thread(target=client, args=(i,)) for i in range(count)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(TIMEOUT * 2)
    assert replies == {i: (b"client %02d" % i)[::-1] for i in range(count)}
    assert len(threads) == count
    assert not any(thread.is_alive() for thread in threads)  # server_close joined them
