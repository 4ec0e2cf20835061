"""``python -m fastserver.bench``: fastserver against the stdlib's socketserver, under load.

Each load runs the same server code three ways, each in its own subprocess: on the standard
library's ``socketserver`` (``stdlib``), on fastserver's compiled core (``cython``) and on its pure
core (``python``). The client is a small C load generator (``_loadgen.c``, compiled with ``cc -O2``
into a cache directory on first use) or, for HTTP, ``wrk``. Rounds are interleaved (every round
measures every implementation, in a rotating order) and the table reports medians over the rounds.

Asked for by name (``--impls ...,c-threads,c-loop``), the socket loads also run on the floor: the
same servers written in C (``_floor.c``: a thread per connection, and one epoll thread), which say
what any server of that design costs on the machine, with no interpreter.

Two figures per measurement:

- server CPU per request: the user + system CPU time of the server process (all its threads, as
  ``getrusage(RUSAGE_SELF)`` counts them, taken by the server itself when the bench asks, just
  before and just after the client runs), divided by the requests completed;
- requests per second, as the client counts them.

The client's own CPU time is measured too (``wait4``): a client that uses more CPU than the server
it loads would make the requests/s figures the client's, and the bench says so.

Usage: ``python -m fastserver.bench [--quick | --full] [--loads 1,2,5] [--json]``; see ``--help``
and ``bench/README.md``. Linux or another Unix with a C compiler; all traffic is on 127.0.0.1.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources

IMPLS = ("stdlib", "cython", "python")
# The floor (_floor.c): the socket loads' servers written in C, for reference; asked for by name.
FLOORS = ("c-threads", "c-loop")
IMPL_LABELS = {"stdlib": "stdlib", "cython": "fastserver", "python": "fastserver pure",
               "c-threads": "C, a thread per connection", "c-loop": "C, one epoll thread"}
HOST = "127.0.0.1"
HTTP_FILE = "small.txt"
HTTP_FILE_SIZE = 1024
LINE_SIZE = 64  # bytes of each request (a line, in the echo mode)


@dataclass(frozen=True)
class Load:
    number: int
    title: str
    server: str  # the server script's kind
    client: str  # "connect" or "echo" (the C load generator), or "wrk"
    conns: int = 8
    close: bool = False  # wrk: "Connection: close" on every request


LOADS = (
    Load(1, "ThreadingTCPServer, a connection per request", "threading-oneshot", "connect"),
    Load(2, "ThreadingTCPServer, echo, 8 persistent connections", "threading-echo", "echo"),
    Load(3, "ThreadingTCPServer, echo, 256 persistent connections", "threading-echo", "echo", 256),
    Load(4, "TCPServer, a connection per request", "single-oneshot", "connect"),
    Load(5, "ThreadingHTTPServer, small file, keep-alive (wrk)", "http", "wrk"),
    Load(6, "ThreadingHTTPServer, small file, Connection: close (wrk)", "http", "wrk", close=True),
    Load(7, "as 5, the handler sets disable_nagle_algorithm", "http-nodelay", "wrk"),
)
LOADS_BY_NUMBER = {load.number: load for load in LOADS}


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float  # seconds of each measured run
    warmup: float  # seconds of the unmeasured run before each measured one (load generator)
    requests: int  # at most this many requests in a run (the C load generator)


QUICK = Settings(rounds=3, duration=0.7, warmup=0.1, requests=10_000_000)
FULL = Settings(rounds=5, duration=3.0, warmup=0.5, requests=50_000_000)

# --- the server subprocess ----------------------------------------------------------------------

# Run as `python -c SERVER_SCRIPT KIND IMPL DOCROOT`. It prints {"port": ..., "implementation": ...}
# and then answers the bench on stdin: "cpu" -> "<user seconds> <system seconds> <voluntary
# context switches> <involuntary ones>" of the whole process (getrusage counts every thread, the
# finished ones too); "quit" or EOF -> it exits.
SERVER_SCRIPT = r'''
import json, os, resource, sys, threading

kind, impl, docroot = sys.argv[1:4]
if impl == "stdlib":
    import socketserver
else:
    import fastserver
    fastserver._use_core(impl)
    if kind.startswith("http"):
        fastserver.install()
    socketserver = fastserver

if kind.startswith("http"):
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = kind == "http-nodelay"

        def end_headers(self):
            # say that the connection closes when it does (http.server does not), so that the
            # client opens a new one instead of writing its next request into a closing socket
            if self.close_connection:
                self.send_header("Connection", "close")
            super().end_headers()

        def log_message(self, format, *args):
            pass  # a log line per request is not what is measured

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), functools.partial(Handler, directory=docroot))
else:
    if kind.endswith("oneshot"):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data = self.request.recv(1024)
                self.request.sendall(data)
    else:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    self.wfile.write(line)

    if kind.startswith("threading"):
        base = socketserver.ThreadingTCPServer
    else:
        base = socketserver.TCPServer

    class Server(base):
        allow_reuse_address = True
        request_queue_size = 1024  # the default 5 drops connections under a burst: SYN retries

    server = Server(("127.0.0.1", 0), Handler)

if impl == "stdlib":
    implementation, streams = "stdlib", "socket.makefile"
else:
    implementation = fastserver.IMPLEMENTATION
    streams = fastserver._cores.active.stream_files.__module__  # compiled or pure rfile/wfile


def control():
    for line in sys.stdin:
        if line.strip() == "cpu":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(f"{usage.ru_utime!r} {usage.ru_stime!r} {usage.ru_nvcsw} {usage.ru_nivcsw}",
                  flush=True)
        elif line.strip() == "quit":
            break
    server.shutdown()


print(json.dumps({"port": server.server_address[1], "implementation": implementation,
                  "streams": streams}), flush=True)
threading.Thread(target=control, daemon=True).start()
server.serve_forever()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # a connection left open (it should not be) must not hold the exit up
'''


class BenchError(RuntimeError):
    pass


def _package_parent():
    import fastserver

    return os.path.dirname(os.path.dirname(os.path.abspath(fastserver.__file__)))


class ServerProcess:
    """One server subprocess: a load's server on one implementation (a floor: the C server)."""

    def __init__(self, load, impl, docroot, logdir):
        self.impl = impl
        log_path = os.path.join(logdir, f"server-{load.number}-{impl}.log")
        if impl in FLOORS:
            self._start_argv([build_floor(), load.server, impl[len("c-"):]], log_path)
        else:
            self._start(SERVER_SCRIPT, [load.server, impl, docroot], log_path)

    def _start(self, script, args, log_path):
        """Run ``python -c script *args`` (stderr to log_path); its hello line, read. Other
        server scripts that speak the same protocol use it too (bench/scaling.py)."""
        return self._start_argv([sys.executable, "-c", script, *args], log_path)

    def _start_argv(self, argv, log_path):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_parent(), env.get("PYTHONPATH", "")) if p)
        env.pop("FASTSERVER_NO_EXTENSIONS", None)
        self.log_path = log_path
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
            text=True, bufsize=1, close_fds=True)
        hello = json.loads(self._line(30.0))
        self.port = hello["port"]
        self.implementation = hello["implementation"]
        self.streams = hello.get("streams")
        return hello

    def _line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise BenchError(f"the {self.impl} server did not answer; its log:\n"
                             f"{self.log_tail()}")
        return line

    def cpu(self):
        """(user seconds, system seconds, context switches) of the whole server process so far."""
        self.proc.stdin.write("cpu\n")
        self.proc.stdin.flush()
        user, system, voluntary, involuntary = self._line(10.0).split()
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


# --- the clients --------------------------------------------------------------------------------

def cache_dir():
    """Where the compiled load generator is kept: $FASTSERVER_BENCH_CACHE, else the user's cache."""
    explicit = os.environ.get("FASTSERVER_BENCH_CACHE")
    if explicit:
        candidates = [explicit]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [os.path.join(base, "fastserver"),
                      os.path.join(tempfile.gettempdir(), f"fastserver-{os.getuid()}")]
    for path in candidates:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise BenchError(f"no writable cache directory among {candidates}")


def compiler():
    """The C compiler command (a list): $CC, else cc, gcc or clang; None if there is none."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def build_loadgen(directory=None):
    """Compile the load generator once (cached by source and compiler) and return its path."""
    return _build("loadgen", [], "the load generator", directory)


def build_floor(directory=None):
    """Compile the C reference servers (_floor.c) once, as build_loadgen(); their path."""
    return _build("floor", ["-pthread"], "the C reference servers", directory)


def _build(name, flags, what, directory):
    """Compile the package's ``_<name>.c`` into ``<name>-<hash>`` in ``directory``."""
    source = resources.files("fastserver").joinpath(f"_{name}.c").read_bytes()
    cc = compiler()
    if cc is None:
        raise BenchError(f"no C compiler (set CC, or install cc) to build {what}")
    key = hashlib.sha256(source + " ".join(cc + flags).encode() + platform.machine().encode())
    directory = directory or cache_dir()
    exe = os.path.join(directory, f"{name}-{key.hexdigest()[:16]}")
    if os.path.exists(exe):
        return exe
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        src = os.path.join(tmp, f"{name}.c")
        with open(src, "wb") as f:
            f.write(source)
        out = os.path.join(tmp, name)
        done = subprocess.run([*cc, "-O2", *flags, "-o", out, src], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"compiling {what} failed:\n{done.stderr}")
        os.replace(out, exe)
    return exe


def _run_measured(argv, timeout):
    """Run argv; return (its stdout and stderr, CPU seconds it used, wall seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, close_fds=True)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        output = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"{os.path.basename(argv[0])} exited with {proc.returncode}:\n{output}")
    return output, usage.ru_utime + usage.ru_stime, time.monotonic() - started


def run_loadgen(exe, port, mode, conns, requests, duration):
    """One run of the C load generator; its JSON result, with the CPU it used as client_cpu_s."""
    argv = [exe, "--host", HOST, "--port", str(port), "--mode", mode, "--conns", str(conns),
            "--requests", str(requests), "--duration", str(duration), "--size", str(LINE_SIZE),
            "--grace", "2"]
    if mode == "connect":
        argv += ["--expect", str(LINE_SIZE)]
    output, cpu, _ = _run_measured(argv, duration + 30)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"no result from the load generator:\n{output}")
    result = json.loads(lines[-1])
    result["client_cpu_s"] = cpu
    return result


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise BenchError(f"wrk: cannot read the time {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output):
    """The figures of a ``wrk --latency`` report, in the load generator's JSON shape."""
    done = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if not done:
        raise BenchError(f"wrk: no result in its output:\n{output}")
    requests, elapsed = int(done[1]), _seconds(done[2])
    latency = {}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", output, re.MULTILINE)
        latency[key] = _seconds(match[1]) * 1e6 if match else None
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    bad_status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad_status:
        errors += int(bad_status[1])
    return {"mode": "wrk", "requests": requests, "errors": errors, "elapsed_s": elapsed,
            "rps": requests / elapsed if elapsed else 0.0, "lat_us": latency}


def run_wrk(port, conns, duration, close):
    argv = [shutil.which("wrk") or "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s",
            "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{port}/{HTTP_FILE}")
    output, cpu, _ = _run_measured(argv, duration + 30)
    result = parse_wrk(output)
    result["client_cpu_s"] = cpu
    return result


def warm_http(port, requests=20):
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for _ in range(requests):
            conn.request("GET", f"/{HTTP_FILE}")
            conn.getresponse().read()
    finally:
        conn.close()


# --- the benchmark ------------------------------------------------------------------------------

def measure(server, load, settings, loadgen, run=run_loadgen):
    """Warm the server up, then one measured run; the figures of that run. ``run`` runs the
    load generator (bench/scaling.py passes one that runs several at once)."""
    if load.client == "wrk":
        warm_http(server.port)
    elif settings.warmup > 0:
        run(loadgen, server.port, load.client, load.conns, max(1, settings.requests // 10),
            settings.warmup)
    user0, system0, switches0 = server.cpu()
    if load.client == "wrk":
        result = run_wrk(server.port, load.conns, settings.duration, load.close)
    else:
        result = run(loadgen, server.port, load.client, load.conns, settings.requests,
                     settings.duration)
    user1, system1, switches1 = server.cpu()
    server_cpu = (user1 - user0) + (system1 - system0)
    requests = result["requests"]
    elapsed = result["elapsed_s"]
    return {
        "requests": requests,
        "errors": result["errors"],
        "rps": result["rps"],
        "server_cpu_s": server_cpu,
        "server_user_s": user1 - user0,
        "server_sys_s": system1 - system0,
        "client_cpu_s": result["client_cpu_s"],
        "server_us_per_req": server_cpu / requests * 1e6 if requests else None,
        "server_user_us_per_req": (user1 - user0) / requests * 1e6 if requests else None,
        # context switches of the server's threads (GIL hand-offs, blocking I/O) per request
        "server_switches_per_req": (switches1 - switches0) / requests if requests else None,
        "client_us_per_req": result["client_cpu_s"] / requests * 1e6 if requests else None,
        # the share of one core the (single-threaded) client kept busy: near 1, it is the limit
        "client_busy": result["client_cpu_s"] / elapsed if elapsed else None,
        "p50_us": result["lat_us"].get("p50"),
        "p99_us": result["lat_us"].get("p99"),
    }


def _loadavg():
    """The 1-minute load average (other work on the machine makes the figures noisy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_load(load, impls, settings, loadgen, docroot, logdir, log):
    """Every round of one load, the implementations interleaved; per implementation, the rounds
    and their medians."""
    if load.client == "wrk":
        impls = tuple(impl for impl in impls if impl not in FLOORS)  # no C HTTP server
    servers = {}
    try:
        for impl in impls:
            servers[impl] = ServerProcess(load, impl, docroot, logdir)
        rounds = {impl: [] for impl in impls}
        for number in range(settings.rounds):
            shift = number % len(impls)
            for impl in impls[shift:] + impls[:shift]:
                figures = measure(servers[impl], load, settings, loadgen)
                rounds[impl].append(figures)
                log(f"  load {load.number} round {number + 1} {impl:7}: "
                    f"{_fmt(figures['server_us_per_req'], 1)} us/req, "
                    f"{_fmt(figures['rps'], 0)} req/s, {figures['errors']} errors")
    finally:
        for server in servers.values():
            server.stop()
    result = {}
    for impl in impls:
        keys = rounds[impl][0].keys()
        tracebacks, client_gone = servers[impl].tracebacks()
        result[impl] = {
            "implementation": servers[impl].implementation,
            "streams": servers[impl].streams,
            "median": {key: _median([r[key] for r in rounds[impl]]) for key in keys},
            "rounds": rounds[impl],
            "server_tracebacks": tracebacks,
            "server_tracebacks_client_gone": client_gone,
        }
    return result


def _fmt(value, digits):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(numerator, denominator):
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def markdown(report):
    """The results as markdown tables: per load, CPU per request and requests/s, then latency and
    the load generator's own CPU."""
    impls = report["impls"]
    others = [impl for impl in impls if impl != "stdlib"]
    head = ["load", "stdlib µs/req"]
    for impl in others:
        head += [f"{IMPL_LABELS[impl]} µs/req", "ratio"]
    head.append("stdlib req/s")
    for impl in others:
        head += [f"{IMPL_LABELS[impl]} req/s", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in report["loads"]:
        med = {impl: entry["results"][impl]["median"] if impl in entry["results"] else {}
               for impl in impls}
        base = med.get("stdlib", {})
        row = [f"{entry['load']}. {entry['title']}", _fmt(base.get("server_us_per_req"), 1)]
        for impl in others:
            row += [_fmt(med[impl].get("server_us_per_req"), 1),
                    _ratio(base.get("server_us_per_req"), med[impl].get("server_us_per_req"))]
        row.append(_fmt(base.get("rps"), 0))
        for impl in others:
            row += [_fmt(med[impl].get("rps"), 0), _ratio(med[impl].get("rps"), base.get("rps"))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "ratio: stdlib µs/req ÷ that column's µs/req, and its req/s ÷ stdlib req/s "
                  "(above 1: better than the stdlib). Medians of interleaved rounds.", ""]
    head = ["load", "implementation", "p50 µs", "p99 µs", "server CPU µs/req",
            "of which user", "server ctx switches/req", "client CPU µs/req", "client busy",
            "errors"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in report["loads"]:
        for impl in [impl for impl in impls if impl in entry["results"]]:
            med = entry["results"][impl]["median"]
            errors = sum(r["errors"] for r in entry["results"][impl]["rounds"])
            lines.append("| " + " | ".join([
                str(entry["load"]), IMPL_LABELS[impl], _fmt(med["p50_us"], 0),
                _fmt(med["p99_us"], 0), _fmt(med["server_us_per_req"], 1),
                _fmt(med["server_user_us_per_req"], 1), _fmt(med["server_switches_per_req"], 1),
                _fmt(med["client_us_per_req"], 1),
                "-" if med["client_busy"] is None else f"{med['client_busy']:.0%}",
                str(errors)]) + " |")
    return "\n".join(lines)


def warnings_for(report):
    """What makes figures doubtful: errors, a client that works harder than the server."""
    notes = []
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            med = result["median"]
            errors = sum(r["errors"] for r in result["rounds"])
            if errors:
                notes.append(f"load {entry['load']} {impl}: {errors} client errors")
            client, server = med["client_us_per_req"], med["server_us_per_req"]
            busy = med["client_busy"] or 0.0
            if client is not None and server is not None and client >= server:
                why = (": its req/s is the client's limit" if busy > 0.9 else
                       " (on loopback the kernel's TCP work of both ends is shared between them)")
                notes.append(f"load {entry['load']} {impl}: the client used more CPU per request "
                             f"({client:.1f} µs) than the server ({server:.1f} µs), busy "
                             f"{busy:.0%} of a core{why}")
            elif busy > 0.9:
                notes.append(f"load {entry['load']} {impl}: the client was busy {busy:.0%} of a "
                             f"core: its req/s may be the client's limit")
            # wrk closes its connections mid-reply when its time is up: the server's write fails
            tracebacks = result["server_tracebacks"]
            if entry["client"] == "wrk":
                tracebacks -= result["server_tracebacks_client_gone"]
            if tracebacks > 0:
                notes.append(f"load {entry['load']} {impl}: {tracebacks} tracebacks in the "
                             f"server's stderr")
    return notes


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fastserver.bench",
        description="Load benchmark: fastserver (compiled and pure cores) against the standard "
                    "library's socketserver, on 127.0.0.1.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"the default: {QUICK.rounds} rounds of {QUICK.duration} s (~1 min)")
    size.add_argument("--full", action="store_true",
                      help=f"{FULL.rounds} rounds of {FULL.duration} s (~5 min)")
    parser.add_argument("--loads", default=",".join(str(load.number) for load in LOADS),
                        help="the loads to run, by number (default: all): "
                             + "; ".join(f"{load.number}: {load.title}" for load in LOADS))
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help="the implementations (default: stdlib,cython,python); c-threads "
                             "and c-loop add the floor, the socket loads' servers in C (a "
                             "thread per connection; one epoll thread)")
    parser.add_argument("--rounds", type=int, help="rounds (overrides --quick/--full)")
    parser.add_argument("--duration", type=float,
                        help="seconds of each measured run (wrk: whole seconds, at least 1)")
    parser.add_argument("--warmup", type=float, help="seconds of the warm-up before each run")
    parser.add_argument("--requests", type=int,
                        help="at most this many requests in a run (the C load generator)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    base = FULL if args.full else QUICK
    settings = Settings(
        rounds=args.rounds if args.rounds is not None else base.rounds,
        duration=args.duration if args.duration is not None else base.duration,
        warmup=args.warmup if args.warmup is not None else base.warmup,
        requests=args.requests if args.requests is not None else base.requests)
    if settings.rounds < 1 or settings.duration <= 0 or settings.requests < 1:
        parser.error("--rounds, --duration and --requests must be positive")
    try:
        loads = [LOADS_BY_NUMBER[int(n)] for n in args.loads.split(",") if n.strip()]
    except (KeyError, ValueError):
        parser.error(f"--loads: numbers among {sorted(LOADS_BY_NUMBER)}")
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    if not impls or any(impl not in IMPLS + FLOORS for impl in impls):
        parser.error(f"--impls: names among {', '.join(IMPLS + FLOORS)}")
    return args, settings, loads, impls


def main(argv=None):
    args, settings, loads, impls = parse_args(sys.argv[1:] if argv is None else argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    from . import _cores

    if "cython" in impls and "cython" not in _cores.CORES:
        log("fastserver's compiled core is not built here: the cython column is left out")
        impls = tuple(impl for impl in impls if impl != "cython")
    if "c-loop" in impls and not sys.platform.startswith("linux"):
        log("the C event loop needs epoll (Linux): the c-loop column is left out")
        impls = tuple(impl for impl in impls if impl != "c-loop")
    skipped = []
    if any(load.client == "wrk" for load in loads) and shutil.which("wrk") is None:
        for load in loads:
            if load.client == "wrk":
                skipped.append(f"load {load.number} ({load.title}) skipped: wrk is not installed "
                               f"(e.g. apt-get install wrk)")
        loads = [load for load in loads if load.client != "wrk"]
    for line in skipped:
        log(line)
    loadgen = None
    if any(load.client != "wrk" for load in loads):
        loadgen = build_loadgen()
    started = time.monotonic()
    report = {
        "command": " ".join(["python -m fastserver.bench", *(sys.argv[1:] if argv is None
                                                             else argv)]),
        "settings": settings.__dict__,
        "impls": list(impls),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": _loadavg(),
        "skipped": skipped,
        "loads": [],
    }
    with tempfile.TemporaryDirectory(prefix="fastserver-bench-") as tmp:
        docroot = os.path.join(tmp, "www")
        os.mkdir(docroot)
        with open(os.path.join(docroot, HTTP_FILE), "wb") as f:
            f.write((b"fastserver benchmark file\n" * 64)[:HTTP_FILE_SIZE])
        for load in loads:
            log(f"load {load.number}: {load.title}")
            results = run_load(load, impls, settings, loadgen, docroot, tmp, log)
            report["loads"].append({"load": load.number, "title": load.title,
                                    "client": load.client, "conns": load.conns,
                                    "results": results})
    report["elapsed_s"] = time.monotonic() - started
    report["loadavg_after"] = _loadavg()
    report["warnings"] = warnings_for(report)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"fastserver load benchmark: {report['command']}")
    print(f"Python {report['python']}, {report['platform']}, {report['cpus']} CPUs; "
          f"{settings.rounds} round{'s' if settings.rounds != 1 else ''} of {settings.duration} s; "
          f"{report['elapsed_s']:.0f} s in all; load average {report['loadavg_before']} "
          f"before, {report['loadavg_after']} after")
    seen = {}
    for entry in report["loads"]:
        for impl, result in entry["results"].items():
            seen.setdefault(impl, (result["implementation"], result["streams"]))
    print("; ".join(f"{IMPL_LABELS[impl]}: {name}, stream files from {streams}"
                    for impl, (name, streams) in seen.items()
                    if impl != "stdlib" and impl not in FLOORS))
    print()
    print(markdown(report))
    for line in skipped + report["warnings"]:
        print(f"\nnote: {line}", end="")
    print()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"fastserver.bench: {exc}", file=sys.stderr)
        sys.exit(1)
