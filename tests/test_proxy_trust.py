"""Who may send a PROXY header (``proxy_allow_from``), and what a refused connection costs: one
log line on the ``fastserver`` logger naming the peer and the reason, the connection closed
unserved, no handle_error() and no traceback. On both cores (the PROXY protocol is fastserver's
own, so there is no stdlib reference to run)."""

import ipaddress
import logging
import re
import socket
import subprocess
import sys
import time

import pytest
from helpers import TIMEOUT, child_env, free_port, serving, wait_until

from fastserver import _pipeline

HEADER = b"PROXY TCP4 192.0.2.9 192.0.2.1 41000 80\r\n"


class Logged(logging.Handler):
    """The fastserver logger's records, kept while the test runs."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []  # (emit() runs under the Handler's own lock)

    def emit(self, record):
        self.lines.append(self.format(record))

    def __enter__(self):
        logger = logging.getLogger("fastserver")
        self.level_before = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        logger = logging.getLogger("fastserver")
        logger.removeHandler(self)
        logger.setLevel(self.level_before)


def proxied_server(module, base="ThreadingTCPServer", **attrs):
    errors = []

    class Echo(module.StreamRequestHandler):
        def handle(self):
            self.wfile.write(f"{self.client_address[0]} {self.rfile.readline().decode()}"
                             .encode())

    def handle_error(self, request, client_address):
        errors.append(sys.exc_info()[0])

    cls = type("Server", (getattr(module, base),),
               {"proxy_protocol": True, "daemon_threads": True, "proxy_timeout": 2.0,
                "handle_error": handle_error, **attrs})
    server = cls(("127.0.0.1", 0), Echo)
    server.errors = errors
    return server


def exchange(server, data, source="127.0.0.1"):
    """Connect from ``source`` (a loopback address), send ``data``, return the whole reply."""
    with socket.socket() as client:
        client.settimeout(TIMEOUT)
        client.bind((source, 0))
        client.connect(server.server_address)
        client.sendall(data)
        reply = b""
        while chunk := client.recv(1000):
            reply += chunk
        return reply


@pytest.mark.parametrize("base", ["ThreadingTCPServer", "TCPServer", "ForkingTCPServer"])
def test_a_trusted_proxy_names_the_client(fast, base):
    server = proxied_server(fast, base)
    with serving(server):
        assert exchange(server, HEADER + b"hello\n") == b"192.0.2.9 hello\n"
    assert server.errors == []


@pytest.mark.parametrize("base", ["ThreadingTCPServer", "TCPServer"])
@pytest.mark.parametrize("data, reason", [
    (b"", "connection closed before the PROXY header"),  # a TCP health check
    (b"GET / HTTP/1.0\r\n\r\n", "not a PROXY protocol header"),  # plain HTTP
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CR or LF"),  # a malformed line
])
def test_a_failed_header_is_one_log_line_and_the_connection_is_closed(fast, base, data, reason):
    server = proxied_server(fast, base)
    with Logged() as logged, serving(server):
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as client:
            if data:
                client.sendall(data)
            else:
                client.shutdown(socket.SHUT_WR)
            assert client.recv(100) == b""  # closed, nothing served
        assert wait_until(lambda: logged.lines)
        time.sleep(0.05)  # (a second line would come from the same thread at once)
    [line] = logged.lines
    assert line.startswith("127.0.0.1 - PROXY header refused: ")
    assert reason in line
    assert server.errors == []  # no handle_error(), no traceback


def test_a_header_from_an_untrusted_peer_is_refused_the_same_way(fast):
    server = proxied_server(fast)  # the default: loopback's 127.0.0.1 and ::1 only
    with Logged() as logged, serving(server):
        assert exchange(server, HEADER + b"hello\n", source="127.0.0.9") == b""
        assert wait_until(lambda: logged.lines)
        assert exchange(server, HEADER + b"again\n") == b"192.0.2.9 again\n"
    [line] = logged.lines
    assert line == "127.0.0.9 - PROXY header refused: the peer is not in proxy_allow_from"
    assert server.errors == []


@pytest.mark.parametrize("allow_from", [("127.0.0.0/8",), "127.0.0.9, 10.0.0.0/8", "*",
                                        ["127.0.0.9"], frozenset({"::1", "127.0.0.9/32"})])
def test_proxy_allow_from_takes_networks_lists_and_any(fast, allow_from):
    server = proxied_server(fast, proxy_allow_from=allow_from)
    with serving(server):
        assert exchange(server, HEADER + b"hi\n", source="127.0.0.9") == b"192.0.2.9 hi\n"


@pytest.mark.parametrize("allow_from, error", [
    ("127.0.0.300", ValueError), (["localhost"], ValueError), ("10.0.0.0/33", ValueError),
    (5, TypeError), ([b"127.0.0.1"], TypeError), (None, TypeError),
])
def test_a_bad_proxy_allow_from_raises_when_a_loop_starts(fast, allow_from, error):
    server = proxied_server(fast, proxy_allow_from=allow_from)
    try:
        with pytest.raises(error, match="proxy_allow_from"):
            server.handle_request()
        server.proxy_allow_from = "127.0.0.1"
        with serving(server):
            assert exchange(server, HEADER + b"ok\n") == b"192.0.2.9 ok\n"
    finally:
        server.server_close()


def test_which_peers_are_allowed():
    allowed = _pipeline.allowed
    assert allowed(("127.0.0.1", "::1"), ("127.0.0.1", 5))
    assert not allowed(("127.0.0.1", "::1"), ("127.0.0.2", 5))
    assert allowed(("127.0.0.1",), ("::ffff:127.0.0.1", 5, 0, 0))  # IPv4 on a dual-stack socket
    assert allowed(("::1",), ("::1", 5, 0, 0))
    assert allowed(("fe80::/10",), ("fe80::1%lo", 5, 0, 1))
    assert not allowed(("::1",), ("not an address", 5))
    assert allowed(("127.0.0.1",), "")  # a Unix socket's peer: its file's permissions decide
    assert allowed("*", ("203.0.113.5", 1))
    assert _pipeline.trusted_networks("10.1.2.3/8") == (ipaddress.ip_network("10.0.0.0/8"),)


def test_the_command_line_says_one_line_for_a_health_check_and_serves_the_next(tmp_path):
    (tmp_path / "hello.txt").write_text("hello\n")
    port = free_port()
    stderr_path = tmp_path / "stderr.txt"
    stderr_file = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastserver.http", "--bind", "127.0.0.1", "--directory",
         str(tmp_path), "--proxy-protocol", str(port)],
        stdout=subprocess.DEVNULL, stderr=stderr_file, env=child_env())
    try:
        deadline = time.monotonic() + TIMEOUT * 2
        while True:  # a health check: connect and close, as HAProxy's check does
            try:
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(HEADER + b"GET /hello.txt HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := client.recv(1000):
                reply += chunk
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"hello\n")
        # the health check's thread may log after the request is served
        assert wait_until(lambda: b"PROXY header refused" in stderr_path.read_bytes())
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT * 2)
        stderr_file.close()
    stderr = stderr_path.read_text()
    # (the fastserver logger's stderr line: "fastserver[pid] - - [date] " and the message)
    lines = [re.sub(r"^fastserver\[\d+\] - - \[[^\]]*\] ", "", line)
             for line in stderr.splitlines() if "PROXY" in line or "Traceback" in line]
    assert lines == ["127.0.0.1 - PROXY header refused: "
                     "connection closed before the PROXY header"]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv, message", [
    (["--proxy-allow-from", "10.0.0.0/33"], "--proxy-allow-from: proxy_allow_from: '10.0.0.0/33'"),
    (["--keep-alive-timeout", "0"], "--keep-alive-timeout"),
])
def test_the_command_lines_settings_refuse_bad_values_as_usage_errors(argv, message):
    done = subprocess.run([sys.executable, "-m", "fastserver.http", *argv, "0"],
                          capture_output=True, text=True, env=child_env(), timeout=TIMEOUT * 4)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_the_command_line_trusts_only_what_proxy_allow_from_names(tmp_path):
    port = free_port()
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastserver.http", "--bind", "127.0.0.1", "--directory",
             str(tmp_path), "--proxy-protocol", "--proxy-allow-from", "192.0.2.0/24",
             "--keep-alive-timeout", "30", str(port)],
            stdout=subprocess.DEVNULL, stderr=stderr_file, env=child_env())
        try:
            deadline = time.monotonic() + TIMEOUT * 2
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                    break
                except OSError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.05)
            with client:
                client.sendall(HEADER + b"GET / HTTP/1.0\r\n\r\n")
                assert client.recv(100) == b""  # 127.0.0.1 is not a trusted proxy here
            assert wait_until(lambda: b"not in proxy_allow_from" in stderr_path.read_bytes())
        finally:
            proc.terminate()
            proc.wait(timeout=TIMEOUT * 2)
