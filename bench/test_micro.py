"""Micro benchmarks: the standard library's socketserver, fastserver's pure core, its compiled core.

Run with ``python -m pytest bench --benchmark-only`` (the default ``tests`` run does not collect
them). Each benchmark is a group; each implementation a parameter:

- ``handle_request``: the dispatch overhead of ``handle_request()`` for one client that has
  already connected (its connection waits in the listen queue), with a do-nothing
  BaseRequestHandler: wait, accept, verify, process, finish, shutdown and close one request.
- ``serve_forever_shutdown``: a ``serve_forever()`` round trip: start the loop in a thread, serve
  one request (so the loop is known to be waiting), ``shutdown()``, join. The standard library's
  ``shutdown()`` waits out the loop's ``poll_interval`` (0.5 s by default); fastserver's wakes it.
"""

import socket
import socketserver
import struct
import threading

import pytest

import fastserver

TIMEOUT = 5.0
IMPLEMENTATIONS = ["stdlib", "fastserver-python", "fastserver-cython"]


@pytest.fixture(params=IMPLEMENTATIONS)
def ss(request):
    """The module under test: the stdlib's socketserver, or fastserver on one of its cores."""
    if request.param == "stdlib":
        assert socketserver is not fastserver, "fastserver.install() ran in this process"
        yield socketserver
        return
    core = request.param.removeprefix("fastserver-")
    if core not in fastserver._cores.CORES:
        pytest.skip(f"no {core} core here (FASTSERVER_NO_EXTENSIONS at build time?)")
    previous = fastserver.IMPLEMENTATION.split("-")[0]
    fastserver._use_core(core)
    try:
        yield fastserver
    finally:
        fastserver._use_core(previous)


@pytest.fixture
def server(ss):
    """A TCP server on the loopback interface with a handler that does nothing."""

    class Nothing(ss.BaseRequestHandler):
        def handle(self):
            pass

    with ss.TCPServer(("127.0.0.1", 0), Nothing) as srv:
        srv.timeout = TIMEOUT  # a lost connection fails the benchmark instead of hanging it
        yield srv


def connect(address):
    client = socket.create_connection(address, timeout=TIMEOUT)
    # Closed with a reset: no TIME_WAIT left behind, however many rounds are run.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return client


@pytest.mark.benchmark(group="handle_request")
def test_handle_request(benchmark, server):
    clients = []

    def connected():
        while clients:
            clients.pop().close()
        clients.append(connect(server.server_address))
        return (), {}

    try:
        benchmark.pedantic(server.handle_request, setup=connected, rounds=2000,
                           warmup_rounds=50)
    finally:
        for client in clients:
            client.close()


@pytest.mark.benchmark(group="serve_forever_shutdown")
def test_serve_forever_shutdown(benchmark, ss):
    served = threading.Event()

    class Signal(ss.BaseRequestHandler):
        def handle(self):
            served.set()

    with ss.TCPServer(("127.0.0.1", 0), Signal) as srv:

        def round_trip():
            served.clear()
            loop = threading.Thread(target=srv.serve_forever)
            loop.start()
            try:
                with connect(srv.server_address):
                    if not served.wait(TIMEOUT):
                        raise TimeoutError("serve_forever() served nothing")
            finally:
                srv.shutdown()
                loop.join(TIMEOUT)
            assert not loop.is_alive()

        rounds = 5 if ss is socketserver else 200  # the stdlib's takes poll_interval, 0.5 s
        benchmark.pedantic(round_trip, rounds=rounds, warmup_rounds=1)

