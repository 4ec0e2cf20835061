"""Micro benchmarks of StreamRequestHandler's rfile/wfile: the stdlib's objects against _stream's.

Run with ``python -m pytest bench/test_stream_micro.py --benchmark-only``. The handler side runs
in the benchmark (``line = rfile.readline(); wfile.write(line)``, one round per line) on one end
of a socketpair; the client runs in a child process on the other end, so that it takes no GIL:

- ``stream-pipelined``: the client streams lines without waiting and drains the replies; this is
  the cost of one readline()+write() on the handler's side when data is there.
- ``stream-pingpong``: the client sends one line, waits for the reply, sends the next; a round is
  a whole round trip, waits included.
- ``stream-open-close``: ``stream_files()`` then closing both files, as each connection does.
"""

import socket
import subprocess
import sys

import pytest

from fastserver import _stream_py

try:
    from fastserver import _stream
except ImportError:
    _stream = None

LINE = b"x" * 63 + b"\n"
TIMEOUT = 10.0

CLIENT = r"""
import socket, sys, threading
sock = socket.socket(fileno=int(sys.argv[1]))
line = b"x" * 63 + b"\n"
if sys.argv[2] == "pipelined":
    def drain():
        while sock.recv(1 << 20):
            pass
    threading.Thread(target=drain, daemon=True).start()
    burst = line * 1024
    try:
        while True:
            sock.sendall(burst)
    except OSError:
        pass
else:
    try:
        while True:
            sock.sendall(line)
            if not sock.recv(100):
                break
    except OSError:
        pass
"""


@pytest.fixture(params=["stdlib", "fast"])
def stream_files(request):
    if request.param == "stdlib":
        return _stream_py.stream_files
    if _stream is None:
        pytest.skip("fastserver._stream is not built")
    return _stream.stream_files


def client(mode):
    """(our socket, the child process): the client's end of a socketpair runs in the child."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen([sys.executable, "-c", CLIENT, str(theirs.fileno()), mode],
                             pass_fds=[theirs.fileno()])
    theirs.close()
    return ours, child


def stop(sock, child):
    sock.close()
    try:
        child.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@pytest.mark.parametrize("mode", ["pipelined", "pingpong"])
def test_readline_write(benchmark, stream_files, mode):
    benchmark.group = f"stream-{mode}"
    sock, child = client(mode)
    try:
        rfile, wfile = stream_files(sock, -1, 0)
        readline, write = rfile.readline, wfile.write

        def one_line():
            write(readline())

        for _ in range(1000):  # warm up: the child is started and the buffers are flowing
            one_line()
        benchmark(one_line)
        assert readline() == LINE
        rfile.close()
        wfile.close()
    finally:
        stop(sock, child)


def test_open_close(benchmark, stream_files):
    benchmark.group = "stream-open-close"
    a, b = socket.socketpair()
    with a, b:

        def open_close():
            rfile, wfile = stream_files(a, -1, 0)
            wfile.close()
            rfile.close()

        benchmark(open_close)
        assert a._io_refs == 0
