"""TLS (``ssl_context``): real handshakes with a certificate made here by ``openssl req``.

The clients are Python's ``ssl``, curl and ``openssl s_client``. What fastserver promises beyond
the stdlib (the handshake never in the loop, the timeout, PROXY before TLS) runs on both of its
cores; what a server whose listener is wrapped by hand does runs on the stdlib too, where the
same test shows the stdlib blocking.
"""

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from helpers import TIMEOUT, haproxy, is_stdlib, make_server, serving, wait_until

import fastserver
import fastserver.http

HANDSHAKE_TIMEOUT = 1.0  # tls_handshake_timeout in these tests
BASES = ["TCPServer", "ThreadingTCPServer"]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="no curl command")


def make_certificate(directory, name):
    """(certificate, key) files for ``name`` (a self-signed certificate, also for 127.0.0.1)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("certs")
    return {"server": make_certificate(directory, "localhost"),
            "client": make_certificate(directory, "client")}


@pytest.fixture
def server_context(certs):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certs["server"])
    context.set_alpn_protocols(["http/1.1"])
    return context


def client_context(certs, version=None, alpn=("http/1.1",), client_cert=False):
    context = ssl.create_default_context(cafile=certs["server"][0])
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if client_cert:
        context.load_cert_chain(*certs["client"])
    return context


class Recorder:
    """What a server saw: handler runs, handle_error() calls, shutdown_request() calls."""

    def __init__(self):
        self.lock = threading.Lock()
        self.handled = []
        self.errors = []
        self.closed = []

    def attrs(self, module):
        recorder = self

        class Handler(module.StreamRequestHandler):
            timeout = TIMEOUT

            def handle(self):
                with recorder.lock:
                    recorder.handled.append((type(self.request), self.client_address))
                lines = [self.rfile.readline(), self.rfile.readline()]
                self.wfile.write(type(self.request).__name__.encode() + b" " + b"".join(lines))

        def handle_error(server, request, client_address):
            with recorder.lock:
                recorder.errors.append(sys.exc_info()[1])

        def shutdown_request(server, request):
            with recorder.lock:
                recorder.closed.append(type(request))
            type(server).__mro__[1].shutdown_request(server, request)

        return Handler, {"handle_error": handle_error, "shutdown_request": shutdown_request}


def tls_server(module, recorder, context, base="TCPServer", **attrs):
    handler, hooks = recorder.attrs(module)
    attrs = {"tls_handshake_timeout": HANDSHAKE_TIMEOUT, "daemon_threads": True,
             **hooks, **attrs}
    server = make_server(module, "tcp", handler, base=base, **attrs)
    if context is not None:
        server.ssl_context = context
    return server


def read_all(sock):
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def tls_exchange(address, context, data=b"one\ntwo\n", source=None):
    """(reply, TLS version, ALPN protocol) of one connection that sends ``data``."""
    with socket.create_connection(address, timeout=TIMEOUT, source_address=source) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            version, alpn = tls.version(), tls.selected_alpn_protocol()
            tls.sendall(data)
            return read_all(tls), version, alpn


# A forking server's client runs in a process of its own: fork() copies OpenSSL's locks as they
# are, and a request child forked while a client thread of the same process holds one (in the
# middle of its handshake) waits for it forever in its own wrap_socket().
CLIENT_SCRIPT = r"""
import json, socket, ssl, sys
host, port, cafile, version, timeout = sys.argv[1:]
context = ssl.create_default_context(cafile=cafile)
context.minimum_version = context.maximum_version = ssl.TLSVersion[version]
context.set_alpn_protocols(["http/1.1"])
with socket.create_connection((host, int(port)), timeout=float(timeout)) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        version, alpn = tls.version(), tls.selected_alpn_protocol()
        tls.sendall(b"one\ntwo\n")
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
        print(json.dumps([b"".join(chunks).decode("latin-1"), version, alpn]))
"""


def tls_exchange_elsewhere(address, certs, version):
    """tls_exchange() of b"one\ntwo\n" from another process (for a forking server)."""
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, address[0], str(address[1]), certs["server"][0],
         version.name, str(TIMEOUT)],
        capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert result.returncode == 0, result.stderr
    reply, used, alpn = json.loads(result.stdout)
    return reply.encode("latin-1"), used, alpn


def client_hello():
    """The bytes of a TLS ClientHello, as a client's first flight."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def still_open(sock):
    """True while the peer has neither closed nor reset ``sock`` (nothing is read from it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def open_fds():
    return len(os.listdir("/proc/self/fd"))


# --- replies --------------------------------------------------------------------------------

@pytest.mark.parametrize("base", [*BASES, "ForkingTCPServer"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_python_clients_are_served_over_tls(fast, certs, server_context, base, version):
    recorder = Recorder()
    server = tls_server(fast, recorder, server_context, base)
    with serving(server):
        for _ in range(3):
            if base == "ForkingTCPServer":
                reply, used, alpn = tls_exchange_elsewhere(server.server_address, certs, version)
            else:
                reply, used, alpn = tls_exchange(server.server_address,
                                                 client_context(certs, version))
            assert reply == b"SSLSocket one\ntwo\n"
            assert used == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                            ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            assert alpn == "http/1.1"
    assert recorder.errors == []
    if base != "ForkingTCPServer":  # (the children's handlers ran elsewhere)
        assert [kind for kind, _ in recorder.handled] == [ssl.SSLSocket] * 3
        assert recorder.closed == [ssl.SSLSocket] * 3


def test_the_constructor_takes_ssl_context(fast, certs, server_context):
    handler, _ = Recorder().attrs(fast)
    with fast.ThreadingTCPServer(("127.0.0.1", 0), handler, ssl_context=server_context) as server:
        assert server.ssl_context is server_context
        with serving(server, close=False):
            assert tls_exchange(server.server_address, client_context(certs))[0] == \
                b"SSLSocket one\ntwo\n"


@pytest.mark.parametrize("base", BASES)
def test_verify_request_sees_the_plain_connection_and_handle_request_serves_tls(
        fast, certs, server_context, base):
    recorder, seen = Recorder(), []

    def verify_request(server, request, client_address):
        seen.append(type(request))
        return True

    server = tls_server(fast, recorder, server_context, base, verify_request=verify_request)
    with server:
        replies = []
        client = threading.Thread(target=lambda: replies.append(
            tls_exchange(server.server_address, client_context(certs))[0]))
        client.start()
        server.handle_request()  # one request, its handshake waited for here
        client.join(TIMEOUT)
    assert replies == [b"SSLSocket one\ntwo\n"]
    assert seen == [socket.socket]  # at accept, before the handshake
    assert recorder.errors == []


@pytest.mark.parametrize("buffers", [(-1, 0), (8192, 8192), (-1, 100)])
def test_rfile_and_wfile_work_over_tls(fast, certs, server_context, buffers):
    class Echo(fast.StreamRequestHandler):
        rbufsize, wbufsize = buffers

        def handle(self):
            size = int(self.rfile.readline())
            data = self.rfile.read(size)
            self.wfile.write(data[::-1])
            self.wfile.write(b"|" + self.rfile.readline())

    payload = bytes(range(256)) * 400  # more than one TLS record
    with fast.TCPServer(("127.0.0.1", 0), Echo, ssl_context=server_context) as server:
        with serving(server, close=False):
            reply, _, _ = tls_exchange(server.server_address, client_context(certs),
                                       b"%d\n" % len(payload) + payload + b"last\n")
    assert reply == payload[::-1] + b"|last\n"


# --- a handshake never blocks the loop -----------------------------------------------------

@pytest.mark.parametrize("base", BASES)
def test_stalled_handshakes_block_nobody_and_are_closed_at_the_timeout(
        fast, certs, server_context, base):
    recorder = Recorder()
    hello = client_hello()
    fds, threads = open_fds(), threading.active_count()
    server = tls_server(fast, recorder, server_context, base)
    with serving(server):
        started = time.monotonic()
        silent = socket.create_connection(server.server_address, timeout=TIMEOUT)
        half = socket.create_connection(server.server_address, timeout=TIMEOUT)
        half.sendall(hello[:len(hello) // 2])
        with silent, half:
            time.sleep(0.05)  # the loop has them: a handshake waits on each
            for _ in range(3):
                reply, _, _ = tls_exchange(server.server_address, client_context(certs))
                assert reply == b"SSLSocket one\ntwo\n"
            # Answered while both stallers still hang (each would have held the loop a second).
            assert still_open(silent) and still_open(half)
            assert wait_until(lambda: not still_open(silent) and not still_open(half),
                              timeout=HANDSHAKE_TIMEOUT + TIMEOUT)
            assert time.monotonic() - started >= HANDSHAKE_TIMEOUT - 0.05
    assert len(recorder.handled) == 3 and recorder.errors == []
    assert len(recorder.closed) == 5  # the stallers too, by shutdown_request()
    assert wait_until(lambda: open_fds() == fds and threading.active_count() == threads)


@pytest.mark.parametrize("base", BASES)
def test_a_client_that_drips_its_handshake_is_closed_at_the_timeout(
        fast, certs, server_context, base):
    recorder = Recorder()
    hello = client_hello()
    server = tls_server(fast, recorder, server_context, base)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as drip:
            started = time.monotonic()
            for byte in hello[:40]:  # one byte every 50 ms: each wakes the handshake
                if not still_open(drip):
                    break
                drip.setblocking(True)
                drip.sendall(bytes([byte]))
                time.sleep(0.05)
                assert tls_exchange(server.server_address, client_context(certs))[0] == \
                    b"SSLSocket one\ntwo\n"
            assert wait_until(lambda: not still_open(drip), timeout=TIMEOUT)
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 0.5
    assert recorder.errors == []


@pytest.mark.parametrize("kind", ["TCPServer", "ThreadingTCPServer", "http.server-3.14"])
def test_a_listener_wrapped_by_hand_handshakes_off_the_loop(ss, certs, server_context, kind):
    """As Python 3.14's ThreadingHTTPSServer does, the listener is wrapped in server_activate():
    in the stdlib one silent client then blocks every other (the handshake runs in accept());
    on fastserver the connections are accepted plain and handshake off the loop."""
    if kind == "http.server-3.14":
        module = fastserver.http.server if not is_stdlib(ss) else __import__("http.server").server
        if getattr(module, "ThreadingHTTPSServer", None) is None:
            pytest.skip("http.server has no ThreadingHTTPSServer before Python 3.14")

        class Hello(module.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"hi\n")

        server_class = type("Server", (module.ThreadingHTTPSServer,),
                            {"tls_handshake_timeout": HANDSHAKE_TIMEOUT})
        server = server_class(("127.0.0.1", 0), Hello, certfile=certs["server"][0],
                              keyfile=certs["server"][1])
        request, expected = b"GET / HTTP/1.0\r\n\r\n", b"hi\n"
    else:
        recorder = Recorder()
        server = tls_server(ss, recorder, None, kind)
        server.socket = server_context.wrap_socket(server.socket, server_side=True)
        request, expected = b"one\ntwo\n", b"SSLSocket one\ntwo\n"
    with serving(server):
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as silent:
            time.sleep(0.05)
            try:
                reply = _short_exchange(server.server_address, client_context(certs), request)
            except TimeoutError:
                reply = None
            finally:
                silent.close()  # (frees the stdlib's loop, so that it can stop)
    if is_stdlib(ss):
        assert reply is None  # blocked behind the silent client's handshake
    else:
        assert reply is not None and reply.endswith(expected)


def _short_exchange(address, context, data):
    with socket.create_connection(address, timeout=0.5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(data)
            return read_all(tls)


# --- failed handshakes ------------------------------------------------------------------------

def _garbage(address, certs):
    with socket.create_connection(address, timeout=TIMEOUT) as raw:
        raw.sendall(b"\x00\x01 this is not a ClientHello at all\r\n" * 4)
        return read_all_or_reset(raw)


def _plain_http(address, certs):
    with socket.create_connection(address, timeout=TIMEOUT) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        return read_all_or_reset(raw)


def _no_client_certificate(address, certs):
    try:
        return tls_exchange(address, client_context(certs))[0]
    except (ssl.SSLError, ConnectionError):
        return b""


def read_all_or_reset(sock):
    try:
        return read_all(sock)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("client", [_garbage, _plain_http, _no_client_certificate])
def test_a_failed_handshake_is_closed_without_a_handler_or_handle_error(
        fast, certs, server_context, base, client):
    recorder = Recorder()
    require_cert = client is _no_client_certificate
    if require_cert:
        server_context.verify_mode = ssl.CERT_REQUIRED
        server_context.load_verify_locations(certs["client"][0])
    server = tls_server(fast, recorder, server_context, base)
    with serving(server):
        for _ in range(2):
            reply = client(server.server_address, certs)
            assert b"SSLSocket" not in reply  # no handler answered (TLS alerts may come back)
            good = client_context(certs, client_cert=require_cert)
            assert tls_exchange(server.server_address, good)[0] == b"SSLSocket one\ntwo\n"
        assert wait_until(lambda: len(recorder.closed) == 4)
    assert len(recorder.handled) == 2
    assert recorder.errors == []


# --- PROXY protocol, then TLS -------------------------------------------------------------------

def proxy_v2(source, destination):
    """A PROXY v2 header (TCP over IPv4) naming ``source`` -> ``destination``."""
    body = (socket.inet_aton(source[0]) + socket.inet_aton(destination[0])
            + source[1].to_bytes(2, "big") + destination[1].to_bytes(2, "big"))
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big")
            + body)


@pytest.mark.parametrize("base", BASES)
def test_the_proxy_header_comes_before_the_handshake(fast, certs, server_context, base):
    recorder = Recorder()
    server = tls_server(fast, recorder, server_context, base, proxy_protocol=True)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as raw:
            raw.sendall(proxy_v2(("203.0.113.9", 4567), server.server_address))
            time.sleep(0.02)  # the header apart from the ClientHello
            with client_context(certs).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"a\nb\n")
                assert read_all(tls) == b"SSLSocket a\nb\n"
    assert recorder.handled == [(ssl.SSLSocket, ("203.0.113.9", 4567))]
    assert recorder.errors == []


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed "
                    "(apt-get install haproxy; .ci/run installs it)")
def test_behind_haproxy_passing_tls_through_the_handler_sees_the_client(
        fast, tmp_path, certs, server_context):

    recorder = Recorder()
    server = tls_server(fast, recorder, server_context, "ThreadingTCPServer",
                        proxy_protocol=True)
    with serving(server):
        proc, port = haproxy(tmp_path, server.server_address[1], "send-proxy-v2")
        try:
            recorder.handled.clear()  # haproxy's readiness probe (a bare connection)
            for _ in range(3):
                with socket.socket() as raw:
                    raw.settimeout(TIMEOUT)
                    raw.bind(("127.0.0.7", 0))  # an address of its own on loopback
                    raw.connect(("127.0.0.1", port))
                    with client_context(certs).wrap_socket(raw, server_hostname="localhost") \
                            as tls:
                        tls.sendall(b"via\nhaproxy\n")
                        assert read_all(tls) == b"SSLSocket via\nhaproxy\n"
                        assert recorder.handled[-1] == (ssl.SSLSocket, tls.getsockname())
        finally:
            proc.kill()
            proc.wait()
    assert len(recorder.handled) == 3


# --- settings ---------------------------------------------------------------------------------

def test_bad_settings_fail_clearly(fast, server_context):
    handler = fast.StreamRequestHandler
    with pytest.raises(TypeError, match="ssl_context"):
        fast.TCPServer(("127.0.0.1", 0), handler, ssl_context="cert.pem")
    client_side = ssl.create_default_context()
    with pytest.raises(ValueError, match="server-side"):
        fast.TCPServer(("127.0.0.1", 0), handler, ssl_context=client_side)
    for attrs, error in [({"tls_handshake_timeout": 0}, ValueError),
                         ({"tls_handshake_timeout": "10"}, TypeError),
                         ({"ssl_context": object()}, TypeError)]:
        server = make_server(fast, "tcp", handler, **attrs)
        if "ssl_context" not in attrs:
            server.ssl_context = server_context
        with server, pytest.raises(error):
            server.handle_request()
    with make_server(fast, "udp", fast.DatagramRequestHandler) as udp:
        udp.ssl_context = server_context
        with pytest.raises(ValueError, match="DTLS"):
            udp.serve_forever()


# --- fastserver.http's HTTPS servers, curl and openssl s_client --------------------------------

@pytest.fixture
def site(tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"hello over https\n")
    return tmp_path


def https_server(module_server_class, site, certs, **kwargs):
    handler = type("Handler", (fastserver.http.SimpleHTTPRequestHandler,), {
        "log_message": lambda self, *args: None,
        "__init__": lambda self, *a, **k: fastserver.http.SimpleHTTPRequestHandler.__init__(
            self, *a, directory=str(site), **k)})
    return module_server_class(("127.0.0.1", 0), handler, certfile=certs["server"][0],
                               keyfile=certs["server"][1], **kwargs)


@needs_curl
@pytest.mark.parametrize("name", ["HTTPSServer", "ThreadingHTTPSServer"])
@pytest.mark.parametrize("tls", ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"])
def test_curl_gets_a_file_from_fastservers_https_servers(core, site, certs, name, tls):
    server = https_server(getattr(fastserver.http, name), site, certs)
    with serving(server):
        url = f"https://127.0.0.1:{server.server_address[1]}/hello.txt"
        result = subprocess.run(["curl", "-sS", "--cacert", certs["server"][0], *tls.split(),
                                 "-w", "%{http_code} %{http_version}", url],
                                capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello over https\n200 1"  # (curl says 1 for HTTP/1.0)


@needs_openssl
def test_openssl_s_client_gets_a_file_and_alpn_http11(core, site, certs):
    server = https_server(fastserver.http.ThreadingHTTPSServer, site, certs)
    with serving(server):
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.server_address[1]}",
             "-CAfile", certs["server"][0], "-alpn", "http/1.1", "-ign_eof"],
            input=b"GET /hello.txt HTTP/1.0\r\n\r\n", capture_output=True, timeout=30)
    assert b"ALPN protocol: http/1.1" in result.stdout
    assert b"Verify return code: 0 (ok)" in result.stdout
    assert b"HTTP/1.0 200 OK\r\n" in result.stdout
    assert result.stdout.split(b"\r\n\r\n", 1)[1].startswith(b"hello over https\n")


def test_https_servers_have_314s_signature(core, site, certs, tmp_path):
    # certfile is keyword-only and required; a password-protected key; alpn_protocols.
    with pytest.raises(TypeError):
        fastserver.http.HTTPSServer(("127.0.0.1", 0), fastserver.http.BaseHTTPRequestHandler,
                                    True, certs["server"][0])
    key = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", certs["server"][1], "-aes256", "-passout",
                    "pass:s3cret", "-out", str(key)], check=True, capture_output=True)
    server = https_server(fastserver.http.ThreadingHTTPSServer, site,
                          {"server": (certs["server"][0], str(key))}, password="s3cret",
                          alpn_protocols=["h2", "http/1.1"])
    assert isinstance(server, fastserver.http.HTTPServer)
    assert server.daemon_threads is True
    assert type(server.socket) is socket.socket  # the listener stays plain
    with serving(server):
        reply, _, alpn = tls_exchange(server.server_address,
                                      client_context(certs, alpn=("h2",)),
                                      b"GET /hello.txt HTTP/1.0\r\n\r\n")
    assert alpn == "h2"
    assert reply.startswith(b"HTTP/1.0 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nhello over https\n")
