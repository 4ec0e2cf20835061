"""Keep-alive parking: between two requests of a persistent HTTP/1.1 connection, the connection
and its handler wait in the loop's poller without a thread (fastserver._pipeline, _parking).

What the stdlib's http.server promises a handler (one instance per connection, setup() once,
handle_one_request() per request, finish() once at the end, errors to handle_error()) is checked
on the stdlib too; what only fastserver promises (no thread held while idle, the deadlines, the
settings) on both of its cores.
"""

import contextlib
import http.client
import http.server as stdlib_http_server
import os
import resource
import socket
import ssl
import threading

import pytest
from helpers import TIMEOUT, bounded, closed_by_peer, is_stdlib, serving, wait_until

import fastserver.http

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def http_server_module(module):
    """http.server built on ``module`` (fastserver's private copy, or the stdlib's)."""
    return stdlib_http_server if is_stdlib(module) else fastserver.http.server


class Journal:
    """What the handlers of a server did, in order, from every thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []
        self.errors = []

    def add(self, *event):
        with self.lock:
            self.events.append(event)

    def of(self, kind):
        with self.lock:
            return [event[1:] for event in self.events if event[0] == kind]


def make_http_server(module, journal, *, raise_on=None, handler_attrs=None, **server_attrs):
    """A ThreadingHTTPServer on ``module`` whose HTTP/1.1 handler answers ``GET /x`` with ``x``
    and writes what it does in ``journal``."""
    hs = http_server_module(module)

    class Handler(hs.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            journal.add("setup", id(self))
            super().setup()

        def do_GET(self):
            journal.add("request", id(self), self.path, self.client_address)
            if self.path == raise_on:
                raise RuntimeError("the handler failed")
            body = self.path[1:].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def finish(self):
            journal.add("finish", id(self))
            super().finish()

        def log_message(self, format, *args):
            pass

    for name, value in (handler_attrs or {}).items():
        setattr(Handler, name, value)

    class Server(hs.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            journal.errors.append(client_address)

    for name, value in server_attrs.items():
        setattr(Server, name, value)
    return Server(("127.0.0.1", 0), Handler)


def get(connection, path):
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def connect(server, context=None):
    host, port = server.server_address[:2]
    if context is None:
        return http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    return http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=context)


def parked(server):
    """How many connections the server's running loop holds parked."""
    parking = server._loop_state().parking
    return 0 if parking is None else len(parking)


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def descriptors_up_to(needed):
    """RLIMIT_NOFILE's soft limit raised to at least ``needed`` (skip where the hard one is
    lower) for the duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE's hard limit {hard} is below {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- what the stdlib's handler sees, kept ----------------------------------------------------

def test_one_handler_instance_serves_every_request_of_a_connection(ss):
    journal = Journal()
    server = make_http_server(ss, journal, keep_alive_linger=0.0)
    with serving(server):
        with contextlib.closing(connect(server)) as client:
            assert [get(client, f"/{n}") for n in range(4)] == [(200, str(n).encode())
                                                                for n in range(4)]
            if not is_stdlib(ss):
                assert wait_until(lambda: parked(server) == 1)  # idle: no thread holds it
            assert get(client, "/last") == (200, b"last")
        assert wait_until(lambda: len(journal.of("finish")) == 1)
    instances = {event[1] for event in journal.events}
    assert len(instances) == 1  # setup, every request and finish on the same handler
    assert [event[0] for event in journal.events] == [
        "setup", "request", "request", "request", "request", "request", "finish"]
    assert not journal.errors


def test_an_error_in_a_later_request_goes_to_handle_error_and_closes_the_connection(ss):
    journal = Journal()
    server = make_http_server(ss, journal, raise_on="/boom", keep_alive_linger=0.0)
    with serving(server):
        with contextlib.closing(connect(server)) as client:
            assert get(client, "/a") == (200, b"a")
            if not is_stdlib(ss):
                assert wait_until(lambda: parked(server) == 1)
            client.request("GET", "/boom")
            with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
                client.getresponse()
            local = client.sock.getsockname() if client.sock else None
        assert wait_until(lambda: len(journal.errors) == 1)
        assert wait_until(lambda: len(journal.of("finish")) == 1)
    assert journal.errors[0][0] == "127.0.0.1"
    assert local is None or journal.errors[0] == local
    kinds = [event[0] for event in journal.events]
    assert kinds == ["setup", "request", "request", "finish"]


# --- a connection costs a thread only while it works -------------------------------------------

def test_idle_keep_alive_connections_hold_no_thread_and_a_new_client_is_answered(fast):
    journal = Journal()
    connections = 500
    with descriptors_up_to(2 * connections + 200):
        server = make_http_server(fast, journal, max_threads=8, keep_alive_linger=0.0)
        threads_before = threading.active_count()
        with serving(server):
            clients = [connect(server) for _ in range(connections)]
            try:
                for n, client in enumerate(clients):
                    assert get(client, f"/{n}") == (200, str(n).encode())
                assert wait_until(lambda: parked(server) == connections)
                # the loop's thread, at most max_threads request threads: none per connection
                assert threading.active_count() <= threads_before + 1 + 8
                with contextlib.closing(connect(server)) as late:
                    assert bounded(get, late, "/late") == (200, b"late")
                # and the idle ones are served again, on the same handlers
                for n, client in enumerate(clients[:50]):
                    assert get(client, f"/again{n}") == (200, f"again{n}".encode())
            finally:
                for client in clients:
                    client.close()
            assert wait_until(lambda: len(journal.of("finish")) == connections + 1, timeout=20)
    assert len({event[0] for event in journal.of("setup")}) == connections + 1


def test_without_parking_an_idle_connection_holds_its_thread(fast):
    journal = Journal()
    server = make_http_server(fast, journal, max_threads=1, keep_alive_parking=False)
    with serving(server):
        first = connect(server)
        assert get(first, "/first") == (200, b"first")
        with socket.create_connection(server.server_address[:2], timeout=0.5) as second:
            second.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(TimeoutError):  # the one thread waits on the idle first one
                second.recv(100)
            first.close()  # frees the thread: the second is served
            second.settimeout(TIMEOUT)
            assert second.recv(100).startswith(b"HTTP/1.1 200")


def test_a_handler_that_overrides_handle_is_never_parked(fast):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0)

    class OwnLoop(server.RequestHandlerClass):
        def handle(self):
            journal.add("own handle", id(self))
            super().handle()

    server.RequestHandlerClass = OwnLoop
    with serving(server):
        with contextlib.closing(connect(server)) as client:
            assert get(client, "/a") == (200, b"a")
            assert get(client, "/b") == (200, b"b")
            assert parked(server) == 0
    assert len(journal.of("own handle")) == 1


@pytest.mark.parametrize("setting, value, error", [
    ("keep_alive_timeout", 0, ValueError), ("keep_alive_timeout", -1.0, ValueError),
    ("keep_alive_timeout", float("nan"), ValueError), ("keep_alive_timeout", "75", TypeError),
    ("keep_alive_linger", -0.001, ValueError), ("keep_alive_linger", None, TypeError),
    ("keep_alive_linger", True, TypeError),
])
def test_invalid_keep_alive_settings_raise_when_a_loop_starts(fast, setting, value, error):
    journal = Journal()
    server = make_http_server(fast, journal, **{setting: value})
    try:
        with pytest.raises(error, match=setting):
            bounded(server.serve_forever, 0.05)
        setattr(server, setting, 0.5)  # then the same server serves
        with serving(server), contextlib.closing(connect(server)) as client:
            assert get(client, "/ok") == (200, b"ok")
    finally:
        server.server_close()


# --- how a parked connection ends ------------------------------------------------------------

def test_eof_on_a_parked_connection_finishes_its_handler_once(fast):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0)
    with serving(server):
        client = connect(server)
        assert get(client, "/a") == (200, b"a")
        assert wait_until(lambda: parked(server) == 1)
        descriptors = open_descriptors()
        client.close()
        assert wait_until(lambda: len(journal.of("finish")) == 1)
        assert wait_until(lambda: parked(server) == 0)
        # the client's socket and the server's side of the connection, both closed
        assert wait_until(lambda: open_descriptors() <= descriptors - 2)
    assert not journal.errors


def test_a_request_sent_in_two_parts_is_served_when_it_is_whole(fast):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0)
    with serving(server):
        with socket.create_connection(server.server_address[:2], timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"HTTP/1.1 200")
            while reader.readline() not in (b"\r\n", b""):
                pass
            assert reader.read(3) == b"one"
            assert wait_until(lambda: parked(server) == 1)
            sock.sendall(b"GET /two HTTP/1.1\r\n")  # half a request: served once it is whole
            assert wait_until(lambda: parked(server) == 0)
            sock.sendall(b"Host: x\r\n\r\n")
            assert reader.readline().startswith(b"HTTP/1.1 200")
            while reader.readline() not in (b"\r\n", b""):
                pass
            assert reader.read(3) == b"two"
    assert [event[1] for event in journal.of("request")] == ["/one", "/two"]


def test_pipelined_requests_are_answered_in_order_without_parking_between(fast):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0)
    with serving(server):
        with socket.create_connection(server.server_address[:2], timeout=TIMEOUT) as sock:
            sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(5)))
            reader = sock.makefile("rb")
            for n in range(5):
                assert reader.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                assert reader.read(length) == str(n).encode()
    assert [event[1] for event in journal.of("request")] == [f"/{n}" for n in range(5)]


@pytest.mark.parametrize("settings, handler_attrs", [
    ({"keep_alive_timeout": 0.2}, {}),  # the server's idle deadline
    ({"keep_alive_timeout": None}, {"timeout": 0.2}),  # the handler's own timeout
])
def test_an_idle_deadline_closes_a_parked_connection(fast, settings, handler_attrs):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0, handler_attrs=handler_attrs,
                              **settings)
    with serving(server):
        with socket.create_connection(server.server_address[:2], timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"\r\n\r\na"):
                reply += sock.recv(100)
            assert closed_by_peer(sock)  # within TIMEOUT: the deadline closed it
        assert wait_until(lambda: len(journal.of("finish")) == 1)
    assert not journal.errors


# max_threads None: on the compiled core, request threads that accept for themselves park
# (fastserver._acceptors); 4: the loop hands every connection out, and parks
@pytest.mark.parametrize("max_threads", [None, 4])
def test_shutdown_and_server_close_with_parked_connections_leave_nothing(fast, max_threads):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0, max_threads=max_threads)
    descriptors = open_descriptors()
    threads = threading.active_count()
    clients = []
    try:
        with serving(server):
            clients = [connect(server) for _ in range(20)]
            for client in clients:
                assert get(client, "/a") == (200, b"a")
            assert wait_until(lambda: parked(server) == 20)
        # the loop ended and the server is closed: every parked connection was closed for
        # good (the clients see EOF), each handler finished once, no thread is left
        for client in clients:
            assert closed_by_peer(client.sock)
        assert len(journal.of("finish")) == 20
        assert wait_until(lambda: threading.active_count() <= threads)
    finally:
        for client in clients:
            client.close()
    assert wait_until(lambda: open_descriptors() <= descriptors)


def test_a_connection_parked_after_the_loop_ended_is_closed_by_its_thread(fast):
    # A request thread that finishes its request after shutdown() cannot park: it finishes its
    # handler and closes the connection itself.
    journal = Journal()
    release = threading.Event()
    started = threading.Event()
    hs = http_server_module(fast)

    class Slow(hs.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            started.set()
            release.wait(TIMEOUT)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def finish(self):
            journal.add("finish", id(self))
            super().finish()

        def log_message(self, format, *args):
            pass

    class Server(hs.ThreadingHTTPServer):
        keep_alive_linger = 0.0

    server = Server(("127.0.0.1", 0), Slow)
    with socket.create_connection(server.server_address[:2], timeout=TIMEOUT) as sock:
        with serving(server, close=False):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert started.wait(TIMEOUT)
        release.set()  # the loop has ended: the answer comes, then the close
        reply = b""
        while chunk := sock.recv(1000):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        server.server_close()
    assert len(journal.of("finish")) == 1


# --- with TLS and the PROXY protocol ---------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.fail("no openssl command (apt-get install openssl; .ci/run installs it)")
    directory = tmp_path_factory.mktemp("keep-alive-certs")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_connections_park_between_requests(fast, certificate):
    journal = Journal()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*certificate)
    server = make_http_server(fast, journal, keep_alive_linger=0.0, ssl_context=server_context)
    client_context = ssl.create_default_context(cafile=certificate[0])
    with serving(server):
        client = http.client.HTTPSConnection("localhost", server.server_address[1],
                                             timeout=TIMEOUT, context=client_context)
        with contextlib.closing(client):
            for n in range(3):
                assert get(client, f"/{n}") == (200, str(n).encode())
                assert wait_until(lambda: parked(server) == 1)
        assert wait_until(lambda: len(journal.of("finish")) == 1)
    assert len({event[1] for event in journal.events}) == 1
    assert not journal.errors


def test_proxy_connections_keep_the_proxied_address_across_parked_requests(fast):
    journal = Journal()
    server = make_http_server(fast, journal, keep_alive_linger=0.0, proxy_protocol=True)
    with serving(server):
        with socket.create_connection(server.server_address[:2], timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 80\r\n")
            reader = sock.makefile("rb")
            for n in range(3):
                sock.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                assert reader.readline().startswith(b"HTTP/1.1 200")
                while reader.readline() not in (b"\r\n", b""):
                    pass
                assert reader.read(1) == str(n).encode()
                assert wait_until(lambda: parked(server) == 1)
    assert [event[2] for event in journal.of("request")] == [("192.0.2.7", 40000)] * 3


def test_the_command_lines_server_parks_and_serves_its_directory(fast, tmp_path):
    # python -m fastserver.http's server passes ``directory`` to the handler class (a partial),
    # so that its keep-alive connections park as any other.
    (tmp_path / "page.txt").write_bytes(b"from the directory")

    class Handler(fastserver.http.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

    class Server(fastserver.http.DualStackServer):
        address_family = socket.AF_INET
        directory = str(tmp_path)
        keep_alive_linger = 0.0

    server = Server(("127.0.0.1", 0), Handler)
    with serving(server), contextlib.closing(connect(server)) as client:
        for _ in range(3):
            assert get(client, "/page.txt") == (200, b"from the directory")
            assert wait_until(lambda: parked(server) == 1)


def test_the_compiled_reader_frees_its_buffer_only_when_it_holds_nothing():
    # What a parked connection's rfile keeps on the compiled core: no read buffer (8 KiB on
    # 3.11, 128 KiB on 3.14) while nothing is buffered; the next read makes it again.
    from fastserver import _cores

    if _cores.COMPILED is None:
        pytest.fail("the compiled core is missing (a broken build?)")
    left, right = socket.socketpair()
    with left, right:
        rfile, wfile = _cores.COMPILED.stream_files(left, -1, 0)
        right.sendall(b"first\nsecond\n")
        assert rfile.readline() == b"first\n"
        assert rfile.release_buffer() is False  # "second" is buffered: kept
        assert rfile.readline() == b"second\n"
        assert rfile.release_buffer() is True
        assert rfile.release_buffer() is True  # already free
        right.sendall(b"third\n" + b"x" * 20000 + b"\n")
        assert rfile.peek(1).startswith(b"third")  # a buffer again
        assert rfile.readline() == b"third\n"
        assert rfile.read(0) == b""
        assert rfile.readline() == b"x" * 20000 + b"\n"
        assert rfile.release_buffer() is True
        assert rfile.read(0) == b""
        right.sendall(b"abc")
        right.shutdown(socket.SHUT_WR)
        assert rfile.read(10) == b"abc"
        rfile.close()
        wfile.close()
        with pytest.raises(ValueError):
            rfile.release_buffer()
