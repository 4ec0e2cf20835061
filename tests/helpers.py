"""What the behaviour tests share besides fixtures (those are conftest.py's): servers of every
kind on a free address, clients that talk to them, bounded waits.

Import it as ``from helpers import ...`` (pytest puts tests/ on the path).
"""

import contextlib
import errno
import os
import socket
import socketserver
import subprocess
import threading
import time

import pytest

import fastserver

TIMEOUT = 5.0  # every client socket, every join: a broken server fails a test, never hangs it
NO_EXTENSIONS = os.environ.get("FASTSERVER_NO_EXTENSIONS", "") not in ("", "0")


@contextlib.contextmanager
def using(param):
    """fastserver on the core called ``param`` (every compiled part with it), or the stdlib
    (``"stdlib"``); the previous core comes back."""
    if param == "stdlib":
        yield socketserver
        return
    if param not in fastserver._cores.CORES:
        if NO_EXTENSIONS:
            pytest.skip("FASTSERVER_NO_EXTENSIONS is set: no compiled core")
        pytest.fail(f"the {param!r} core is missing (a broken build?): set "
                    f"FASTSERVER_NO_EXTENSIONS=1 to test without the extension")
    previous = fastserver.IMPLEMENTATION.split("-")[0]
    fastserver._use_core(param)
    try:
        yield fastserver
    finally:
        fastserver._use_core(previous)


def is_stdlib(module):
    return module is socketserver


def core_of(module):
    """'stdlib', 'cython' or 'python': what runs the loops of ``module`` now."""
    return "stdlib" if is_stdlib(module) else fastserver.IMPLEMENTATION.split("-")[0]


# --- servers --------------------------------------------------------------------------------

_counter = iter(range(1, 1 << 30))


def unix_path(directory):
    """A fresh socket path inside ``directory``."""
    return os.path.join(directory, f"s{next(_counter)}")


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# kind -> (server class name, family, type)
KINDS = {
    "tcp": ("TCPServer", socket.AF_INET, socket.SOCK_STREAM),
    "tcp6": ("TCPServer", socket.AF_INET6, socket.SOCK_STREAM),
    "udp": ("UDPServer", socket.AF_INET, socket.SOCK_DGRAM),
    "unix": ("UnixStreamServer", socket.AF_UNIX, socket.SOCK_STREAM),
    "unixdgram": ("UnixDatagramServer", socket.AF_UNIX, socket.SOCK_DGRAM),
}
STREAM_KINDS = ["tcp", "tcp6", "unix"]
DGRAM_KINDS = ["udp", "unixdgram"]


def address_for(kind, directory):
    family = KINDS[kind][1]
    if family == socket.AF_INET6:
        if not ipv6_available():
            pytest.skip("no IPv6 loopback here")
        return ("::1", 0)
    if family == socket.AF_UNIX:
        return unix_path(directory)
    return ("127.0.0.1", 0)


def make_server(module, kind, handler, directory=None, base=None, mixins=(),
                bind_and_activate=True, **attrs):
    """A server of ``kind`` from ``module`` (class ``base`` or the kind's), bound to a free
    address: an instance of a fresh subclass of ``mixins`` and that class, with ``attrs`` set."""
    name, family, _ = KINDS[kind]
    cls = getattr(module, base or name)
    attrs.setdefault("address_family", family)
    server_class = type("Server", (*mixins, cls), attrs)
    return server_class(address_for(kind, directory), handler, bind_and_activate)


def is_stream(server):
    return server.socket_type == socket.SOCK_STREAM


def client_for(server, directory=None, bind=False):
    """A client socket (timeout set) for ``server``, connected for a stream server; a datagram
    client on a Unix socket is bound (its server replies to its path)."""
    client = socket.socket(server.address_family, server.socket_type)
    client.settimeout(TIMEOUT)
    if server.address_family == socket.AF_UNIX and (bind or not is_stream(server)):
        client.bind(unix_path(directory or os.path.dirname(server.server_address)))
    elif not is_stream(server):  # bound now, so that getsockname() is what the server sees
        client.bind((server.server_address[0], 0))
    if is_stream(server):
        client.connect(server.server_address)
    return client


def send(client, server, data):
    """Send ``data``; a stream client then shuts down its side. A server that has closed the
    connection already (it rejected the request) is no error here: the reply tells."""
    if not is_stream(server):
        client.sendto(data, server.server_address)
        return
    try:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ENOTCONN, errno.ECONNRESET):
            raise


def receive(client, server):
    """The whole reply: up to EOF for a stream, one datagram otherwise."""
    if not is_stream(server):
        return client.recv(65536)
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_by_peer(client):
    """True when the peer has closed the connection (EOF, or a reset for unread data)."""
    try:
        return client.recv(65536) == b""
    except ConnectionResetError:
        return True


def talk(server, data=b"", directory=None):
    """Send ``data`` to ``server`` (which must be serving), return its whole reply."""
    with client_for(server, directory) as client:
        send(client, server, data)
        return receive(client, server)


def ask(address, line=b"hi\n", timeout=TIMEOUT):
    """Connect to a TCP ``address``, send ``line``, return the whole reply (up to the server's
    close)."""
    with socket.create_connection(address, timeout=timeout) as client:
        client.sendall(line)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def reply_handler(module, server_or_kind, respond):
    """A handler class whose reply is ``respond(handler, data)``; the data is the whole request
    (a stream client shuts down its side after sending)."""
    stream = (KINDS[server_or_kind][2] if isinstance(server_or_kind, str)
              else server_or_kind.socket_type) == socket.SOCK_STREAM
    base = module.StreamRequestHandler if stream else module.DatagramRequestHandler

    class Handler(base):
        def handle(self):
            self.wfile.write(respond(self, self.rfile.read()))

    return Handler


@contextlib.contextmanager
def serving(server, poll_interval=0.05, close=True):
    """Run ``server.serve_forever(poll_interval)`` in a thread; on exit shut it down, join it
    (failing if it hangs) and close the server. An exception of serve_forever is raised here."""
    errors = []

    def run():
        try:
            server.serve_forever(poll_interval=poll_interval)
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="serve_forever", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stopper = threading.Thread(target=server.shutdown, name="shutdown", daemon=True)
        stopper.start()
        stopper.join(TIMEOUT + (poll_interval or 0))
        thread.join(TIMEOUT)
        hung = stopper.is_alive() or thread.is_alive()
        if close:
            server.server_close()
        if hung:
            pytest.fail("shutdown()/serve_forever() did not return")
        if errors:
            raise errors[0]


def bounded(function, *args, timeout=TIMEOUT):
    """Call ``function(*args)`` in a thread; return its result or raise its exception; fail if
    it has not returned within ``timeout``."""
    outcome = {}

    def run():
        try:
            outcome["result"] = function(*args)
        except BaseException as exc:  # noqa: B036 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(function, '__name__', function)} hung for {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def child_env():
    """os.environ for a Python child that must import this same fastserver (installed, or from
    ``src`` with the extension built in place), unbuffered."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastserver.__file__)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def wait_until(predicate, timeout=TIMEOUT, interval=0.01):
    """Poll ``predicate`` until it is true (return True) or ``timeout`` passes (return False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --- processes (Linux /proc) -----------------------------------------------------------------

def children_of(pid):
    """The pids whose parent is ``pid``, with their state letter (Z: a zombie)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0]
    return found


def live_children(pid):
    """The pids whose parent is ``pid`` and that still run, from one scan of /proc: an exited
    child its parent has not reaped yet (a zombie) is not counted."""
    return {child for child, state in children_of(pid).items() if state not in ("Z", "X")}


def alive(pid):
    """True while ``pid`` runs (a zombie or a reaped process is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port():
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def haproxy(tmp_path, backend_port, send_proxy):
    """HAProxy in TCP mode on a free port of 127.0.0.1, forwarding to ``backend_port`` with
    ``send_proxy`` ("send-proxy" or "send-proxy-v2"): (its process, its port), once it accepts."""
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
