"""The servers under load: subprocesses that speak the bench's protocol on stdin and stdout.

The protocol (written out in ``server_script.py``, the Python servers' script): the server prints a
hello line (JSON, with its port), then answers each ``cpu`` line on its stdin with its
``getrusage(RUSAGE_SELF)`` figures; ``quit`` or EOF stops it.
"""

import json
import os
import select
import subprocess
import sys
from importlib import resources

from .loads import BASELINE, FLOORS, HTTP_FILE, HTTP_FILE_SIZE, PEERS, BenchError, Unavailable
from .tools import build_floor

START_TIMEOUT = 30.0  # seconds for a server's hello line: a cold interpreter on a busy machine


def python_argv(source, *args):
    """The command line that runs Python source text as a server: ``python -c source *args``."""
    return [sys.executable, "-c", source, *args]


def _package_parent():
    import fastserver

    return os.path.dirname(os.path.dirname(os.path.abspath(fastserver.__file__)))


class ServerProcess:
    """One server subprocess (``argv``, its stderr to ``log_path``), once it has said hello.

    ``name`` says which in error messages. The server imports this fastserver (its directory
    comes first on PYTHONPATH), whatever FASTSERVER_NO_EXTENSIONS says here: a server script
    picks its core itself (``package_parent``: the directory that fastserver is imported from
    instead, for the baseline). bench/scaling.py's server subclasses it. A server that cannot
    run here says why in its hello line (``{"missing": why}``): Unavailable.
    """

    def __init__(self, argv, log_path, name, package_parent=None):
        self.name = name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent or _package_parent(), env.get("PYTHONPATH", "")) if p)
        env.pop("FASTSERVER_NO_EXTENSIONS", None)
        self.log_path = log_path
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
            text=True, bufsize=1, close_fds=True)
        #: the hello line, decoded: port, implementation, streams (and what a script adds)
        self.hello = json.loads(self._line(START_TIMEOUT))
        if "missing" in self.hello:
            self.stop()
            raise Unavailable(self.hello["missing"])
        self.port = self.hello["port"]
        self.implementation = self.hello["implementation"]
        self.streams = self.hello.get("streams")
        #: whether the GIL was on in the server once it was set up (None: a C server)
        self.gil_enabled = self.hello.get("gil_enabled")
        #: the directory of the fastserver package it runs (None: not a fastserver)
        self.package = self.hello.get("package")

    def _line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise BenchError(f"the {self.name} server did not answer; its log:\n"
                             f"{self.log_tail()}")
        return line

    def ask(self, command, timeout=10.0):
        """Send one command line; the server's answer (a line)."""
        self.proc.stdin.write(f"{command}\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def cpu(self):
        """(user seconds, system seconds, context switches) of the whole server process so far."""
        user, system, voluntary, involuntary = self.ask("cpu").split()
        return float(user), float(system), int(voluntary) + int(involuntary)

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def tracebacks(self):
        """(tracebacks in the server's stderr, those of them about a client that went away)."""
        try:
            with open(self.log_path, errors="replace") as log:
                text = log.read()
        except OSError:
            return 0, 0
        gone = sum(text.count(f"{name}: ") for name in ("BrokenPipeError", "ConnectionResetError"))
        return text.count("Traceback (most recent call last)"), gone

    def exceptions(self, most=3):
        """The commonest last lines of the tracebacks in the server's stderr (the exception and its
        message), with their counts: [(line, count)], at most ``most``."""
        counts = {}
        try:
            with open(self.log_path, errors="replace") as log:
                in_traceback = False
                for line in log:
                    if line.startswith("Traceback (most recent call last)"):
                        in_traceback = True
                    elif in_traceback and line[:1] not in (" ", "\t", ""):
                        in_traceback = False
                        text = line.strip()[:120]
                        counts[text] = counts.get(text, 0) + 1
        except OSError:
            pass
        return sorted(counts.items(), key=lambda item: -item[1])[:most]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self._log.close()


def _script(name):
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def start_server(load, impl, docroot, logdir, baseline=None, max_threads=0):
    """A load's server on ``impl``: server_script.py in Python, a peer's (peer_script.py), or a
    floor's C server; the baseline is server_script.py on the compiled core of the fastserver
    in the directory ``baseline``; gevent's keep-alive HTTP server is server_script.py's, the
    stdlib's made cooperative. ``max_threads`` (0: none): fastserver's, for the paced loads.
    Unavailable where ``impl`` cannot run here (uvloop is not installed)."""
    log_path = os.path.join(logdir, f"server-{load.number}-{impl}.log")
    limit = str(max_threads or 0)
    if impl == BASELINE:
        argv = python_argv(_script("server_script.py"), load.server, "cython", docroot, limit)
        return ServerProcess(argv, log_path, impl, package_parent=baseline)
    if impl in FLOORS:
        argv = [build_floor(), load.server, impl[len("c-"):]]
    elif impl in PEERS and not load.server.startswith("http"):
        argv = python_argv(_script("peer_script.py"), load.server, impl)
    else:
        argv = python_argv(_script("server_script.py"), load.server, impl, docroot, limit)
    return ServerProcess(argv, log_path, impl)


def proc_cpu(pid):
    """(user seconds, system seconds) of process ``pid``, every thread, the finished ones too,
    from /proc/PID/stat (Linux; clock ticks, 10 ms); None elsewhere or once it is gone. The
    paced loads take it from outside: a server that runs thousands of threads may not answer the
    bench's ``cpu`` line for seconds."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks
    except (OSError, ValueError, IndexError):
        return None


def proc_status(pid):
    """(threads, resident KiB) of process ``pid`` from /proc (Linux); (None, None) elsewhere or
    once it is gone."""
    threads = rss = None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    threads = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return threads, rss


def check_baseline(path):
    """The absolute path of a ``--baseline`` directory; BenchError unless fastserver is
    importable from it (a checkout's ``src``, built: ``python setup.py build_ext --inplace``)."""
    if not os.path.isfile(os.path.join(path, "fastserver", "__init__.py")):
        raise BenchError(f"--baseline: {path} has no fastserver package (give a checkout's src)")
    return os.path.abspath(path)


def make_docroot(parent):
    """A directory ``www`` in ``parent`` holding the HTTP loads' file; its path."""
    docroot = os.path.join(parent, "www")
    os.mkdir(docroot)
    with open(os.path.join(docroot, HTTP_FILE), "wb") as f:
        f.write((b"fastserver benchmark file\n" * 64)[:HTTP_FILE_SIZE])
    return docroot
