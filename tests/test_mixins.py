"""ThreadingMixIn and ForkingMixIn, and the server classes made of them."""

import os
import socketserver
import threading
import time

import pytest
from helpers import (
    TIMEOUT,
    bounded,
    client_for,
    is_stdlib,
    make_server,
    receive,
    reply_handler,
    send,
    serving,
    talk,
    wait_until,
)

import fastserver

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")


def threaded(module, respond, kind="tcp", directory=None, **attrs):
    base = "ThreadingTCPServer" if kind == "tcp" else None
    return make_server(module, kind, reply_handler(module, kind, respond), directory,
                       base=base, **attrs)


# --- ThreadingMixIn -------------------------------------------------------------------------

@pytest.mark.parametrize("daemon", [False, True])
def test_each_request_runs_on_a_thread_of_its_own(ss, daemon):
    threads = []

    def respond(handler, data):
        threads.append(threading.current_thread())
        return data

    with threaded(ss, respond, daemon_threads=daemon) as server:
        with serving(server) as loop_thread:
            for i in range(3):
                assert talk(server, b"%d" % i) == b"%d" % i
    assert len(threads) == 3
    assert loop_thread not in threads and threading.main_thread() not in threads
    assert [thread.daemon for thread in threads] == [daemon] * 3


def test_threading_server_close_waits_for_running_requests(ss):
    started, done = threading.Event(), []

    def respond(handler, data):
        started.set()
        time.sleep(0.3)
        done.append(threading.current_thread())
        return data

    server = threaded(ss, respond)
    with client_for(server) as client:
        with serving(server, close=False):
            send(client, server, b"slow")
            assert started.wait(TIMEOUT)
        bounded(server.server_close)
        assert len(done) == 1 and not done[0].is_alive()  # finished and joined
        assert receive(client, server) == b"slow"


@pytest.mark.parametrize("block_on_close, daemon", [(False, False), (True, True)])
def test_threading_server_close_does_not_wait(ss, block_on_close, daemon):
    """block_on_close = False, or daemon threads (which server_close never joins)."""
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def respond(handler, data):
        started.set()
        release.wait(TIMEOUT)
        done.set()
        return data

    server = threaded(ss, respond, block_on_close=block_on_close, daemon_threads=daemon)
    try:
        with serving(server, close=False), client_for(server) as client:
            send(client, server, b"slow")
            assert started.wait(TIMEOUT)
            bounded(server.server_close, timeout=2)
            assert not done.is_set()  # server_close returned while the request still ran
            release.set()
            assert receive(client, server) == b"slow"
            assert done.wait(TIMEOUT)
    finally:
        release.set()


def test_finished_threads_are_not_kept(ss, monkeypatch):
    """The threads of finished requests are let go: the stdlib's _threads drops each that has
    exited at the next request; fastserver's idle ones exit after IDLE_SECONDS (shortened here),
    but the one waiting for the next connection where request threads accept themselves. (How
    many threads the requests took depends on how they overlapped: a client has its reply
    before its thread is done.)"""
    monkeypatch.setattr(fastserver._pool, "IDLE_SECONDS", 0.05)
    handler_threads = []

    def respond(handler, data):
        handler_threads.append(threading.current_thread())
        return data

    with threaded(ss, respond) as server, serving(server):
        for i in range(30):
            assert talk(server, b"%d" % i) == b"%d" % i
        if is_stdlib(ss):
            for thread in handler_threads:
                thread.join(TIMEOUT)
        else:
            assert wait_until(lambda: len(server._threads) <= 1)
        assert talk(server, b"last") == b"last"
        # The last request's thread, and where the threads accept, the one it started to wait
        # for the next connection.
        assert len(server._threads) <= (1 if is_stdlib(ss) else 2)


def test_threading_handler_error_goes_to_handle_error_in_its_thread(ss):
    errors = []

    def respond(handler, data):
        raise LookupError(data)

    def handle_error(self, request, client_address):
        errors.append((threading.current_thread(), client_address))

    with threaded(ss, respond, handle_error=handle_error) as server:
        with serving(server) as loop_thread, client_for(server) as client:
            send(client, server, b"bad")
            assert receive(client, server) == b""  # closed by shutdown_request
            assert wait_until(lambda: errors)
            assert errors[0][0] is not loop_thread
            assert errors[0][1] == client.getsockname()


# --- ForkingMixIn ---------------------------------------------------------------------------

def pid_reply(handler, data):
    return b"%d %d" % (os.getpid(), threading.get_ident())


def reaped(pid):
    """True when ``pid`` is no child of ours any more (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def reap(pid):
    """Wait for ``pid`` unless it was reaped already."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def forking(module, respond, kind="tcp", directory=None, **attrs):
    base = "ForkingTCPServer" if kind == "tcp" else None
    return make_server(module, kind, reply_handler(module, kind, respond), directory,
                       base=base, **attrs)


@needs_fork
def test_forking_handler_runs_in_a_child(ss):
    server = forking(ss, pid_reply)
    assert server.active_children is None
    with server, client_for(server) as client:
        send(client, server, b"")
        bounded(server.handle_request)
        pid = int(receive(client, server).split()[0])
        assert pid != os.getpid()
        assert server.active_children == {pid}
    assert not server.active_children  # server_close reaped it
    assert reaped(pid)


@needs_fork
def test_forking_handle_timeout_reaps_finished_children(ss):
    with forking(ss, pid_reply) as server, client_for(server) as client:
        send(client, server, b"")
        bounded(server.handle_request)
        pid = int(receive(client, server).split()[0])
        server.timeout = 0.01
        assert wait_until(lambda: bounded(server.handle_request) is None
                          and not server.active_children)
        assert reaped(pid)


@needs_fork
def test_forking_max_children(ss, sock_dir):
    """With max_children = 2, never more than 2 children run at once, even when many clients
    are queued together."""
    def respond(handler, data):
        mark = os.path.join(sock_dir, str(os.getpid()))
        with open(mark, "w"):
            pass
        alive = len(os.listdir(sock_dir))
        time.sleep(0.2)
        os.unlink(mark)
        return b"%d" % alive

    replies = []
    with forking(ss, respond, max_children=2, request_queue_size=16) as server:
        clients = [client_for(server) for _ in range(6)]  # all queued before serving
        try:
            for client in clients:
                send(client, server, b"")
            with serving(server, poll_interval=0.05):
                replies = [int(receive(client, server)) for client in clients]
        finally:
            for client in clients:
                client.close()
    assert len(replies) == 6
    assert max(replies) == 2, replies


@needs_fork
@pytest.mark.parametrize("block_on_close", [True, False])
def test_forking_server_close_and_children(ss, block_on_close):
    def respond(handler, data):
        time.sleep(0.3)
        return pid_reply(handler, data)

    server = forking(ss, respond, block_on_close=block_on_close)
    with client_for(server) as client:
        send(client, server, b"")
        bounded(server.handle_request)
        [pid] = server.active_children
        start = time.monotonic()
        bounded(server.server_close)
        elapsed = time.monotonic() - start
        try:
            if block_on_close:
                assert elapsed >= 0.15  # it waited for the child
                assert not server.active_children
                assert reaped(pid)
                try:
                    assert os.waitpid(-1, os.WNOHANG) == (0, 0)
                except ChildProcessError:
                    pass  # no child at all: no zombie
            else:
                assert elapsed < 0.15
                assert server.active_children == {pid}
            assert int(receive(client, server).split()[0]) == pid
        finally:
            reap(pid)


# --- the combinations -----------------------------------------------------------------------

COMBOS = [
    ("ThreadingTCPServer", "tcp"), ("ThreadingUDPServer", "udp"),
    ("ThreadingUnixStreamServer", "unix"), ("ThreadingUnixDatagramServer", "unixdgram"),
    pytest.param("ForkingTCPServer", "tcp", marks=needs_fork),
    pytest.param("ForkingUDPServer", "udp", marks=needs_fork),
]
FAST_ONLY_COMBOS = [
    pytest.param("ForkingUnixStreamServer", "unix", marks=needs_fork),
    pytest.param("ForkingUnixDatagramServer", "unixdgram", marks=needs_fork),
]


def check_combo(module, name, kind, directory):
    cls = getattr(module, name)
    mixin = module.ForkingMixIn if name.startswith("Forking") else module.ThreadingMixIn
    assert issubclass(cls, mixin)
    assert cls.__mro__[1] is mixin
    server = make_server(module, kind, reply_handler(module, kind, pid_reply), directory,
                         base=name)
    with server, serving(server) as loop_thread:
        replies = [talk(server, b"") for _ in range(3)]
    for reply in replies:
        pid, ident = map(int, reply.split())
        if mixin is module.ForkingMixIn:
            assert pid != os.getpid()
        else:
            assert pid == os.getpid() and ident != loop_thread.ident
    if mixin is module.ForkingMixIn:
        assert not server.active_children
        assert all(reaped(int(reply.split()[0])) for reply in replies)


@pytest.mark.parametrize("name, kind", COMBOS)
def test_mixed_in_server_classes(ss, name, kind, sock_dir):
    check_combo(ss, name, kind, sock_dir)


@pytest.mark.parametrize("name, kind", FAST_ONLY_COMBOS)
def test_forking_unix_server_classes(fast, name, kind, sock_dir):
    check_combo(fast, name, kind, sock_dir)


def test_all_names():
    extras = {"ForkingUnixStreamServer", "ForkingUnixDatagramServer"} if hasattr(os, "fork") \
        else set()
    assert set(fastserver.__all__) >= set(socketserver.__all__) | extras
    for name in fastserver.__all__:
        assert getattr(fastserver, name).__name__ == name
