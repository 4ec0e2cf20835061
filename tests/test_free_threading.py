"""Free-threaded CPython: fastserver keeps the GIL off because every module is safe without it.

On a free-threaded build, an extension module that does not declare itself safe turns the GIL
back on for the whole process when it is imported (with a RuntimeWarning). Here a fresh
interpreter, PYTHON_GIL unset, imports fastserver, serves requests through the compiled streams
and the request threads, and reports from inside a handler's thread whether the GIL is on.
"""

import os
import subprocess
import sys
import sysconfig

import pytest
from helpers import TIMEOUT

import fastserver

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
PACKAGE = os.path.dirname(os.path.abspath(fastserver.__file__))

# Serves two requests, one on ThreadingTCPServer (the request threads, the thread pool for the
# pure core) and one on TCPServer, each answering with the GIL's state in its handler's thread;
# prints what the client read and the state in the main thread at the end.
SERVE_AND_REPORT = r"""
import socket, sys, threading
import fastserver

class Report(fastserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        state = "on" if sys._is_gil_enabled() else "off"
        self.wfile.write(f"{threading.current_thread().name} {state}\n".encode())

for kind in ("ThreadingTCPServer", "TCPServer"):
    with getattr(fastserver, kind)(("127.0.0.1", 0), Report) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        try:
            with socket.create_connection(server.server_address, timeout=%(timeout)r) as client:
                client.sendall(b"state?\n")
                print(kind, client.makefile("rb").readline().decode().strip())
        finally:
            server.shutdown()
            thread.join()
print("main", fastserver.IMPLEMENTATION, "on" if sys._is_gil_enabled() else "off")
"""


def serve_and_report(core):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON_GIL", "PYTHONWARNINGS")}
    env.pop("FASTSERVER_NO_EXTENSIONS", None)
    if core == "python":
        env["FASTSERVER_NO_EXTENSIONS"] = "1"
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c",
         SERVE_AND_REPORT % {"timeout": TIMEOUT}],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def state_of(line):
    """(thread name, GIL state) from a line of the report."""
    return tuple(line.rsplit(" ", 1))


@pytest.mark.skipif(not FREE_THREADED, reason="a GIL build: the GIL is always on")
@pytest.mark.parametrize("core", ["cython", "python"])
def test_the_gil_stays_off_in_request_threads(core):
    report = serve_and_report(core)
    implementation, main_state = report["main"].split()
    assert implementation.startswith(core)
    threaded_name, threaded_state = state_of(report["ThreadingTCPServer"])
    assert threaded_name.startswith("fastserver-")  # a request thread, not the loop's
    assert (threaded_state, state_of(report["TCPServer"])[1], main_state) == ("off",) * 3


@pytest.mark.parametrize("module", sorted(name for name in os.listdir(PACKAGE)
                                          if name.endswith(".pyx")))
def test_every_compiled_module_declares_itself_safe_without_the_gil(module):
    """Its first line's directives: a module without the declaration turns the GIL on."""
    with open(os.path.join(PACKAGE, module), encoding="utf-8") as source:
        first = source.readline()
    assert first.startswith("# cython:") and "freethreading_compatible=True" in first
