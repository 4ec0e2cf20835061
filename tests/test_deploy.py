"""Real deployments: behind HAProxy speaking the PROXY protocol (Debian's haproxy package)."""

import shutil
import socket
import subprocess
import threading
import time

import pytest

import fastserver

CORES = ["cython", "python"]


@pytest.fixture(params=CORES)
def core(request):
    if request.param not in fastserver._backend.CORES:
        pytest.skip("no compiled core in this installation")
    previous = fastserver.IMPLEMENTATION.split("-")[0]
    fastserver._use_core(request.param)
    yield request.param
    fastserver._use_core(previous)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AddressEcho(fastserver.StreamRequestHandler):
    """Replies with the client address the server gave it, then echoes one line."""

    def handle(self):
        self.wfile.write(f"{self.client_address[0]} {self.client_address[1]}\n".encode())
        self.wfile.write(self.rfile.readline())


class ProxiedServer(fastserver.ThreadingTCPServer):
    proxy_protocol = True
    daemon_threads = True

    def __init__(self, *args):
        super().__init__(*args)
        self.errors = []

    def handle_error(self, request, client_address):
        import sys

        self.errors.append(sys.exc_info()[0])


@pytest.fixture
def proxied_server(core):
    server = ProxiedServer(("127.0.0.1", 0), AddressEcho)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    yield server
    server.shutdown()
    thread.join(10)
    server.server_close()


def haproxy(tmp_path, backend_port, send_proxy):
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{port}
    default_backend back
backend back
    server app 127.0.0.1:{backend_port} {send_proxy}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"haproxy did not start: {proc.communicate()[0]!r}")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed "
                    "(apt-get install haproxy; .ci/run installs it)")
@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_behind_haproxy_the_handler_sees_the_client(tmp_path, proxied_server, send_proxy):
    proc, port = haproxy(tmp_path, proxied_server.server_address[1], send_proxy)
    try:
        for _ in range(3):
            with socket.socket() as client:
                client.settimeout(5)
                client.bind(("127.0.0.7", 0))  # a client address of its own on loopback
                client.connect(("127.0.0.1", port))
                client.sendall(b"payload after the header\n")
                with client.makefile("rb") as replies:
                    host, source_port = replies.readline().decode().split()
                    assert (host, int(source_port)) == client.getsockname()
                    assert replies.readline() == b"payload after the header\n"
        # The readiness probe's connection may reset its relayed request; nothing else may fail.
        assert [e for e in proxied_server.errors if not issubclass(e, ConnectionError)] == []
    finally:
        proc.kill()
        proc.wait()


def test_a_connection_without_the_header_is_not_served(proxied_server):
    with socket.create_connection(proxied_server.server_address, timeout=5) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert client.recv(100) == b""  # closed, nothing served
    deadline = time.monotonic() + 5
    while not proxied_server.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    from fastserver.proxy import ProxyError

    assert proxied_server.errors == [ProxyError]
