"""Bad input fails as in the stdlib: the same exception type at the same call, no leaked
descriptor, and a server that survives what the stdlib's survives."""

import errno
import gc
import os
import socket
import socketserver
import sys
import warnings

import pytest
from helpers import (
    bounded,
    client_for,
    closed_by_peer,
    make_server,
    reply_handler,
    send,
    serving,
    talk,
)

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc/self/fd")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def raised(call):
    """The exception ``call()`` raises (failing if it raises none)."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the type is what the test compares
        return exc
    pytest.fail(f"{call} raised nothing")


class Echo(socketserver.BaseRequestHandler):
    """For the servers that never get as far as a request."""


BAD_ADDRESSES = [
    ("TCPServer", ("127.0.0.1", -1), OverflowError),
    ("TCPServer", ("127.0.0.1", 65536), OverflowError),
    ("UDPServer", ("127.0.0.1", -1), OverflowError),
    ("TCPServer", "127.0.0.1:80", TypeError),
    ("TCPServer", ("127.0.0.1", "80"), TypeError),
    ("TCPServer", ("127.0.0.1",), TypeError),
    ("TCPServer", None, TypeError),
    ("UDPServer", "127.0.0.1", TypeError),
    ("UnixStreamServer", ("127.0.0.1", 0), TypeError),
    ("UnixDatagramServer", ("127.0.0.1", 0), TypeError),
    ("UnixStreamServer", "/nonexistent-fastserver-dir/sock", FileNotFoundError),
    ("UnixDatagramServer", "/nonexistent-fastserver-dir/sock", FileNotFoundError),
    ("UnixStreamServer", "/tmp/" + "x" * 200, OSError),
    ("TCPServer", ("nonexistent.invalid", 0), socket.gaierror),
]


@pytest.mark.parametrize("name, address, expected", BAD_ADDRESSES,
                         ids=[f"{n}-{a!r}"[:60] for n, a, _ in BAD_ADDRESSES])
def test_bad_address_raises_as_the_stdlib(ss, name, address, expected):
    error = raised(lambda: getattr(ss, name)(address, Echo))
    reference = raised(lambda: getattr(socketserver, name)(address, Echo))
    assert type(error) is type(reference)
    assert isinstance(error, expected)
    assert error.args[0] == reference.args[0]


@needs_proc
@pytest.mark.parametrize("name, address, expected", [
    ("TCPServer", ("127.0.0.1", -1), OverflowError),
    ("TCPServer", "not a tuple", TypeError),
    ("UnixStreamServer", "/nonexistent-fastserver-dir/sock", FileNotFoundError),
])
def test_failed_construction_leaks_no_descriptor(ss, name, address, expected):
    cls = getattr(ss, name)
    before = open_fds()
    for _ in range(200):
        with pytest.raises(expected):
            cls(address, Echo)
    assert open_fds() - before < 5


@needs_proc
@pytest.mark.parametrize("name", ["TCPServer", "UDPServer"])
def test_address_in_use(ss, name):
    with getattr(ss, name)(("127.0.0.1", 0), Echo) as first:
        before = open_fds()
        for _ in range(100):
            error = raised(lambda: getattr(ss, name)(first.server_address, Echo))
            assert type(error) is OSError and error.errno == errno.EADDRINUSE
        assert open_fds() - before < 5
        reference = raised(lambda: getattr(socketserver, name)(first.server_address, Echo))
        assert type(error) is type(reference)


@needs_proc
@pytest.mark.parametrize("case", ["served", "rejected", "failing", "threaded"])
def test_no_descriptor_or_socket_left_behind(ss, case):
    def respond(handler, data):
        if case == "failing":
            raise RuntimeError("failing")
        return data

    attrs = {"handle_error": lambda *args: None}
    if case == "rejected":
        attrs["verify_request"] = lambda *args: False
    base = "ThreadingTCPServer" if case == "threaded" else None
    server = make_server(ss, "tcp", reply_handler(ss, "tcp", respond), base=base, **attrs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with server, serving(server):
            for _ in range(5):
                talk(server, b"warm up")
            gc.collect()
            before = open_fds()
            for _ in range(100):
                reply = talk(server, b"x")
                assert reply == (b"x" if case in ("served", "threaded") else b"")
            gc.collect()
            assert open_fds() - before < 5
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("bad_handler", ["not callable", "wrong signature"])
def test_bad_handler_class_goes_to_handle_error(ss, bad_handler):
    errors = []

    class NoArguments:
        def __init__(self):
            pass

    def handle_error(self, request, client_address):
        errors.append(sys.exc_info()[0])

    handler = 42 if bad_handler == "not callable" else NoArguments
    with make_server(ss, "tcp", handler, handle_error=handle_error) as server, serving(server):
        with client_for(server) as client:
            send(client, server, b"x")
            assert closed_by_peer(client)
        assert errors == [TypeError]
        server.RequestHandlerClass = reply_handler(ss, "tcp", lambda h, data: b"ok")
        assert talk(server, b"y") == b"ok"  # it kept serving


@pytest.mark.parametrize("call", ["serve_forever", "handle_request"])
def test_loop_on_a_closed_server(ss, call):
    def run(module):
        server = module.TCPServer(("127.0.0.1", 0), Echo)
        server.server_close()
        return bounded(getattr(server, call))

    error = raised(lambda: run(ss))
    assert type(error) is type(raised(lambda: run(socketserver)))
    assert isinstance(error, ValueError)


def test_bad_poll_interval(ss):
    handler = reply_handler(ss, "tcp", lambda h, data: b"echo")
    with make_server(ss, "tcp", handler) as server:
        error = raised(lambda: bounded(server.serve_forever, "soon"))
        assert type(error) is TypeError
        # The server is intact: it serves properly afterwards.
        with serving(server, close=False):
            assert talk(server) == b"echo"


def test_bad_timeout(ss):
    with make_server(ss, "tcp", Echo) as server:
        server.timeout = "soon"
        assert type(raised(lambda: bounded(server.handle_request))) is TypeError


def test_client_that_resets_does_not_stop_the_server(ss):
    handler = reply_handler(ss, "tcp", lambda h, data: b"got " + data)
    with make_server(ss, "tcp", handler, handle_error=lambda *args: None) as server:
        with serving(server):
            for _ in range(5):
                rude = client_for(server)
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                rude.sendall(b"half a requ")
                rude.close()  # a reset, not a FIN
            assert talk(server, b"polite") == b"got polite"


# --- hooks that raise: whatever the stdlib does, the same ----------------------------------

RAISING_HOOKS = ["verify_request", "process_request", "finish_request", "shutdown_request",
                 "close_request", "handle_error", "get_request"]


def outcome(module, raising, exception):
    """(exception type out of handle_request or None, hooks called) when ``raising`` raises
    ``exception`` (and the handler raises ValueError when ``raising`` is handle_error)."""
    log = []

    def make(name):
        def method(self, *args):
            log.append(name)
            if name == raising:
                raise exception(name)
            return getattr(super(type(self), self), name)(*args)
        return method

    class Handler(module.BaseRequestHandler):
        def handle(self):
            log.append("handle")
            if raising == "handle_error":
                raise ValueError("handle")

    server = make_server(module, "tcp", Handler, **{name: make(name) for name in RAISING_HOOKS})
    with server, client_for(server):
        try:
            bounded(server.handle_request)
            error = None
        except BaseException as exc:  # noqa: B036 - compared with the stdlib's
            error = type(exc)
        if raising == "get_request" and exception is OSError:
            # The connection was never accepted: the next call serves it.
            bounded(server.handle_request)
    return error, log


@pytest.mark.parametrize("exception", [RuntimeError, OSError, KeyboardInterrupt])
@pytest.mark.parametrize("raising", RAISING_HOOKS)
def test_raising_hook_behaves_as_in_the_stdlib(ss, raising, exception):
    assert outcome(ss, raising, exception) == outcome(socketserver, raising, exception)
