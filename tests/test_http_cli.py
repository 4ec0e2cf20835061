"""``python -m fastserver.http``: http.server's command line on fastserver.

Each test runs the command line in a subprocess (the installed package, or ``PYTHONPATH=src``:
the environment is passed through) and, where it can, ``python -m http.server`` of the same
Python next to it on the same directory: what a client sees must be the same from both.
"""

import http.client
import importlib.util
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

import fastserver

TIMEOUT = 10  # seconds, for every socket and every wait on a subprocess
START_TIMEOUT = 60  # a cold interpreter on a slow CI machine
SERVING = re.compile(r"^Serving (?P<scheme>HTTPS?) on (?P<host>\S+) port (?P<port>\d+) "
                     r"\((?i:(?P=scheme))://(?P<url_host>\S+):(?P=port)/\) \.\.\.$")
HELLO = b"hello from fastserver\n"

needs_protocol_option = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="http.server has no --protocol before Python 3.11")
STDLIB_HAS_TLS_OPTIONS = sys.version_info >= (3, 14)
TLS_OPTIONS = {"--tls-cert", "--tls-key", "--tls-password-file"}  # 3.14's, on every Python
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def environment(**extra):
    """os.environ for a subprocess that runs elsewhere: PYTHONPATH entries made absolute (the
    tests run with the installed package or with ``PYTHONPATH=src``)."""
    env = dict(os.environ, **extra)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(entry) if entry else entry
                                            for entry in env["PYTHONPATH"].split(os.pathsep))
    return env


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """A ``python -m <module>`` HTTP server in a subprocess; stop() kills it if still running."""

    def __init__(self, module, *args, cwd, unbuffered=False, extra_env=None):
        env = environment(**(extra_env or {}))
        if unbuffered:  # http.server does not flush its "Serving" line; fastserver.http does
            env["PYTHONUNBUFFERED"] = "1"
        self.stdout, self.stderr = [], []
        self._lines = queue.Queue()
        # The server takes Python's SIGINT handler even if this process ignores SIGINT (pytest
        # started in the background, or under nohup): a child inherits an ignored signal.
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=_default_sigint)
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, self._lines),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, None),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.line = self._serving_line()
        match = SERVING.match(self.line)
        assert match, f"unexpected first line: {self.line!r}"
        self.host, self.port = match["host"], int(match["port"])
        self.scheme = match["scheme"].lower()

    @staticmethod
    def _read(stream, lines, sink):
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if sink is not None:
                sink.put(line)
        if sink is not None:
            sink.put(None)

    def _serving_line(self):
        try:
            line = self._lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None:
            self.stop()
            pytest.fail(f"no 'Serving' line from {self.proc.args}:\n" + "\n".join(self.stderr))
        return line

    def url(self, path="/", host="127.0.0.1"):
        return f"{self.scheme}://{host}:{self.port}{path}"

    def interrupt(self):
        """Ctrl-C: SIGINT, then the exit status."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=TIMEOUT)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def start():
    """start(module, *args, cwd=...) -> Server; every server is killed at the end of the test."""
    servers = []

    def run(module, *args, cwd, unbuffered=False, extra_env=None):
        server = Server(module, *args, cwd=cwd, unbuffered=unbuffered, extra_env=extra_env)
        servers.append(server)
        return server

    try:
        yield run
    finally:
        for server in servers:
            server.stop()


def fastserver_http(start, directory, *args, core=None):
    """``python -m fastserver.http`` on ``directory``; ``core``: "python" runs it on the pure
    core (FASTSERVER_NO_EXTENSIONS=1), None or "cython" as this process was started."""
    extra_env = {"FASTSERVER_NO_EXTENSIONS": "1"} if core == "python" else None
    return start("fastserver.http", "--bind", "127.0.0.1", "--directory", str(directory),
                 *args, "0", cwd=directory, extra_env=extra_env)


def stdlib_http(start, directory, *args):
    return start("http.server", "--bind", "127.0.0.1", "--directory", str(directory),
                 *args, "0", cwd=directory, unbuffered=True)


@pytest.fixture
def site(tmp_path):
    (tmp_path / "hello.txt").write_bytes(HELLO)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.html").write_text("<p>inner</p>\n")
    (tmp_path / "with space & <amp>.txt").write_text("odd name\n")
    return tmp_path


@pytest.fixture
def pair(start, site):
    """fastserver.http and http.server on the same directory."""
    return fastserver_http(start, site), stdlib_http(start, site)


def fetch(url, method="GET", timeout=TIMEOUT):
    """(status, headers without Date, body), for error statuses too."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, headers, body = error.code, error.headers, error.read()
    return status, [(k, v) for k, v in headers.items() if k != "Date"], body


def test_serving_line_is_the_stdlibs(pair):
    fast, std = pair
    assert fast.host == "127.0.0.1"
    assert fast.line.replace(str(fast.port), "PORT") == std.line.replace(str(std.port), "PORT")


def test_get_a_file_with_urllib(pair):
    fast, std = pair
    status, headers, body = fetch(fast.url("/hello.txt"))
    assert (status, body) == (200, HELLO)
    assert ("Content-Length", str(len(HELLO))) in headers
    assert (status, headers, body) == fetch(std.url("/hello.txt"))


def test_get_a_file_with_curl(pair):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    fast, _ = pair
    done = subprocess.run([curl, "--silent", "--show-error", "--max-time", str(TIMEOUT),
                           "--include", fast.url("/hello.txt")],
                          capture_output=True, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert body == HELLO


def test_directory_listing_is_the_stdlibs(pair):
    fast, std = pair
    status, headers, body = fetch(fast.url("/"))
    assert status == 200
    assert b"Directory listing for /" in body
    for name in (b"hello.txt", b"sub/", b"with%20space%20%26%20%3Camp%3E.txt"):
        assert b'href="' + name + b'"' in body
    assert (status, headers, body) == fetch(std.url("/"))
    # a directory without its final slash is redirected, as by http.server
    assert fetch(fast.url("/sub"))[:2] == fetch(std.url("/sub"))[:2]


def test_404_is_the_stdlibs(pair):
    fast, std = pair
    status, headers, body = fetch(fast.url("/no/such/file.txt"))
    assert status == 404
    assert b"404" in body
    assert (status, headers, body) == fetch(std.url("/no/such/file.txt"))


def test_head(pair):
    fast, std = pair
    status, headers, body = fetch(fast.url("/hello.txt"), method="HEAD")
    assert (status, body) == (200, b"")
    assert ("Content-Length", str(len(HELLO))) in headers
    assert (status, headers, body) == fetch(std.url("/hello.txt"), method="HEAD")


def get_twice(port):
    """Two GETs on one http.client connection: (responses, whether the socket was kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        results = []
        first_sock = None
        for _ in range(2):
            conn.request("GET", "/hello.txt")
            response = conn.getresponse()
            results.append((response.status, response.version, response.will_close,
                            response.read()))
            first_sock = first_sock or conn.sock
        return results, conn.sock is not None and conn.sock is first_sock
    finally:
        conn.close()


@needs_protocol_option
def test_protocol_http11_keeps_the_connection_alive(start, site):
    server = fastserver_http(start, site, "--protocol", "HTTP/1.1")
    results, kept = get_twice(server.port)
    assert results == [(200, 11, False, HELLO)] * 2
    assert kept, "the second request did not reuse the first request's connection"


def test_default_protocol_closes_each_connection(pair):
    fast, _ = pair
    results, kept = get_twice(fast.port)
    assert results == [(200, 10, True, HELLO)] * 2
    assert not kept


def test_the_server_runs_on_fastserver(pair, site):
    fast, _ = pair
    check = (
        "import fastserver.http as cli\n"
        "import fastserver\n"
        "for cls in (cli.DualStackServer, cli.ThreadingHTTPServer):\n"
        "    assert issubclass(cls, fastserver.TCPServer), cls.__mro__\n"
        "    assert issubclass(cls, fastserver.ThreadingMixIn), cls.__mro__\n"
        "assert issubclass(cli.SimpleHTTPRequestHandler, fastserver.StreamRequestHandler)\n"
        "print(fastserver.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=START_TIMEOUT, env=environment(), cwd=site)
    assert done.returncode == 0, done.stderr
    assert os.path.samefile(done.stdout.strip(), fastserver.__file__)
    # And the running server process has fastserver's compiled core loaded, where it was built
    # and not switched off.
    no_extensions = os.environ.get("FASTSERVER_NO_EXTENSIONS", "") not in ("", "0")
    spec = importlib.util.find_spec("fastserver._core")
    maps = f"/proc/{fast.proc.pid}/maps"
    if spec is not None and not no_extensions and os.path.exists(maps):
        with open(maps) as f:
            assert os.path.realpath(spec.origin) in f.read()


def test_sigint_exits_0_like_the_stdlib(pair):
    expected = ["", "Keyboard interrupt received, exiting."]
    for server in pair:
        assert fetch(server.url("/hello.txt"))[0] == 200  # the loop is running
        assert server.interrupt() == 0, "\n".join(server.stderr)
        assert server.stdout[1:] == expected, server.stdout
        assert not any("Traceback" in line for line in server.stderr), server.stderr


def run_cli(module, *args):
    env = environment(COLUMNS="200", NO_COLOR="1", PYTHON_COLORS="0")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=START_TIMEOUT, env=env)


def options(help_text):
    return sorted(set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", help_text.partition("\n\n")[2])))


def normalise(text):
    """argparse's output with the program's name (``server.py``, ``http.py``, ...) as PROG."""
    prog = re.search(r"^usage: (.*?) \[-h\]", text, flags=re.M)
    assert prog, text
    return text.replace(prog[1] + " ", "PROG ").replace(prog[1] + ":", "PROG:")


FASTSERVER_OPTIONS = {"--workers", "--proxy-protocol", "--graceful-timeout", "--max-threads",
                      "--first-data-timeout", "--tls-handshake-timeout", "--log-level",
                      "--no-access-log", "--version", "--proxy-allow-from",
                      "--keep-alive-timeout"}
# The options of this Python's ``python -m http.server`` (from its --help): the tests of an option
# that not every Python has run where the stdlib offers it, whatever the version.
STDLIB_OPTIONS = set(options(run_cli("http.server", "--help").stdout))


def test_help_lists_the_stdlibs_options():
    fast, std = run_cli("fastserver.http", "--help"), run_cli("http.server", "--help")
    assert (fast.returncode, std.returncode) == (0, 0), fast.stderr
    assert set(options(fast.stdout)) == set(options(std.stdout)) | FASTSERVER_OPTIONS | TLS_OPTIONS
    for option in ("--bind", "--directory", "-h"):
        assert option in options(fast.stdout)
    # The stdlib's help comes first, word for word; fastserver's own group follows it. (Before
    # 3.14 the stdlib lacks the TLS options, which come in its help's place for them.)
    fast_help = fast.stdout
    if not STDLIB_HAS_TLS_OPTIONS:
        fast_help = re.sub(r"(?m)^  --tls-[^\n]*\n(?: {20,}\S[^\n]*\n)?", "", fast_help)
    stdlib_part = normalise(fast_help).partition("\nfastserver:\n")[0]
    stdlib_usage, _, stdlib_rest = normalise(std.stdout).partition("\n\n")
    assert stdlib_part.partition("\n\n")[2].rstrip() == stdlib_rest.rstrip()


def test_every_stdlib_option_has_a_meaning_in_fastserver():
    """Each long option of this Python's http.server is one fastserver.http implements (a newer
    Python's new option fails here until it is; fastserver.http refuses it meanwhile)."""
    from fastserver import http as cli

    long_options = {option for option in STDLIB_OPTIONS if option.startswith("--")}
    assert "--bind" in long_options  # the help was read
    dests = {option[2:].replace("-", "_") for option in long_options}
    assert sorted(dests - cli._STDLIB_OPTIONS_HANDLED) == []


@pytest.mark.skipif("--cgi" in STDLIB_OPTIONS, reason="this Python's http.server has --cgi")
def test_no_cgi_where_the_stdlib_has_none():
    fast, std = run_cli("fastserver.http", "--cgi", "0"), run_cli("http.server", "--cgi", "0")
    assert fast.returncode == std.returncode == 2
    assert "unrecognized arguments: --cgi" in std.stderr
    assert fast.stderr.splitlines()[-1].split(": ", 1)[1] == std.stderr.splitlines()[-1].split(
        ": ", 1)[1]


@pytest.mark.skipif("--header" not in STDLIB_OPTIONS,
                    reason="this Python's http.server has no --header")
@pytest.mark.parametrize("core", ["cython", "python"])
def test_header_option_is_the_stdlibs(start, site, core):
    extra = ("--header", "X-Fast", "one", "-H", "Cache-Control", "no-store")
    fast = fastserver_http(start, site, *extra, core=core)
    std = stdlib_http(start, site, *extra)
    for path in ("/hello.txt", "/", "/sub"):
        status, headers, body = fetch(fast.url(path))
        if path == "/hello.txt":
            assert (status, body) == (200, HELLO)
            assert ("X-Fast", "one") in headers and ("Cache-Control", "no-store") in headers
        assert (status, headers, body) == fetch(std.url(path)), path
    # and none without the option
    plain = fastserver_http(start, site, core=core)
    assert "X-Fast" not in dict(fetch(plain.url("/hello.txt"))[1])


@pytest.mark.skipif("--content-type" not in STDLIB_OPTIONS,
                    reason="this Python's http.server has no --content-type")
@pytest.mark.parametrize("core", ["cython", "python"])
def test_content_type_option_is_the_stdlibs(start, site, core):
    (site / "data.fastserver-unknown").write_bytes(b"\x00\x01")
    path = "/data.fastserver-unknown"
    fast = fastserver_http(start, site, "--content-type", "text/x-fast", core=core)
    std = stdlib_http(start, site, "--content-type", "text/x-fast")
    status, headers, body = fetch(fast.url(path))
    assert (status, body) == (200, b"\x00\x01")
    assert ("Content-type", "text/x-fast") in headers, headers
    assert (status, headers, body) == fetch(std.url(path))
    assert dict(fetch(fast.url("/hello.txt"))[1])["Content-type"] == "text/plain"  # known: kept
    # without the option: the handler's own default, as the stdlib's
    plain, std_plain = fastserver_http(start, site, core=core), stdlib_http(start, site)
    assert fetch(plain.url(path)) == fetch(std_plain.url(path))


def test_bad_port_fails_like_the_stdlib():
    fast, std = run_cli("fastserver.http", "not-a-port"), run_cli("http.server", "not-a-port")
    assert fast.returncode == std.returncode == 2
    assert "invalid int value: 'not-a-port'" in fast.stderr
    # The error line is the stdlib's; the usage line above it also lists fastserver's options.
    assert fast.stderr.splitlines()[-1].split(": ", 1)[1] == std.stderr.splitlines()[-1].split(
        ": ", 1)[1]


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback here")
def test_ipv6_bind_is_dual_stack(start, site):
    server = start("fastserver.http", "--bind", "::", "--directory", str(site), "0", cwd=site)
    assert server.line == (f"Serving HTTP on :: port {server.port} "
                           f"(http://[::]:{server.port}/) ...")
    assert fetch(server.url("/hello.txt", host="[::1]"))[::2] == (200, HELLO)
    assert fetch(server.url("/hello.txt", host="127.0.0.1"))[::2] == (200, HELLO)


@pytest.fixture
def open_site():
    """A directory anyone may read: run as root, CGIHTTPRequestHandler runs scripts as nobody."""
    path = tempfile.mkdtemp(prefix="fastserver-cgi-")
    try:
        os.chmod(path, 0o755)
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="CGI scripts here need fork()")
@pytest.mark.skipif("--cgi" not in STDLIB_OPTIONS, reason="this Python's http.server has no --cgi")
def test_cgi(start, open_site):
    (open_site / "hello.txt").write_bytes(HELLO)
    script = open_site / "cgi-bin" / "hello.sh"
    script.parent.mkdir(mode=0o755)
    script.write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
                      "echo \"cgi says $REQUEST_METHOD $QUERY_STRING\"\n")
    script.chmod(0o755)
    server = fastserver_http(start, open_site, "--cgi")
    status, _, body = fetch(server.url("/cgi-bin/hello.sh?x=1"))
    assert (status, body) == (200, b"cgi says GET x=1\n"), server.stderr
    assert fetch(server.url("/hello.txt"))[::2] == (200, HELLO)  # still serves files


def run_python(code, cwd):
    """Run ``python -c code`` in a fresh interpreter (this fastserver on its path); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=START_TIMEOUT, env=environment(), cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


IMPORT_CHANGES_NOTHING = """
import sys, threading, urllib.request, warnings
{first}
socketserver_before = sys.modules.get("socketserver")
with warnings.catch_warnings():
    warnings.simplefilter("error")
    import fastserver, fastserver.http as cli
assert sys.modules.get("socketserver") is socketserver_before, sys.modules.get("socketserver")
assert cli.server.socketserver is fastserver
for cls in (cli.HTTPServer, cli.ThreadingHTTPServer, cli.DualStackServer):
    assert fastserver.TCPServer in cls.__mro__, cls.__mro__
for cls in (cli.ThreadingHTTPServer, cli.DualStackServer):
    assert fastserver.ThreadingMixIn in cls.__mro__, cls.__mro__
assert fastserver.StreamRequestHandler in cli.SimpleHTTPRequestHandler.__mro__
import http.server, socketserver  # after fastserver.http: still the stdlib's, unchanged
assert socketserver is not fastserver and http.server.socketserver is socketserver
assert cli.server is not http.server

# and the re-exported ThreadingHTTPServer serves (on fastserver's loop)
class Quiet(cli.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

httpd = cli.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
loop = threading.Thread(target=httpd.serve_forever, daemon=True)
loop.start()
try:
    url = "http://127.0.0.1:%d/hello.txt" % httpd.server_address[1]
    with urllib.request.urlopen(url, timeout=10) as response:
        print(response.read().decode(), end="")
finally:
    httpd.shutdown()
    loop.join(10)
    httpd.server_close()
"""


@pytest.mark.parametrize("first", ["", "import socketserver", "import http.server"],
                         ids=["nothing-first", "socketserver-first", "http.server-first"])
def test_import_changes_nothing_and_its_classes_are_fastservers(site, first):
    # import fastserver.http leaves sys.modules["socketserver"] as it was (absent or the
    # stdlib's), warns of nothing, and still hands out http.server's classes on fastserver
    assert run_python(IMPORT_CHANGES_NOTHING.format(first=first), site) == HELLO.decode()


def test_main_installs_fastserver(site):
    # the command line is python -m http.server on fastserver: main() installs it, so that
    # http.server (and anything else importing socketserver) is built on fastserver from then on
    check = (
        "import sys, fastserver, fastserver.http as cli\n"
        "assert 'socketserver' not in sys.modules\n"
        "seen = {}\n"
        "def serve(**options):\n"
        "    import http.server\n"
        "    seen.update(socketserver=sys.modules.get('socketserver'),\n"
        "                http_server=http.server.socketserver, bind=options['bind'])\n"
        "    return 0\n"
        "cli.serve = serve  # main() looks serve() up at its call\n"
        "assert cli.main(['--bind', '127.0.0.1', '0']) == 0\n"
        "assert seen == {'socketserver': fastserver, 'http_server': fastserver,\n"
        "                'bind': '127.0.0.1'}, seen\n"
    )
    run_python(check, site)


# --- HTTPS: --tls-cert, --tls-key, --tls-password-file (Python 3.14's options) ----------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(certificate, key, locked key, password file) for localhost and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key, locked, password = (directory / name for name in
                                   ("cert.pem", "key.pem", "locked.pem", "password.txt"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=START_TIMEOUT)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:open sesame",
                    "-out", str(locked)], check=True, capture_output=True, timeout=START_TIMEOUT)
    password.write_text("open sesame\n")
    return str(cert), str(key), str(locked), str(password)


def curl_https(server, certificate, path="/hello.txt", *extra):
    done = subprocess.run(["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT),
                           "--cacert", certificate[0], "--include", *extra, server.url(path)],
                          capture_output=True, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stderr
    return done.stdout.partition(b"\r\n\r\n")


@needs_curl
@pytest.mark.parametrize("tls_version", ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"])
def test_tls_cert_serves_https(start, site, certificate, tls_version):
    server = fastserver_http(start, site, "--tls-cert", certificate[0],
                             "--tls-key", certificate[1])
    assert server.line == (f"Serving HTTPS on 127.0.0.1 port {server.port} "
                           f"(https://127.0.0.1:{server.port}/) ...")
    head, _, body = curl_https(server, certificate, "/hello.txt", *tls_version.split())
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and body == HELLO
    if STDLIB_HAS_TLS_OPTIONS:  # the same reply from http.server's own
        std = stdlib_http(start, site, "--tls-cert", certificate[0], "--tls-key", certificate[1])
        assert std.line.replace(str(std.port), "PORT") == server.line.replace(
            str(server.port), "PORT")
        assert curl_https(std, certificate)[2] == body


@needs_curl
def test_tls_password_file_unlocks_the_key(start, site, certificate):
    cert, _, locked, password = certificate
    server = fastserver_http(start, site, "--tls-cert", cert, "--tls-key", locked,
                             "--tls-password-file", password)
    head, _, body = curl_https(server, certificate)
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and body == HELLO


@needs_curl
def test_tls_with_workers(start, site, certificate):
    server = fastserver_http(start, site, "--tls-cert", certificate[0], "--tls-key",
                             certificate[1], "--workers", "2")
    for _ in range(4):
        assert curl_https(server, certificate)[2] == HELLO


def test_a_stalled_client_does_not_block_https(start, site, certificate):
    server = fastserver_http(start, site, "--tls-cert", certificate[0],
                             "--tls-key", certificate[1])
    context = ssl.create_default_context(cafile=certificate[0])
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT):  # silent
        with urllib.request.urlopen(server.url("/hello.txt"), timeout=TIMEOUT,
                                    context=context) as response:
            assert response.read() == HELLO


@pytest.mark.parametrize("args, message", [
    (["--tls-key", "key.pem"], "--tls-key requires --tls-cert to be set"),
    (["--tls-password-file", "pw.txt"], "--tls-password-file requires --tls-cert to be set"),
    (["--tls-cert", "cert.pem", "--tls-password-file", "/nonexistent/pw.txt"],
     "Failed to read TLS password file: "),
])
def test_tls_option_errors_are_314s(args, message):
    def error(done):
        return done.returncode, done.stderr.splitlines()[-1].partition(" error: ")[2]

    fast = run_cli("fastserver.http", *args, "0")
    assert error(fast)[0] == 2 and error(fast)[1].startswith(message)
    if STDLIB_HAS_TLS_OPTIONS:
        assert error(run_cli("http.server", *args, "0")) == error(fast)
