"""BaseRequestHandler, StreamRequestHandler and DatagramRequestHandler."""

import io
import socket
import sys
import threading
import time

import pytest
from helpers import (
    DGRAM_KINDS,
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
)

STREAM = ["tcp", "unix"]


def recording_errors(server):
    """Make ``server.handle_error`` record (exception type, time) in ``server.errors``."""
    server.errors = []
    server.handle_error = lambda request, address: server.errors.append(
        (sys.exc_info()[0], time.monotonic()))


# --- BaseRequestHandler ---------------------------------------------------------------------

def test_base_handler_runs_in_its_constructor(ss):
    log = []

    class Handler(ss.BaseRequestHandler):
        def setup(self):
            log.append(("setup", self.request, self.client_address, self.server))

        def handle(self):
            log.append("handle")

        def finish(self):
            log.append("finish")

    handler = Handler("request", ("host", 1), "server")
    assert (handler.request, handler.client_address, handler.server) == (
        "request", ("host", 1), "server")
    assert log == [("setup", "request", ("host", 1), "server"), "handle", "finish"]
    # The defaults do nothing.
    plain = ss.BaseRequestHandler(None, None, None)
    assert plain.setup() is None and plain.handle() is None and plain.finish() is None


@pytest.mark.parametrize("kind", ["tcp", "udp"])
@pytest.mark.parametrize("fail_in, expected", [
    (None, ["setup", "handle", "finish"]),
    ("setup", ["setup"]),
    ("handle", ["setup", "handle", "finish"]),
    ("finish", ["setup", "handle", "finish"]),
])
def test_setup_handle_finish_order(ss, kind, fail_in, expected):
    log = []

    def step(name):
        def method(self):
            log.append(name)
            assert self.server is server and self.client_address is not None
            if name == fail_in:
                raise ValueError(name)
        return method

    Handler = type("Handler", (ss.BaseRequestHandler,),
                   {name: step(name) for name in ("setup", "handle", "finish")})
    with make_server(ss, kind, Handler) as server, client_for(server) as client:
        recording_errors(server)
        send(client, server, b"x")
        bounded(server.handle_request)
        assert log == expected
        assert [error for error, _ in server.errors] == ([ValueError] if fail_in else [])


# --- StreamRequestHandler -------------------------------------------------------------------

@pytest.mark.parametrize("rbufsize", [-1, 0, 1, 8192])
@pytest.mark.parametrize("kind", STREAM)
def test_rfile_readline_read_readinto_iteration(ss, kind, rbufsize, sock_dir):
    seen, size = {}, rbufsize

    class Handler(ss.StreamRequestHandler):
        rbufsize = size

        def handle(self):
            seen["readable"] = self.rfile.readable() and isinstance(self.rfile, io.IOBase)
            seen["connection"] = self.connection is self.request
            line = self.rfile.readline()
            limited = self.rfile.readline(3)
            exact = self.rfile.read(4)
            buffer = bytearray(2)
            count = self.rfile.readinto(buffer)
            rest = list(self.rfile)
            seen["parts"] = [line, limited, exact, bytes(buffer[:count]), rest]
            self.wfile.write(b"done")

    data = b"line one\nline two\nrest of it\nlast"
    with make_server(ss, kind, Handler, sock_dir) as server, serving(server):
        assert talk(server, data) == b"done"
    assert seen["readable"] and seen["connection"]
    assert seen["parts"] == [b"line one\n", b"lin", b"e tw", b"o\n",
                             [b"rest of it\n", b"last"]]


@pytest.mark.parametrize("rbufsize, left_in_socket", [(0, True), (-1, False), (8192, False)])
def test_rbufsize_0_reads_no_more_than_asked(ss, rbufsize, left_in_socket):
    """Unbuffered, readline() leaves what follows the line in the socket; buffered, it takes
    what has arrived into its buffer."""
    seen, size = {}, rbufsize

    class Handler(ss.StreamRequestHandler):
        rbufsize = size

        def handle(self):
            seen["line"] = self.rfile.readline()
            self.request.setblocking(False)
            try:
                seen["socket"] = self.request.recv(100)
            except BlockingIOError:
                seen["socket"] = b""

    with make_server(ss, "tcp", Handler) as server, client_for(server) as client:
        client.sendall(b"first line\nand the rest")
        time.sleep(0.05)  # all of it has arrived before the handler reads
        bounded(server.handle_request)
    assert seen == {"line": b"first line\n",
                    "socket": b"and the rest" if left_in_socket else b""}


@pytest.mark.parametrize("kind", STREAM)
def test_stream_echo_of_a_megabyte(ss, kind, sock_dir):
    payload = bytes(range(256)) * 4096
    handler = reply_handler(ss, kind, lambda handler, data: data[::-1])
    with make_server(ss, kind, handler, sock_dir) as server, serving(server):
        assert talk(server, payload) == payload[::-1]


@pytest.mark.parametrize("kind", STREAM)
def test_wbufsize_0_writes_go_out_at_once(ss, kind, sock_dir):
    seen = {}

    class Handler(ss.StreamRequestHandler):
        def handle(self):
            seen["type"] = isinstance(self.wfile, io.BufferedIOBase)
            seen["fileno"] = self.wfile.fileno() == self.request.fileno()
            seen["writable"] = self.wfile.writable()
            seen["count"] = self.wfile.write(bytearray(b"ping"))
            seen["answer"] = self.rfile.read(4)  # only comes if "ping" went out unflushed
            self.wfile.write(memoryview(b"done"))

    assert ss.StreamRequestHandler.wbufsize == 0
    with make_server(ss, kind, Handler, sock_dir) as server, serving(server):
        with client_for(server) as client:
            assert client.recv(4) == b"ping"
            client.sendall(b"pong")
            assert receive(client, server) == b"done"
    assert seen == {"type": True, "fileno": True, "writable": True, "count": 4,
                    "answer": b"pong"}


@pytest.mark.parametrize("kind", STREAM)
def test_wbufsize_buffers_until_flush_or_finish(ss, kind, sock_dir):
    written, checked, flushed = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    class Handler(ss.StreamRequestHandler):
        wbufsize = 1024

        def handle(self):
            seen["type"] = isinstance(self.wfile, io.BufferedIOBase)
            self.wfile.write(b"held")
            written.set()
            checked.wait(TIMEOUT)
            self.wfile.flush()
            flushed.wait(TIMEOUT)
            self.wfile.write(b"tail")  # left to finish()

        def finish(self):
            super().finish()
            seen["closed"] = (self.wfile.closed, self.rfile.closed)

    with make_server(ss, kind, Handler, sock_dir) as server, serving(server):
        with client_for(server) as client:
            assert written.wait(TIMEOUT)
            client.settimeout(0.2)
            with pytest.raises(TimeoutError):
                client.recv(10)  # still in the buffer
            client.settimeout(TIMEOUT)
            checked.set()
            assert client.recv(4) == b"held"
            flushed.set()
            assert receive(client, server) == b"tail"
    assert seen == {"type": True, "closed": (True, True)}


def test_timeout_applies_to_the_connection(ss):
    seen = {}

    class Handler(ss.StreamRequestHandler):
        timeout = 0.3

        def handle(self):
            seen["timeout"] = self.connection.gettimeout()
            seen["start"] = time.monotonic()
            self.rfile.read(1)  # the client says nothing

    with make_server(ss, "tcp", Handler) as server, client_for(server):
        recording_errors(server)
        bounded(server.handle_request)
        assert seen["timeout"] == 0.3
        [(error, when)] = server.errors
        assert issubclass(error, TimeoutError) and error is socket.timeout
        assert 0.25 <= when - seen["start"] < 2.0


def test_no_timeout_by_default(ss):
    timeouts = []

    def respond(handler, data):
        timeouts.append(handler.connection.gettimeout())
        return data

    with make_server(ss, "tcp", reply_handler(ss, "tcp", respond)) as server, serving(server):
        assert talk(server, b"t") == b"t"
    assert timeouts == [None]


def nodelay_of_connections(module, **attrs):
    """TCP_NODELAY on the connection a handler gets, with ``attrs`` set on the handler class."""
    values = []

    def respond(handler, data):
        values.append(handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return data

    handler = type("Handler", (reply_handler(module, "tcp", respond),), attrs)
    with make_server(module, "tcp", handler) as server, serving(server):
        assert talk(server, b"n") == b"n"
    return [bool(value) for value in values]


def test_disable_nagle_algorithm_sets_tcp_nodelay(ss):
    assert nodelay_of_connections(ss, disable_nagle_algorithm=True) == [True]


def test_nagle_default(ss):
    """The stdlib leaves TCP_NODELAY off unless the handler asks (disable_nagle_algorithm);
    fastserver sets it on accepted TCP connections (TCPServer.tcp_nodelay, a documented choice
    against the 40 ms keep-alive stall), and tcp_nodelay = False gives the stdlib's behaviour."""
    fastserver_default = ss.__name__ == "fastserver"
    assert nodelay_of_connections(ss) == [fastserver_default]
    assert nodelay_of_connections(ss, disable_nagle_algorithm=False) == [fastserver_default]
    if fastserver_default:
        ss.TCPServer.tcp_nodelay = False
        try:
            assert nodelay_of_connections(ss) == [False]
        finally:
            ss.TCPServer.tcp_nodelay = True


def test_tcp_nodelay_turned_off_between_requests_of_one_server(ss):
    """fastserver may set TCP_NODELAY once on the listener for its connections to inherit:
    tcp_nodelay = False on the same server afterwards must still give the stdlib's default."""
    values = []

    def respond(handler, data):
        values.append(bool(handler.connection.getsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY)))
        return data

    with make_server(ss, "tcp", reply_handler(ss, "tcp", respond)) as server:
        with serving(server, close=False):
            assert talk(server, b"1") == b"1"
        server.tcp_nodelay = False  # on the stdlib, an attribute nobody reads
        with serving(server):
            assert talk(server, b"2") == b"2"
    assert values == ([False, False] if is_stdlib(ss) else [True, False])


def test_tcp_nodelay_on_a_connection_queued_before_the_server_looks(ss):
    """A connection the kernel accepted before any request was handled (in the backlog while
    nobody serves) gets TCP_NODELAY as well: what the listener passes on must be set before
    listen()."""
    values = []

    def respond(handler, data):
        values.append(bool(handler.connection.getsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY)))
        return data

    with make_server(ss, "tcp", reply_handler(ss, "tcp", respond)) as server, \
            client_for(server) as client:
        send(client, server, b"q")  # queued, handshake done, before handle_request()
        bounded(server.handle_request)
        assert receive(client, server) == b"q"
    assert values == [not is_stdlib(ss)]


def test_stream_handler_error_closes_files_and_connection(ss):
    files = []

    class Handler(ss.StreamRequestHandler):
        wbufsize = 1024

        def handle(self):
            files.append((self.rfile, self.wfile))
            self.wfile.write(b"partial")
            raise RuntimeError("midway")

    with make_server(ss, "tcp", Handler) as server, client_for(server) as client:
        recording_errors(server)
        send(client, server, b"")
        bounded(server.handle_request)
        assert receive(client, server) == b"partial"  # finish() flushed it anyway
        assert [error for error, _ in server.errors] == [RuntimeError]
        [(rfile, wfile)] = files
        assert rfile.closed and wfile.closed


# --- DatagramRequestHandler -----------------------------------------------------------------

@pytest.mark.parametrize("kind", DGRAM_KINDS)
def test_datagram_handler_files(ss, kind, sock_dir):
    seen = {}

    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            seen["packet"] = self.packet
            seen["socket"] = self.socket is self.server.socket
            seen["rfile"] = isinstance(self.rfile, io.BytesIO)
            seen["line"] = self.rfile.readline()
            seen["rest"] = self.rfile.read()
            if self.packet != b"silent":
                self.wfile.write(b"first,")
                self.wfile.write(b"second")

    with make_server(ss, kind, Handler, sock_dir) as server, serving(server):
        with client_for(server) as client:
            send(client, server, b"a line\nmore")
            assert receive(client, server) == b"first,second"  # one datagram, sent by finish()
            send(client, server, b"silent")
            assert receive(client, server) == b""  # an empty reply is still sent
    assert seen == {"packet": b"silent", "socket": True, "rfile": True, "line": b"silent",
                    "rest": b""}


@pytest.mark.parametrize("kind", DGRAM_KINDS)
def test_datagram_handler_replies_to_each_client(ss, kind, sock_dir):
    handler = reply_handler(ss, kind, lambda handler, data: b"to " + data)
    with make_server(ss, kind, handler, sock_dir) as server, serving(server):
        clients = [client_for(server) for _ in range(3)]
        try:
            for i, client in enumerate(clients):
                send(client, server, b"%d" % i)
            assert [receive(client, server) for client in clients] == [b"to 0", b"to 1", b"to 2"]
        finally:
            for client in clients:
                client.close()
