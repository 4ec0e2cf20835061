"""The typed API: ``mypy --strict`` passes on README's examples and on a subclass of every public
server and handler class (the stubs beside the public modules), it catches a wrong type, and
mypy's stubtest holds the stubs to the modules they describe."""

import os
import subprocess
import sys
import textwrap

import pytest

import fastserver

pytest.importorskip("mypy", reason="mypy is in the test extra: pip install '.[test]'")


EXAMPLES = '''\
import socket
import ssl
from typing import Any

import fastserver
import fastserver.http


# README: switching, idle floods, deployment, TLS
class Capped(fastserver.ThreadingTCPServer):
    max_threads = 64
    first_data_timeout = 10.0


class Workers(fastserver.ThreadingTCPServer):
    workers = 4
    graceful_timeout = 30.0


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


class Secure(fastserver.ThreadingTCPServer):
    ssl_context = context
    tls_handshake_timeout = 10.0


class Upper(fastserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class Echo(fastserver.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read())


with Capped(("127.0.0.1", 0), Upper) as server:
    host, port = server.socket.getsockname()[:2]
    print(host, port, server.server_address, fastserver.IMPLEMENTATION, fastserver.VERSION)

tls = fastserver.TCPServer(("127.0.0.1", 0), Upper, ssl_context=context)
tls.server_close()
listener = socket.create_server(("127.0.0.1", 0))
adopted = fastserver.ThreadingTCPServer.from_socket(listener, Upper)
adopted.server_close()
fastserver.install()


class Page(fastserver.http.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()


httpd = fastserver.http.ThreadingHTTPServer(("127.0.0.1", 0), Page)
httpd.server_close()
status: int = fastserver.http.main(["--version"]) if False else 0
'''

SOCKET_HOOKS = '''
    def server_bind(self) -> None:
        super().server_bind()

    def get_request(self) -> tuple[Any, Any]:
        return super().get_request()

    def fileno(self) -> int:
        return super().fileno()
'''

HOOKS = '''
    def server_activate(self) -> None:
        super().server_activate()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return super().verify_request(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)

    def close_request(self, request: Any) -> None:
        super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        super().handle_error(request, client_address)

    def handle_timeout(self) -> None:
        super().handle_timeout()

    def service_actions(self) -> None:
        super().service_actions()

    def server_close(self) -> None:
        super().server_close()
'''

HANDLER_HOOKS = '''
    def setup(self) -> None:
        super().setup()

    def handle(self) -> None:
        super().handle()

    def finish(self) -> None:
        super().finish()
'''


def subclasses():
    """A subclass of every public server class (overriding every hook) and handler class."""
    servers = [name for name in fastserver.__all__ if name.endswith("Server")]
    servers += [f"http.{name}" for name in ("HTTPServer", "ThreadingHTTPServer", "HTTPSServer",
                                            "ThreadingHTTPSServer")]
    handlers = [name for name in fastserver.__all__ if name.endswith("Handler")]
    handlers += ["http.BaseHTTPRequestHandler", "http.SimpleHTTPRequestHandler"]
    code = []
    for number, name in enumerate(servers):
        code.append(f"\n\nclass Server{number}(fastserver.{name}):\n    workers = 2\n" + HOOKS
                    + ("" if name == "BaseServer" else SOCKET_HOOKS))
    for number, name in enumerate(handlers):
        code.append(f"\n\nclass Handler{number}(fastserver.{name}):\n" + HANDLER_HOOKS)
    mixins = [name for name in fastserver.__all__ if name.endswith("MixIn")]
    for number, name in enumerate(mixins):
        code.append(f"\n\nclass Mixed{number}(fastserver.{name}, fastserver.TCPServer):\n"
                    f"    daemon_threads = True\n    block_on_close = False\n")
    return "".join(code)


def mypy(tmp_path, *args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir",
                           str(tmp_path.parent / "mypy-cache"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("types")


def test_readme_examples_and_subclasses_pass_mypy_strict(workdir):
    (workdir / "examples.py").write_text(EXAMPLES + subclasses())
    done = mypy(workdir, "--strict", "examples.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_catches_a_wrong_type(workdir):
    (workdir / "wrong.py").write_text(textwrap.dedent('''\
        import fastserver

        server = fastserver.TCPServer(("127.0.0.1", 0), fastserver.StreamRequestHandler,
                                      ssl_context="cert.pem")
        timeout: str = server.graceful_timeout
        '''))
    done = mypy(workdir, "--strict", "wrong.py")
    assert done.returncode == 1, done.stdout
    assert 'Argument "ssl_context" to "TCPServer" has incompatible type "str"' in done.stdout
    assert 'expression has type "float", variable has type "str"' in done.stdout, done.stdout


def test_the_stubs_match_the_modules(workdir):
    # stubtest imports fastserver and each of its modules and compares it with its stub, name by
    # name and signature by signature: the public ones (fastserver, servers, mixins, handlers,
    # http); the private and compiled ones are another matter (not checked here).
    # http.server's own handler classes, re-exported as they are: their signatures are the
    # running Python's, typeshed's those of the Pythons mypy knows (3.15 added __init__'s
    # extra_response_headers and default_content_type), and neither is fastserver's stub.
    (workdir / "allow.txt").write_text("fastserver\\._.*\nfastserver\\.bench.*\n"
                                       "fastserver\\.workers.*\nfastserver\\.proxy.*\n"
                                       "fastserver\\.http\\.SimpleHTTPRequestHandler\\..*\n"
                                       "fastserver\\.http\\.BaseHTTPRequestHandler\\..*\n")
    # (mypy reads the private and benchmark modules too: their own errors are not this test's)
    (workdir / "mypy.ini").write_text(
        "[mypy]\nignore_missing_imports = True\n[mypy-fastserver.*]\nignore_errors = True\n"
        "[mypy-fastserver.servers,fastserver.mixins,fastserver.handlers,fastserver.http]\n"
        "ignore_errors = False\n")
    done = subprocess.run([sys.executable, "-m", "mypy.stubtest", "--concise",
                           "--mypy-config-file", "mypy.ini", "--allowlist", "allow.txt",
                           "--ignore-unused-allowlist", "fastserver"],
                          capture_output=True, text=True, cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
