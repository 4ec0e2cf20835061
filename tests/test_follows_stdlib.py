"""fastserver follows the socketserver of the Python that runs it, whichever version that is.

Nothing here names a version: each test reads what the running Python's own socketserver has (its
classes' attributes, its ``__version__``) and checks fastserver against it, so that the next
Python's changes (3.15's request_queue_size and deprecated ``__version__``) are caught the same way.
"""

import inspect
import os
import socket
import socketserver
import struct
import subprocess
import sys
import warnings

import pytest
from helpers import TIMEOUT

import fastserver


def stdlib_classes():
    """Every public class that the running Python's socketserver defines."""
    return sorted(name for name, value in vars(socketserver).items()
                  if inspect.isclass(value) and not name.startswith("_")
                  and value.__module__ == "socketserver")


def public_class_attributes(cls):
    """{name: value} of the class's public attributes (its own and inherited) that are data,
    not methods or properties."""
    found = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name)
        if callable(raw) or isinstance(raw, (staticmethod, classmethod, property)):
            continue
        found[name] = getattr(cls, name)
    return found


def test_every_stdlib_class_is_in_fastserver():
    names = stdlib_classes()
    assert "TCPServer" in names and "StreamRequestHandler" in names  # the scan found them
    assert sorted(set(names) - set(dir(fastserver))) == []


@pytest.mark.parametrize("name", stdlib_classes())
def test_every_public_class_attribute_has_the_stdlib_default(name):
    """Each data attribute of each stdlib class is on fastserver's class of that name, with the
    same value (fastserver's own additions, such as workers, are not the stdlib's business)."""
    expected = public_class_attributes(getattr(socketserver, name))
    cls = getattr(fastserver, name)
    actual = {attribute: getattr(cls, attribute, "<missing>") for attribute in expected}
    assert actual == expected


def test_request_queue_size_is_the_stdlib_one():
    # the issue's own check, named: 5 up to 3.14, socket.SOMAXCONN from 3.15 on
    assert fastserver.TCPServer.request_queue_size == socketserver.TCPServer.request_queue_size
    if hasattr(socket, "AF_UNIX"):
        assert (fastserver.UnixStreamServer.request_queue_size
                == socketserver.UnixStreamServer.request_queue_size)


# --- the backlog the kernel was given -------------------------------------------------------

def listen_backlog(port):
    """The backlog of the IPv4 TCP socket listening on ``port``, as the kernel holds it: its
    sock_diag answer (idiag_wqueue is sk_max_ack_backlog for a listening socket)."""
    tcp_listen = 1 << 10  # TCPF_LISTEN
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, tcp_listen)
    request += bytes(48)  # inet_diag_sockid: any address, any port
    sock_diag_by_family, nlm_f_request, nlm_f_dump, nlmsg_done, nlmsg_error = 20, 1, 0x300, 3, 2
    header = struct.pack("=IHHII", 16 + len(request), sock_diag_by_family,
                         nlm_f_request | nlm_f_dump, 1, 0)
    found = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as netlink:  # NETLINK_SOCK_DIAG
        netlink.settimeout(TIMEOUT)
        netlink.sendall(header + request)
        while True:
            data = netlink.recv(1 << 16)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == nlmsg_done:
                    assert len(found) == 1, found
                    return found[0]
                assert kind != nlmsg_error, "sock_diag refused the request"
                message = data[offset + 16:offset + length]
                source_port = struct.unpack_from("!H", message, 4)[0]
                if source_port == port:
                    found.append(struct.unpack_from("=I", message, 4 + 48 + 8)[0])
                offset += (length + 3) & ~3


def somaxconn():
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux's")
def test_listen_backlog_is_the_stdlib_default(ss):
    """What the kernel got from listen() on each core is what the stdlib's server gives it."""

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            pass

    with ss.TCPServer(("127.0.0.1", 0), Handler) as server:
        backlog = listen_backlog(server.server_address[1])
    # the kernel caps listen()'s backlog at net.core.somaxconn
    assert backlog == min(socketserver.TCPServer.request_queue_size, somaxconn())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux's")
def test_listen_backlog_follows_request_queue_size(fast):
    """The check above sees what listen() was given: a subclass's value reaches the kernel."""

    class Server(fast.TCPServer):
        request_queue_size = 3

    class Handler(fast.BaseRequestHandler):
        def handle(self):
            pass

    with Server(("127.0.0.1", 0), Handler) as server:
        assert listen_backlog(server.server_address[1]) == 3


# --- __version__ ------------------------------------------------------------------------------

def read_version(module):
    """(value or None, [(category, message, filename)]) of reading module.__version__."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = module.__version__
        except AttributeError:
            value = None
    return value, [(w.category, str(w.message), w.filename) for w in caught]


def test_version_reads_as_the_stdlib_one():
    """fastserver.__version__ is the running Python's socketserver.__version__, with the same
    warnings (3.15: a DeprecationWarning), reported at the reader's line."""
    theirs, ours = read_version(socketserver), read_version(fastserver)
    assert ours == theirs
    for _, _, filename in ours[1]:
        assert filename == __file__


def test_fastserver_has_its_own_version():
    from importlib import metadata

    assert isinstance(fastserver.VERSION, str) and fastserver.VERSION
    try:
        assert fastserver.VERSION == metadata.version("fastserver")
    except metadata.PackageNotFoundError:
        assert fastserver.VERSION == "0+unknown"


READ_VERSION = """
import sys, warnings
if sys.argv[1] == "fastserver":
    import fastserver
    fastserver.install()
import socketserver
warnings.simplefilter("error")  # a warning becomes the exception the reader sees
try:
    print(repr(socketserver.__version__))
except Exception as e:
    print(type(e).__name__, e)
"""


def test_version_after_install_reads_as_the_stdlib_one():
    """``socketserver.__version__`` in a program that installed fastserver: the stdlib's
    behaviour, warnings turned to errors included."""
    outputs = []
    for which in ("stdlib", "fastserver"):
        done = subprocess.run([sys.executable, "-c", READ_VERSION, which], capture_output=True,
                              text=True, timeout=60, env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
