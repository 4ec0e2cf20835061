"""Idle flood: what a threading server does while many clients connect and send nothing.

For each server (the stdlib's ThreadingTCPServer; fastserver's on each core as it comes, with
``max_threads``, and with ``max_threads`` and ``first_data_timeout``), the script starts the
server in a child process, opens ``--idle`` connections that send nothing, then times one
well-behaved client (send a line, read the reply) while it samples the server's thread count and
resident memory. It prints a Markdown table::

    python bench/idle_flood.py                 # 1000 idle connections, handler timeout 1 s
    python bench/idle_flood.py --idle 200 --deadline 5

Everything talks to 127.0.0.1 only; every wait is bounded (``--deadline`` for the client).
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

# The child: a ThreadingTCPServer whose handler echoes one line, with StreamRequestHandler's
# timeout; it prints its port, then answers each "stats" line on stdin with "<threads> <rss>".
SERVER = """\
import os, resource, sys, threading

core, max_threads, handler_timeout, backlog, first_data = sys.argv[1:6]
if core == "stdlib":
    import socketserver as ss
else:
    import fastserver as ss
    ss._use_core(core)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

class Handler(ss.StreamRequestHandler):
    timeout = float(handler_timeout)

    def handle(self):
        self.wfile.write(b"ok " + self.rfile.readline())

class Server(ss.ThreadingTCPServer):
    request_queue_size = int(backlog)
    daemon_threads = True
    max_threads = None if max_threads == "-" else int(max_threads)
    first_data_timeout = None if first_data == "-" else float(first_data)

    def handle_error(self, request, client_address):
        pass  # idle clients time out: expected, not worth a traceback each

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

server = Server(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
print(server.server_address[1], flush=True)
for line in sys.stdin:
    if line.strip() != "stats":
        break
    print(threading.active_count(), rss(), flush=True)
server.shutdown()
server.server_close()
"""


class Child:
    """The server process and its stats channel (one question at a time)."""

    def __init__(self, core, max_threads, handler_timeout, backlog, first_data_timeout):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [SRC, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, core, "-" if max_threads is None else str(max_threads),
             str(handler_timeout), str(backlog),
             "-" if first_data_timeout is None else str(first_data_timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lock = threading.Lock()
        self.port = int(self._line())

    def _line(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server child exited ({self.proc.wait()})")
        return line

    def stats(self):
        with self.lock:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            threads, rss = self._line().split()
        return int(threads), int(rss)

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def well_behaved_client(port, deadline):
    """Seconds until the reply, or None if it did not come within ``deadline``."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=deadline) as client:
            client.sendall(b"hello\n")
            reply = b""
            while chunk := client.recv(4096):
                reply += chunk
                if time.monotonic() - start > deadline:
                    return None
    except (TimeoutError, OSError):
        return None
    return time.monotonic() - start if reply == b"ok hello\n" else None


def measure(name, core, max_threads, first_data_timeout, args):
    child = Child(core, max_threads, args.handler_timeout, min(args.idle + 64, 4096),
                  first_data_timeout)
    idle = []
    try:
        base_threads, base_rss = child.stats()
        peak = {"threads": base_threads, "rss": base_rss}
        stop = threading.Event()

        def sample():
            while not stop.wait(0.05):
                threads, rss = child.stats()
                peak["threads"] = max(peak["threads"], threads)
                peak["rss"] = max(peak["rss"], rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for _ in range(args.idle):
            idle.append(socket.create_connection(("127.0.0.1", child.port), timeout=10))
        time.sleep(0.2)  # let the server take what it takes
        latency = well_behaved_client(child.port, args.deadline)
        stop.set()
        sampler.join(10)
    finally:
        for client in idle:
            client.close()
        child.close()
    return {
        "server": name,
        "threads": peak["threads"],
        "rss": peak["rss"] / 2**20,
        "growth": (peak["rss"] - base_rss) / 2**20,
        "latency": latency,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (1000)")
    parser.add_argument("--handler-timeout", type=float, default=1.0,
                        help="StreamRequestHandler.timeout in seconds (1)")
    parser.add_argument("--max-threads", type=int, default=8, help="fastserver's max_threads (8)")
    parser.add_argument("--deadline", type=float, default=10.0,
                        help="seconds the well-behaved client waits for its reply (10)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 256), hard))

    sys.path.insert(0, SRC)
    import fastserver

    timeout = args.handler_timeout
    runs = [("stdlib ThreadingTCPServer", "stdlib", None, None)]
    cores = ["cython", "python"] if "cython" in fastserver._cores.CORES else ["python"]
    for core in cores:
        runs.append((f"fastserver ({core})", core, None, None))
        runs.append((f"fastserver ({core}), max_threads={args.max_threads}", core,
                     args.max_threads, None))
        runs.append((f"fastserver ({core}), max_threads={args.max_threads}, "
                     f"first_data_timeout={timeout:g}", core, args.max_threads, timeout))
    results = []
    for name, core, max_threads, first_data_timeout in runs:
        print(f"... {name}", file=sys.stderr, flush=True)
        results.append(measure(name, core, max_threads, first_data_timeout, args))

    print(f"\n{args.idle} idle connections (handler timeout {args.handler_timeout:g} s), then "
          f"one well-behaved client; peak figures of the server process:\n")
    print("| server | threads | RSS (MiB) | RSS growth (MiB) | client's reply |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        reply = (f"{r['latency'] * 1000:.0f} ms" if r["latency"] is not None
                 else f"none within {args.deadline:g} s")
        print(f"| {r['server']} | {r['threads']} | {r['rss']:.1f} | {r['growth']:+.1f} | "
              f"{reply} |")


if __name__ == "__main__":
    main()
