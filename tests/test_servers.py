"""BaseServer's API on every server class: methods, attributes, addresses, the loops."""

import errno
import fcntl
import os
import select
import signal
import socket
import socketserver
import sys
import threading
import time

import pytest
from helpers import (
    KINDS,
    NO_EXTENSIONS,
    STREAM_KINDS,
    TIMEOUT,
    bounded,
    client_for,
    closed_by_peer,
    ipv6_available,
    make_server,
    receive,
    reply_handler,
    send,
    serving,
    talk,
    wait_until,
)

import fastserver

ALL_KINDS = list(KINDS)


def echo(module, kind):
    return reply_handler(module, kind, lambda handler, data: data.upper())


# --- the implementation string ---------------------------------------------------------------

def test_implementation_names_core_and_poller():
    previous = fastserver.IMPLEMENTATION.split("-")[0]
    try:
        if not NO_EXTENSIONS:
            assert fastserver.IMPLEMENTATION.startswith("cython-"), fastserver.IMPLEMENTATION
        assert fastserver._use_core("python").startswith("python-")
        assert fastserver.IMPLEMENTATION.startswith("python-")
        assert fastserver._cores.active.loops.__name__ == "fastserver._core_py"
        if sys.platform.startswith("linux"):
            assert fastserver.IMPLEMENTATION == "python-epoll"
        if "cython" in fastserver._cores.CORES:
            assert fastserver._use_core("cython") == fastserver.IMPLEMENTATION
            assert fastserver._cores.active.loops.__name__ == "fastserver._core"
            if sys.platform.startswith("linux"):  # poll: FASTSERVER_POLLER=poll (test_packaging)
                assert fastserver.IMPLEMENTATION in ("cython-epoll", "cython-poll")
        with pytest.raises(ValueError):
            fastserver._use_core("nonesuch")
    finally:
        fastserver._use_core(previous)


# --- attributes -----------------------------------------------------------------------------

CLASS_ATTRIBUTES = {
    "BaseServer": ["timeout"],
    "TCPServer": ["timeout", "address_family", "socket_type", "request_queue_size",
                  "allow_reuse_address", "allow_reuse_port"],
    "UDPServer": ["address_family", "socket_type", "allow_reuse_address", "allow_reuse_port",
                  "max_packet_size"],
    "UnixStreamServer": ["address_family", "socket_type", "request_queue_size"],
    "UnixDatagramServer": ["address_family", "socket_type", "max_packet_size"],
    "ThreadingMixIn": ["daemon_threads", "block_on_close"],
    "ForkingMixIn": ["timeout", "max_children", "block_on_close", "active_children"],
    "StreamRequestHandler": ["rbufsize", "wbufsize", "timeout", "disable_nagle_algorithm"],
}


# Whether the running Python's socketserver has allow_reuse_port (3.11 and later).
STDLIB_REUSE_PORT = hasattr(socketserver.TCPServer, "allow_reuse_port")


@pytest.mark.parametrize("name", sorted(CLASS_ATTRIBUTES))
def test_class_attributes_have_stdlib_defaults(ss, name):
    """Each attribute is there iff the running Python's socketserver has it, with its default."""
    cls, stdlib_cls = getattr(ss, name), getattr(socketserver, name)
    for attribute in CLASS_ATTRIBUTES[name]:
        if hasattr(stdlib_cls, attribute):
            assert getattr(cls, attribute) == getattr(stdlib_cls, attribute), attribute
        else:
            assert not hasattr(cls, attribute), attribute


def test_version_dependent_attributes_follow_the_running_stdlib():
    """servers.py's table of attributes that came after 3.10 says what this Python has."""
    from fastserver import servers

    assert servers._STDLIB_ADDED  # else the check below checks nothing
    for attribute, since in servers._STDLIB_ADDED.items():
        here = sys.version_info >= since
        for name in ("TCPServer", "UDPServer", "ThreadingTCPServer", "UnixStreamServer"):
            assert hasattr(getattr(socketserver, name), attribute) is here, (name, attribute)
            assert hasattr(getattr(fastserver, name), attribute) is here, (name, attribute)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_instance_attributes(ss, kind, sock_dir):
    handler = echo(ss, kind)
    server = make_server(ss, kind, handler, sock_dir)
    with server:
        family, type_ = KINDS[kind][1:]
        assert server.RequestHandlerClass is handler
        assert server.address_family == family and server.socket.family == family
        assert server.socket_type == type_ and server.socket.type == type_
        assert type(server.socket) is socket.socket
        assert server.fileno() == server.socket.fileno() >= 0
        assert server.server_address == server.socket.getsockname()
        if family == socket.AF_INET:
            host, port = server.server_address
            assert host == "127.0.0.1" and port > 0
        elif family == socket.AF_INET6:
            assert len(server.server_address) == 4 and server.server_address[1] > 0
        else:
            assert os.path.exists(server.server_address)
        # The server's fileno() is what a selector waits on.
        with client_for(server, sock_dir) as client:
            send(client, server, b"x")
            assert select.select([server], [], [], TIMEOUT)[0] == [server]
    assert server.fileno() == -1 and server.socket.fileno() == -1


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_server_close_and_context_manager(ss, kind, sock_dir):
    server = make_server(ss, kind, echo(ss, kind), sock_dir)
    with server as entered:
        assert entered is server
        assert server.fileno() >= 0
    assert server.fileno() == -1
    server.server_close()  # a second close is harmless
    assert server.fileno() == -1


@pytest.mark.parametrize("option, attribute", [
    ("SO_REUSEADDR", "allow_reuse_address"),
    pytest.param("SO_REUSEPORT", "allow_reuse_port",
                 marks=pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                                          reason="no SO_REUSEPORT")),
])
@pytest.mark.parametrize("kind", ["tcp", "udp"])
@pytest.mark.parametrize("enabled", [True, False])
def test_reuse_options(ss, kind, option, attribute, enabled):
    # Where the stdlib has no allow_reuse_port (3.10), a subclass's means nothing, as there.
    honoured = attribute != "allow_reuse_port" or STDLIB_REUSE_PORT
    with make_server(ss, kind, echo(ss, kind), **{attribute: enabled}) as server:
        value = server.socket.getsockopt(socket.SOL_SOCKET, getattr(socket, option))
        assert bool(value) is (enabled and honoured)


def test_reuse_port_lets_two_servers_share_a_port(ss):
    """allow_reuse_port = True: two servers bind one port; on 3.10 (no allow_reuse_port in the
    stdlib) the second bind fails, as it does there."""
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")
    with make_server(ss, "tcp", echo(ss, "tcp"), allow_reuse_port=True) as first:
        Server = type(first)
        if not STDLIB_REUSE_PORT:
            with pytest.raises(OSError) as caught:
                Server(first.server_address, echo(ss, "tcp"))
            assert caught.value.errno == errno.EADDRINUSE
            return
        with Server(first.server_address, echo(ss, "tcp")) as second:
            assert second.server_address == first.server_address


def test_request_queue_size_is_the_listen_backlog(ss, monkeypatch):
    backlogs = []
    listen = socket.socket.listen

    def spy(sock, *args):
        backlogs.append((sock.fileno(), args))
        return listen(sock, *args)

    monkeypatch.setattr(socket.socket, "listen", spy)
    with make_server(ss, "tcp", echo(ss, "tcp"), request_queue_size=17) as server:
        assert backlogs == [(server.fileno(), (17,))]
    backlogs.clear()
    with make_server(ss, "udp", echo(ss, "udp")):
        assert backlogs == []  # a datagram server does not listen


def test_construction_calls_server_bind_then_server_activate(ss):
    calls = []

    class Server(ss.TCPServer):
        def server_bind(self):
            calls.append(("bind", self.socket.getsockname()))
            super().server_bind()

        def server_activate(self):
            calls.append(("activate", self.server_address))
            super().server_activate()

    with Server(("127.0.0.1", 0), echo(ss, "tcp")) as server:
        assert calls == [("bind", ("0.0.0.0", 0)), ("activate", server.server_address)]
    calls.clear()
    with Server(("127.0.0.1", 0), echo(ss, "tcp"), bind_and_activate=False):
        assert calls == []


def test_bind_and_activate_false_then_by_hand(ss):
    server = ss.TCPServer(("127.0.0.1", 0), echo(ss, "tcp"), bind_and_activate=False)
    with server:
        assert server.server_address == ("127.0.0.1", 0)
        assert server.socket.getsockname() == ("0.0.0.0", 0)
        server.allow_reuse_address = True  # an instance attribute, read by server_bind
        server.server_bind()
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert server.server_address[1] > 0
        server.server_activate()
        with serving(server, close=False):
            assert talk(server, b"manual") == b"MANUAL"


# --- handle_request and client addresses ---------------------------------------------------

@pytest.mark.parametrize("kind, bind_client",
                         [(kind, False) for kind in ALL_KINDS] + [("unix", True)])
def test_handle_request_serves_one_with_the_peer_address(ss, kind, bind_client, sock_dir):
    seen = []

    def respond(handler, data):
        seen.append((handler.client_address, handler.server, data))
        return b"got " + data

    with make_server(ss, kind, reply_handler(ss, kind, respond), sock_dir) as server:
        with client_for(server, sock_dir, bind=bind_client) as client:
            send(client, server, b"one")
            assert bounded(server.handle_request) is None
            assert receive(client, server) == b"got one"
            [(address, handler_server, data)] = seen
            assert handler_server is server and data == b"one"
            # What the client's own socket says is what the stdlib hands the handler.
            assert address == client.getsockname()
            assert type(address) is type(client.getsockname())
            if KINDS[kind][1] == socket.AF_INET:
                assert type(address) is tuple and len(address) == 2
            elif KINDS[kind][1] == socket.AF_INET6:
                assert type(address) is tuple and len(address) == 4
            elif kind == "unix" and not bind_client:
                assert address == ""
            else:
                assert type(address) is str and address.startswith(sock_dir)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_serve_forever_serves_many(ss, kind, sock_dir):
    with make_server(ss, kind, echo(ss, kind), sock_dir) as server, serving(server):
        for i in range(20):
            assert talk(server, b"req%d" % i) == b"REQ%d" % i


def test_udp_max_packet_size_truncates(ss):
    with make_server(ss, "udp", echo(ss, "udp"), max_packet_size=4) as server, serving(server):
        assert talk(server, b"abcdefgh") == b"ABCD"


@pytest.mark.parametrize("socket_timeout, server_timeout", [
    (None, 0.2), (0.2, None), (0.2, TIMEOUT), (TIMEOUT, 0.2), (None, 0), (None, -1),
])
def test_handle_request_timeout_calls_handle_timeout(ss, socket_timeout, server_timeout):
    calls = []

    class Server(ss.TCPServer):
        timeout = server_timeout

        def handle_timeout(self):
            calls.append(time.monotonic())
            return "timed out"

    with Server(("127.0.0.1", 0), echo(ss, "tcp")) as server:
        server.socket.settimeout(socket_timeout)
        start = time.monotonic()
        assert bounded(server.handle_request) == "timed out"
        elapsed = time.monotonic() - start
        assert len(calls) == 1
        expected = max(0, min(t for t in (socket_timeout, server_timeout) if t is not None))
        assert expected - 0.01 <= elapsed < expected + 1.0


def test_handle_request_serves_within_timeout(ss):
    """A listener with a timeout still hands the handler a blocking connection."""
    seen = []

    def respond(handler, data):
        seen.append(handler.request.gettimeout())
        return data

    with make_server(ss, "tcp", reply_handler(ss, "tcp", respond), timeout=TIMEOUT) as server:
        server.socket.settimeout(TIMEOUT)
        with client_for(server) as client:
            send(client, server, b"in time")
            bounded(server.handle_request)
            assert receive(client, server) == b"in time"
        assert seen == [None]
        assert server.socket.gettimeout() == TIMEOUT
        # The listener is left as it was: another handle_request times out as it should.
        server.timeout = 0.1
        assert bounded(server.handle_request) is None


def test_serve_forever_ignores_timeout_and_calls_service_actions(ss):
    actions, timeouts = [], []

    class Server(ss.TCPServer):
        timeout = 0.01

        def service_actions(self):
            actions.append(threading.current_thread())

        def handle_timeout(self):
            timeouts.append(1)

    with Server(("127.0.0.1", 0), echo(ss, "tcp")) as server:
        with serving(server, poll_interval=0.01) as thread:
            assert wait_until(lambda: len(actions) >= 5)
            before = len(actions)
            assert talk(server, b"x") == b"X"
            assert wait_until(lambda: len(actions) > before)
        assert set(actions) == {thread}
        assert timeouts == []


def test_service_actions_runs_after_each_request(ss):
    """With a long poll_interval, the only wakeups are requests: one service_actions each."""
    actions, handled = [], []

    def respond(handler, data):
        handled.append(len(actions))
        return data

    class Server(ss.TCPServer):
        def service_actions(self):
            actions.append(len(handled))

    with Server(("127.0.0.1", 0), reply_handler(ss, "tcp", respond)) as server:
        with serving(server, poll_interval=1):
            for i in range(3):
                talk(server, b"x")
                assert wait_until(lambda: len(actions) > i)  # noqa: B023 - called right here
            assert actions == [1, 2, 3]
            assert handled == [0, 1, 2]


def test_shutdown_returns_and_serve_forever_can_run_again(ss):
    with make_server(ss, "tcp", echo(ss, "tcp")) as server:
        for round_ in range(2):
            done = threading.Event()

            def run(done=done):
                server.serve_forever(poll_interval=0.05)
                done.set()

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            assert talk(server, b"round %d" % round_) == b"ROUND %d" % round_
            bounded(server.shutdown)
            assert done.is_set()  # serve_forever has returned once shutdown() returns
            thread.join(TIMEOUT)
            assert not thread.is_alive()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_shutdown_does_not_wait_out_poll_interval(fast, kind, sock_dir):
    with make_server(fast, kind, echo(fast, kind), sock_dir) as server:
        with serving(server, poll_interval=10):
            time.sleep(0.05)  # let the loop start waiting
            assert talk(server, b"a") == b"A"
            start = time.monotonic()
            bounded(server.shutdown, timeout=3)
            assert time.monotonic() - start < 1.0


# --- the hooks ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ALL_KINDS)
def test_handle_error_gets_the_request_and_serving_goes_on(ss, kind, sock_dir):
    errors, requests = [], []

    def respond(handler, data):
        requests.append((handler.request, handler.client_address))
        if data == b"boom":
            raise RuntimeError("boom")
        return b"fine"

    def handle_error(self, request, client_address):
        errors.append((request, client_address, sys.exc_info()[0]))

    handler = reply_handler(ss, kind, respond)
    with make_server(ss, kind, handler, sock_dir, handle_error=handle_error) as server:
        with serving(server):
            with client_for(server, sock_dir) as client:
                send(client, server, b"boom")
                # A stream is closed without a reply; finish() sends the empty wfile as a datagram.
                assert receive(client, server) == b""
                assert wait_until(lambda: errors)
            assert talk(server, b"next") == b"fine"
    assert len(errors) == 1
    assert errors[0][0] is requests[0][0] and errors[0][1] == requests[0][1]
    assert errors[0][2] is RuntimeError


def test_default_handle_error_prints_the_traceback(ss, capsys):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            raise ZeroDivisionError("unlucky")

    with make_server(ss, "tcp", Handler) as server, client_for(server) as client:
        bounded(server.handle_request)
        out = capsys.readouterr()
        assert "Exception occurred during processing of request from" in out.err
        assert repr(client.getsockname()) in out.err
        assert "ZeroDivisionError: unlucky" in out.err
        assert client.recv(10) == b""


class RejectAll:
    def verify_request(self, request, client_address):
        self.verified.append(client_address)
        return False

    def shutdown_request(self, request):
        self.shut.append(request)
        super().shutdown_request(request)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_verify_request_false_skips_the_handler(ss, kind, sock_dir):
    handled = []
    handler = reply_handler(ss, kind, lambda handler, data: handled.append(data) or b"")
    with make_server(ss, kind, handler, sock_dir, mixins=(RejectAll,)) as server:
        server.verified, server.shut = [], []
        with client_for(server, sock_dir) as client:
            send(client, server, b"knock")
            bounded(server.handle_request)
            if kind in STREAM_KINDS:
                assert closed_by_peer(client)
                assert server.shut[0].fileno() == -1
        assert handled == [] and len(server.verified) == 1 and len(server.shut) == 1


def test_process_finish_and_get_request_overrides(ss):
    calls = []

    class Server(ss.TCPServer):
        def get_request(self):
            request, address = super().get_request()
            return request, ("tagged", address)

        def process_request(self, request, client_address):
            calls.append(("process", client_address[0]))
            super().process_request(request, client_address)

        def finish_request(self, request, client_address):
            calls.append(("finish", client_address[0]))
            super().finish_request(request, client_address)

    handler = reply_handler(ss, "tcp", lambda h, data: repr(h.client_address[0]).encode())
    with Server(("127.0.0.1", 0), handler) as server, serving(server):
        assert talk(server) == b"'tagged'"
    assert calls == [("process", "tagged"), ("finish", "tagged")]


def test_process_request_that_keeps_the_request(ss):
    """An override of process_request owns the request: the loop does not close it."""
    kept = []

    class Server(ss.TCPServer):
        def process_request(self, request, client_address):
            kept.append(request)

    with Server(("127.0.0.1", 0), echo(ss, "tcp")) as server, client_for(server) as client:
        bounded(server.handle_request)
        [request] = kept
        assert request.fileno() >= 0
        request.sendall(b"still open")
        request.close()
        assert client.recv(100) == b"still open"


def test_default_timeout_reaches_the_connection(ss):
    """socket.setdefaulttimeout() applies to accepted connections, as socket.accept() does it."""
    seen = []

    def respond(handler, data):
        seen.append(handler.request.gettimeout())
        return data

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2.5)
    try:
        with make_server(ss, "tcp", reply_handler(ss, "tcp", respond)) as server:
            with client_for(server) as client:
                send(client, server, b"d")
                bounded(server.handle_request)
                assert receive(client, server) == b"d"
    finally:
        socket.setdefaulttimeout(previous)
    assert seen == [2.5]


def test_poll_interval_none_still_shuts_down(fast):
    """fastserver wakes the loop on shutdown(): even a wait without a timeout ends."""
    with make_server(fast, "tcp", echo(fast, "tcp")) as server:
        with serving(server, poll_interval=None):
            assert talk(server, b"z") == b"Z"
            time.sleep(0.05)
            start = time.monotonic()
            bounded(server.shutdown, timeout=3)
            assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("nonblocking", [False, True])
def test_listener_blocking_mode_is_left_as_it_was(ss, nonblocking):
    def flag(server):
        return bool(fcntl.fcntl(server.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)

    with make_server(ss, "tcp", echo(ss, "tcp")) as server:
        server.socket.setblocking(not nonblocking)
        with serving(server, close=False):
            assert talk(server, b"b") == b"B"
        assert flag(server) is nonblocking
        with client_for(server) as client:
            send(client, server, b"c")
            bounded(server.handle_request)
            assert receive(client, server) == b"C"
        assert flag(server) is nonblocking
        assert server.socket.getblocking() is not nonblocking


# The names fastserver adds to the stdlib's classes (documented in the README): a subclass that
# used one of them for its own state would change meaning, so the list is kept on purpose.
# (_BaseServer__shutdown_request is the stdlib's instance attribute, kept as a property of the
# class for code that sets it to stop a loop.)
_EVERY_SERVER = {"workers", "graceful_timeout", "worker_id", "proxy_protocol", "proxy_timeout",
                 "proxy_allow_from",
                 "proxied_address", "tcp_nodelay", "from_socket", "first_data_timeout",
                 "_wake_loop", "_BaseServer__shutdown_request", "ssl_context",
                 "tls_handshake_timeout", "_tls_context", "_start_tls", "_process_tls_in_loop",
                 "_listener_nodelay", "keep_alive_parking", "keep_alive_timeout",
                 "keep_alive_linger", "_loop_state", "_keep_alive"}
FASTSERVER_EXTRAS = {
    "ThreadingTCPServer": _EVERY_SERVER | {"max_threads", "request_turns", "_accepting",
                                           "_thread_pool"},
    "UDPServer": _EVERY_SERVER,
}


@pytest.mark.parametrize("name", sorted(FASTSERVER_EXTRAS))
def test_fastserver_adds_only_its_documented_names(name):
    added = set(dir(getattr(fastserver, name))) - set(dir(getattr(socketserver, name)))
    assert added == FASTSERVER_EXTRAS[name]


@pytest.mark.parametrize("name", sorted(socketserver.__all__))
def test_fastserver_lacks_no_stdlib_name(name):
    """Every attribute of the running Python's socketserver classes is on fastserver's (the
    interpreter's own dunders aside: 3.13 drops __firstlineno__ when __module__ is set)."""
    missing = set(dir(getattr(socketserver, name))) - set(dir(getattr(fastserver, name)))
    assert {attribute for attribute in missing if not attribute.startswith("__")} == set()


def test_shutdown_returns_after_serve_forever_failed(ss):
    """Whatever made serve_forever() raise, a later shutdown() does not wait forever."""
    with make_server(ss, "tcp", echo(ss, "tcp")) as server:
        server.workers = 0  # (fastserver rejects it; means nothing to the stdlib)
        server.service_actions = lambda: 1 / 0
        with pytest.raises(Exception):  # noqa: B017 - any
            bounded(server.serve_forever, 0.01)
        bounded(server.shutdown, timeout=2)


# --- signals: the loops run in the main thread here -----------------------------------------

class Alarm(Exception):
    pass


@pytest.fixture
def alarm():
    """``alarm(seconds, raising)``: SIGALRM every ``seconds``, its handler raising Alarm or
    counting; undone after the test."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    calls = []

    def start(seconds, raising):
        def handler(signum, frame):
            calls.append(signum)
            if raising:
                raise Alarm

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
        return calls

    previous = signal.getsignal(signal.SIGALRM)
    yield start
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_signal_handler_exception_ends_serve_forever(ss, alarm):
    with make_server(ss, "tcp", echo(ss, "tcp")) as server:
        watchdog = threading.Timer(3, server.shutdown)  # a loop that swallowed it ends anyway
        watchdog.start()
        try:
            alarm(0.1, raising=True)
            start = time.monotonic()
            with pytest.raises(Alarm):
                server.serve_forever(poll_interval=10)
            assert time.monotonic() - start < 2
        finally:
            watchdog.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        with serving(server, close=False):  # it can serve again
            assert talk(server, b"after") == b"AFTER"


def test_signal_handler_exception_ends_handle_request(ss, alarm):
    with make_server(ss, "tcp", echo(ss, "tcp"), timeout=3) as server:
        alarm(0.1, raising=True)
        start = time.monotonic()
        with pytest.raises(Alarm):
            server.handle_request()
        assert time.monotonic() - start < 2


def test_signals_do_not_cut_the_timeout_short(ss, alarm):
    timeouts = []
    with make_server(ss, "tcp", echo(ss, "tcp"), timeout=0.3,
                     handle_timeout=lambda self: timeouts.append(1)) as server:
        calls = alarm(0.02, raising=False)
        start = time.monotonic()
        server.handle_request()
        elapsed = time.monotonic() - start
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert len(calls) >= 3  # the wait was interrupted, and went on
    assert timeouts == [1] and 0.29 <= elapsed < 2


# --- address families -----------------------------------------------------------------------

def test_tcp6_and_tcp4_clients(ss):
    with make_server(ss, "tcp6", echo(ss, "tcp6")) as server, serving(server):
        assert server.address_family == socket.AF_INET6
        assert talk(server, b"six") == b"SIX"


def link_local_address():
    """(address, interface index) of a link-local IPv6 address here, or None."""
    try:
        with open("/proc/net/if_inet6") as table:
            rows = [line.split() for line in table]
    except OSError:
        return None
    for hexaddr, index, _, scope, _, _name in rows:
        if int(scope, 16) == 0x20:
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr)), int(index, 16)
    return None


def test_link_local_client_address_keeps_the_scope(ss):
    found = link_local_address()
    if found is None or not ipv6_available():
        pytest.skip("no link-local IPv6 address here")
    address, index = found
    seen = []

    def respond(handler, data):
        seen.append(handler.client_address)
        return data

    class Server(ss.TCPServer):
        address_family = socket.AF_INET6

    try:
        server = Server((address, 0, 0, index), reply_handler(ss, "tcp", respond))
    except OSError as exc:
        pytest.skip(f"cannot bind {address}%{index}: {exc}")
    with server, client_for(server) as client:
        send(client, server, b"scoped")
        bounded(server.handle_request)
        assert receive(client, server) == b"scoped"
        assert seen == [client.getsockname()] and seen[0][3] == index


def test_dual_stack_server_sees_ipv4_mapped_clients(ss):
    if not ipv6_available():
        pytest.skip("no IPv6 here")
    seen = []

    def respond(handler, data):
        seen.append(handler.client_address)
        return data

    class Server(ss.TCPServer):
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    with Server(("::", 0), reply_handler(ss, "tcp", respond)) as server:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), TIMEOUT) as client:
            client.shutdown(socket.SHUT_WR)
            bounded(server.handle_request)
            assert client.recv(10) == b""
            assert seen == [("::ffff:127.0.0.1", client.getsockname()[1], 0, 0)]


def unix_peer_addresses(directory):
    """Client addresses to bind: a short path, one of 107 bytes (the most sun_path holds with
    its NUL), a path that is not UTF-8, an abstract name (Linux)."""
    base = os.fsencode(directory) + b"/"
    addresses = {
        "short": os.path.join(directory, "peer"),
        "107": (base + b"p" * (107 - len(base))).decode(),
        "bytes": base + b"\xff\xfe-peer",
    }
    if sys.platform.startswith("linux"):
        addresses["abstract"] = b"\0fastserver-peer-%d" % os.getpid()
    return addresses


@pytest.mark.parametrize("which", ["short", "107", "bytes", "abstract"])
@pytest.mark.parametrize("kind", ["unix", "unixdgram"])
def test_unix_peer_addresses_as_the_stdlib(ss, kind, which, sock_dir):
    addresses = unix_peer_addresses(sock_dir)
    if which not in addresses:
        pytest.skip("no abstract namespace here")
    seen = []

    def respond(handler, data):
        seen.append(handler.client_address)
        return data

    with make_server(ss, kind, reply_handler(ss, kind, respond), sock_dir) as server:
        with socket.socket(socket.AF_UNIX, server.socket_type) as client:
            client.settimeout(TIMEOUT)
            try:
                client.bind(addresses[which])
            except OSError as exc:
                pytest.skip(f"cannot bind {which}: {exc}")
            if kind == "unix":
                client.connect(server.server_address)
            send(client, server, b"peer")
            bounded(server.handle_request)
            assert receive(client, server) == b"peer"
            assert seen == [client.getsockname()]
            assert type(seen[0]) is type(client.getsockname())


def test_abstract_namespace_server(ss):
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux's abstract namespace")
    name = b"\0fastserver-server-%d-%d" % (os.getpid(), id(ss))
    with ss.UnixStreamServer(name, echo(ss, "unix")) as server, serving(server):
        assert server.server_address == name
        assert talk(server, b"abstract") == b"ABSTRACT"


def test_unix_stream_server_leaves_its_path(ss, sock_dir):
    """The stdlib does not unlink the socket path on close; neither may a drop-in."""
    with make_server(ss, "unix", echo(ss, "unix"), sock_dir) as server, serving(server):
        path = server.server_address
        assert talk(server, b"u") == b"U"
    assert os.path.exists(path)


def test_serve_forever_from_several_servers_at_once(ss):
    servers = [make_server(ss, "tcp", echo(ss, "tcp")) for _ in range(3)]
    try:
        with serving(servers[0]), serving(servers[1]), serving(servers[2]):
            for server in servers * 3:
                assert talk(server, b"s") == b"S"
    finally:
        for server in servers:
            server.server_close()


def test_is_socketserver_compatible_subclassing(fast):
    """The public classes have the stdlib's hierarchy."""
    for name in socketserver.__all__:
        stdlib_bases = [b.__name__ for b in getattr(socketserver, name).__mro__]
        fast_bases = [b.__name__ for b in getattr(fast, name).__mro__]
        assert fast_bases == stdlib_bases, name


def test_shutdown_from_another_thread_while_handling(ss):
    """shutdown() called while a request is being handled returns once it is done."""
    started, release = threading.Event(), threading.Event()

    def respond(handler, data):
        started.set()
        release.wait(TIMEOUT)
        return data

    with make_server(ss, "tcp", reply_handler(ss, "tcp", respond)) as server:
        with serving(server) as thread, client_for(server) as client:
            send(client, server, b"slow")
            assert started.wait(TIMEOUT)
            stopper = threading.Thread(target=server.shutdown, daemon=True)
            stopper.start()
            time.sleep(0.1)
            assert stopper.is_alive() and thread.is_alive()
            release.set()
            stopper.join(TIMEOUT)
            assert not stopper.is_alive()
            assert receive(client, server) == b"slow"
