"""Real deployments: behind HAProxy speaking the PROXY protocol (Debian's haproxy package)."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
from helpers import free_port, haproxy

import fastserver

CORES = ["cython", "python"]


@pytest.fixture(params=CORES)
def core(request):
    if request.param not in fastserver._cores.CORES:
        pytest.skip("no compiled core in this installation")
    previous = fastserver.IMPLEMENTATION.split("-")[0]
    fastserver._use_core(request.param)
    yield request.param
    fastserver._use_core(previous)


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


def test_a_connection_without_the_header_is_not_served(proxied_server, caplog):
    caplog.set_level("WARNING", logger="fastserver")
    with socket.create_connection(proxied_server.server_address, timeout=5) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert client.recv(100) == b""  # closed, nothing served
    deadline = time.monotonic() + 5
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.01)
    # one line on the fastserver logger, naming the peer and why; no handle_error()
    [record] = caplog.records
    assert record.getMessage().startswith("127.0.0.1 - PROXY header refused: ")
    assert record.getMessage().endswith("not a PROXY protocol header")
    assert proxied_server.errors == []


def http_get(port, path="/hello.txt"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply


def start_cli(argv, **popen):
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(argv(sys.executable), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True, **popen)


def children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed (apt-get install systemd)")
def test_socket_activation_serves_on_the_passed_socket(tmp_path):
    (tmp_path / "hello.txt").write_text("hello from an activated socket\n")
    port = free_port()
    keep_env = ["-E", "PYTHONPATH"] if "PYTHONPATH" in os.environ else []  # it clears the rest
    proc = start_cli(lambda python: [
        "systemd-socket-activate", "-l", f"127.0.0.1:{port}", *keep_env,
        python, "-m", "fastserver.http", "--directory", str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while True:  # the listener appears when systemd-socket-activate is ready
            try:
                reply = http_get(port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"activated socket\n")
        # It runs on the passed socket: still the same port, served again.
        assert http_get(port).endswith(b"activated socket\n")
    finally:
        proc.kill()
        output = proc.communicate(timeout=10)[0].decode()
    assert f"Serving HTTP on 127.0.0.1 port {port}" in output


def test_http_cli_workers_and_graceful_stop(tmp_path):
    import signal

    (tmp_path / "hello.txt").write_text("hello from a worker\n")
    port = free_port()
    proc = start_cli(lambda python: [python, "-m", "fastserver.http", "--bind", "127.0.0.1",
                                     "--directory", str(tmp_path), "--workers", "2", str(port)])
    try:
        assert b"Serving HTTP" in proc.stdout.readline()
        for _ in range(20):
            assert http_get(port).endswith(b"hello from a worker\n")
        workers = children_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for pid in workers:  # no orphan left behind
            assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_http_cli_proxy_protocol_rejects_bare_connections(tmp_path):
    (tmp_path / "hello.txt").write_text("hello\n")
    port = free_port()
    proc = start_cli(lambda python: [python, "-m", "fastserver.http", "--bind", "127.0.0.1",
                                     "--directory", str(tmp_path), "--proxy-protocol", str(port)])
    try:
        assert b"Serving HTTP" in proc.stdout.readline()
        assert http_get(port) == b""  # no PROXY header: closed unserved
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n"
                         b"GET /hello.txt HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"hello\n")
    finally:
        proc.kill()
        output = proc.communicate(timeout=10)[0].decode()
    assert '"GET /hello.txt HTTP/1.0" 200' in output and "192.0.2.9" in output
