"""Scaling benchmark: fastserver with ``workers = 1, 2, ... N`` against the stdlib's one process.

    PYTHONPATH=src python bench/scaling.py [--quick] [--max-workers N] [--json]

The server is load 1 of ``python -m fastserver.bench`` (a ``BaseRequestHandler`` that does
``recv(1024)`` then ``sendall``; the C load generator opens a connection per request), on
``ThreadingTCPServer`` and on plain ``TCPServer``. Each kind runs as:

- ``stdlib``: the standard library's ``socketserver``, one process;
- fastserver, ``workers = 1``: one process;
- fastserver, ``workers = N`` (N = 2 ... --max-workers), two ways of sharing the address:
  ``inherited``: the listening socket that the workers inherit across fork() (what
  ``fastserver.workers`` does: one accept queue for all), and ``SO_REUSEPORT``: N processes each
  binding its own listening socket to the same port with ``allow_reuse_port = True`` (the kernel
  spreads the connections over N accept queues by a hash of the addresses). That variant exists
  only here: the bench forks N plain fastserver servers itself.

Figures per run, as medians over interleaved rounds (each round measures every configuration once,
in an order that rotates from round to round): requests per second as the load generators count
them (``--clients`` processes at once, ``--conns`` connections split between them); the server's
CPU per request, summed over all of its processes (each process answers
``getrusage(RUSAGE_SELF)`` when asked, just before and just after the measured run: every worker
and the supervising parent); the clients' CPU; and how the requests spread over the workers (each
worker counts the requests its handler served).

The server subprocess and its protocol, the measurement (warm-up, server CPU before and after,
the load generator run), the interleaved rounds and their medians, the settings and the table
format are ``fastserver.bench``'s: this file adds its server script, running several load
generators at once, the spread over the workers, and its table. See bench/README.md, "Scaling".
"""

import argparse
import dataclasses
import functools
import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from fastserver import _cores, bench

KINDS = {"threading": "ThreadingTCPServer", "single": "TCPServer"}
SHARES = {"one": "one process", "inherited": "inherited socket", "reuseport": "SO_REUSEPORT"}
QUICK = bench.Settings(rounds=3, duration=0.7, warmup=0.1, requests=10_000_000)
STANDARD = bench.Settings(rounds=5, duration=2.0, warmup=0.3, requests=50_000_000)
CONNS = 32  # concurrent connections, over all the load generators: keep N workers busy

# --- the server subprocess ----------------------------------------------------------------------

# Run as `python -c SCALING_SCRIPT KIND IMPL WORKERS SHARE LIFETIME`. It speaks
# fastserver.bench's protocol: a hello line (JSON: port, implementation, pids), then on stdin
# "cpu" -> a JSON line: user and system seconds and context switches summed over the server's
# processes, and the requests each worker has served so far; "quit" or EOF -> it stops every
# worker and exits. Each worker process runs an agent thread that answers the parent on a pair of
# pipes of its own; an agent whose parent is gone exits (no orphan serves on). Every process
# gives up after LIFETIME seconds in any case.
SCALING_SCRIPT = r'''
import itertools, json, os, resource, select, signal, socket, sys, threading, time, traceback

kind, impl, workers, share, lifetime = sys.argv[1:6]
workers, deadline = int(workers), time.monotonic() + float(lifetime)
if impl == "stdlib":
    import socketserver
else:
    import fastserver
    fastserver._use_core(impl)
    socketserver = fastserver

served = itertools.count()  # next() on it is atomic: the handler threads count without a lock


def served_so_far():
    return int(repr(served)[len("count("):-1])  # "count(N)": N requests served so far


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request.recv(1024)
        self.request.sendall(data)
        next(served)


class Server(socketserver.ThreadingTCPServer if kind == "threading" else socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 1024  # per listening socket
    graceful_timeout = 5.0

    def server_bind(self):
        # What allow_reuse_port = True does, on Python 3.10 too (its socketserver, which
        # fastserver follows, has no allow_reuse_port).
        if share == "reuseport":
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def serve_forever(self, poll_interval=0.5):
        index = getattr(self, "worker_id", None)
        if index is not None:  # a worker that fastserver.workers forked: answer the parent too
            threading.Thread(target=agent, args=(index, None), daemon=True).start()
        super().serve_forever(poll_interval)


def usage(index):
    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"index": index, "pid": os.getpid(), "user": u.ru_utime, "system": u.ru_stime,
            "switches": u.ru_nvcsw + u.ru_nivcsw, "served": served_so_far()}


# one channel per worker process: the parent writes commands on one pipe, the worker answers on
# the other (lines shorter than PIPE_BUF: each write arrives whole)
channels = []
if share != "one":
    for _ in range(workers):
        cmd_r, cmd_w = os.pipe()
        ans_r, ans_w = os.pipe()
        channels.append((cmd_r, cmd_w, ans_r, ans_w))
answers = [b""] * len(channels)
restarts = [0] * len(channels)


def agent(index, stop):
    """A worker's control thread: "cpu" -> its usage on its answer pipe; "quit" -> stop()."""
    cmd_r, ans_w = channels[index][0], channels[index][3]
    parent = os.getppid()
    os.write(ans_w, (json.dumps(dict(usage(index), ready=True)) + "\n").encode())
    pending = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([cmd_r], [], [], 1.0)
        if os.getppid() != parent:
            os._exit(1)  # the parent died without stopping us
        if not ready:
            continue
        pending += os.read(cmd_r, 256)
        while b"\n" in pending:
            command, pending = pending.split(b"\n", 1)
            if command == b"cpu":
                os.write(ans_w, (json.dumps(usage(index)) + "\n").encode())
            elif command == b"quit" and stop is not None:
                stop()
                return
    os._exit(1)


def answer(index, timeout):
    """The next answer of worker ``index`` (a ready line of a replaced worker is skipped)."""
    ans_r = channels[index][2]
    limit = time.monotonic() + timeout
    while True:
        while b"\n" in answers[index]:
            line, answers[index] = answers[index].split(b"\n", 1)
            reply = json.loads(line)
            if not reply.pop("ready", False):
                return reply
            restarts[index] += 1
        left = limit - time.monotonic()
        ready, _, _ = select.select([ans_r], [], [], max(0.0, left))
        if not ready:
            raise RuntimeError(f"worker {index} did not answer within {timeout} s")
        data = os.read(ans_r, 4096)
        if not data:
            raise RuntimeError(f"worker {index}'s answer pipe closed")
        answers[index] += data


def wait_ready(timeout):
    """The pids of the workers once each has said it is ready (bound and about to serve)."""
    pids = []
    for index in range(len(channels)):
        restarts[index] -= 1  # the first ready line is not a restart
        os.write(channels[index][1], b"cpu\n")
        pids.append(answer(index, timeout)["pid"])
    return pids


def snapshot():
    total = usage(None)
    if not channels:
        return {"user": total["user"], "system": total["system"], "switches": total["switches"],
                "served": [total["served"]], "restarts": 0}
    for channel in channels:
        os.write(channel[1], b"cpu\n")
    replies = [answer(index, 10.0) for index in range(len(channels))]
    return {"user": total["user"] + sum(r["user"] for r in replies),
            "system": total["system"] + sum(r["system"] for r in replies),
            "switches": total["switches"] + sum(r["switches"] for r in replies),
            "served": [r["served"] for r in replies], "restarts": sum(restarts)}


def control(port, pids, stop):
    """Say hello, then answer the bench on stdin until "quit", EOF or the deadline; stop()."""
    implementation = "stdlib" if impl == "stdlib" else fastserver.IMPLEMENTATION
    print(json.dumps({"port": port, "implementation": implementation, "streams": None,
                      "pids": pids}), flush=True)
    stdin, pending, running = sys.stdin.fileno(), b"", True
    while running and time.monotonic() < deadline:
        ready, _, _ = select.select([stdin], [], [], 1.0)
        if not ready:
            continue
        data = os.read(stdin, 4096)
        if not data:
            break
        pending += data
        while running and b"\n" in pending:
            command, pending = pending.split(b"\n", 1)
            if command == b"cpu":
                print(json.dumps(snapshot()), flush=True)
            elif command == b"quit":
                running = False
    stop()


def control_thread(server, port):
    try:
        pids = wait_ready(20.0) if channels else [os.getpid()]
        control(port, pids, server.shutdown)
    except BaseException:
        traceback.print_exc()
        server.shutdown()


def reuseport_worker(index, port, placeholder):
    status = 0
    try:
        placeholder.close()
        server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=agent, args=(index, server.shutdown), daemon=True).start()
        server.serve_forever()
        server.server_close()
    except BaseException:
        status = 1
        traceback.print_exc()
    finally:
        os._exit(status)


def run_reuseport():
    # hold the port with a bound socket that does not listen (it gets no connections) while the
    # workers bind theirs to it
    placeholder = socket.socket()
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    placeholder.bind(("127.0.0.1", 0))
    port = placeholder.getsockname()[1]
    children = []

    def stop():
        for channel in channels:
            try:
                os.write(channel[1], b"quit\n")
            except OSError:
                pass
        limit = time.monotonic() + 10.0
        while children and time.monotonic() < limit:
            for pid in list(children):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.remove(pid)
            time.sleep(0.02)
        while children:  # still running after 10 s: killed
            pid = children.pop()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    try:
        for index in range(workers):
            pid = os.fork()
            if pid == 0:
                reuseport_worker(index, port, placeholder)  # never returns
            children.append(pid)
        control(port, wait_ready(20.0), stop)
    except BaseException:
        traceback.print_exc()
        stop()


if share == "reuseport":
    run_reuseport()
else:
    server = Server(("127.0.0.1", 0), Handler)
    if workers > 1:
        server.workers = workers
    threading.Thread(target=control_thread, args=(server, server.server_address[1]),
                     daemon=True).start()
    server.serve_forever()
    server.server_close()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
'''


@dataclass(frozen=True)
class Config:
    kind: str  # a key of KINDS
    impl: str  # "stdlib", or the fastserver core: "cython" or "python"
    workers: int
    share: str  # a key of SHARES

    @property
    def name(self):
        return f"{self.kind}-{self.impl}-{self.workers}-{self.share}"

    @property
    def label(self):
        if self.impl == "stdlib":
            return "stdlib"
        return "fastserver" if self.impl == "cython" else "fastserver pure"


def configs_for(kind, impl, max_workers, reuseport):
    configs = [Config(kind, "stdlib", 1, "one"), Config(kind, impl, 1, "one")]
    for workers in range(2, max_workers + 1):
        configs.append(Config(kind, impl, workers, "inherited"))
        if reuseport:
            configs.append(Config(kind, impl, workers, "reuseport"))
    return configs


class ScalingServer(bench.ServerProcess):
    """One configuration's server subprocess (the parent and its workers)."""

    def __init__(self, config, logdir, lifetime):
        self.snapshots = []
        argv = bench.python_argv(SCALING_SCRIPT, config.kind, config.impl, str(config.workers),
                                 config.share, str(lifetime))
        super().__init__(argv, os.path.join(logdir, f"server-{config.name}.log"), config.impl)
        self.pids = sorted({self.proc.pid, *self.hello["pids"]})  # the parent and its workers

    def cpu(self):
        """fastserver.bench's figures, summed over every process; the snapshot is kept."""
        snap = json.loads(self.ask("cpu", 30.0))
        self.snapshots.append(snap)
        return snap["user"], snap["system"], snap["switches"]

    def served_last_run(self):
        """Requests each worker served between the last two snapshots (bench.measure takes one
        just before and one just after the measured run)."""
        before, after = self.snapshots[-2]["served"], self.snapshots[-1]["served"]
        return [b - a for a, b in zip(before, after, strict=True)]

    def restarts(self):
        return self.snapshots[-1]["restarts"] if self.snapshots else 0


def spread(served):
    """The busiest worker's requests ÷ an even share (1.0: perfectly even); None for one."""
    total = sum(served)
    if len(served) < 2 or not total:
        return None
    return max(served) * len(served) / total


def _split(total, parts, index):
    return total // parts + (index < total % parts)


def run_clients(clients, exe, port, mode, conns, requests, duration):
    """``clients`` load generators at once, the connections and requests split between them; one
    result in bench.run_loadgen's shape: requests, errors, CPU and req/s summed, elapsed the
    longest, p50 the median of the clients' p50, p99 the highest p99."""
    if clients == 1:
        return bench.run_loadgen(exe, port, mode, conns, requests, duration)
    results, failures = [None] * clients, []

    def one(index):
        try:
            results[index] = bench.run_loadgen(
                exe, port, mode, max(1, _split(conns, clients, index)),
                max(1, _split(requests, clients, index)), duration)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 60)  # run_loadgen kills its client at duration + 30
    if failures:
        raise failures[0]
    if any(result is None for result in results):
        raise bench.BenchError("a load generator did not finish")
    p50s = [r["lat_us"].get("p50") for r in results if r["lat_us"].get("p50") is not None]
    p99s = [r["lat_us"].get("p99") for r in results if r["lat_us"].get("p99") is not None]
    return {
        "mode": mode,
        "requests": sum(r["requests"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "elapsed_s": max(r["elapsed_s"] for r in results),
        "rps": sum(r["rps"] for r in results),
        "lat_us": {"p50": bench.median(p50s), "p99": max(p99s) if p99s else None},
        "client_cpu_s": sum(r["client_cpu_s"] for r in results),
    }


def measure(server, load, settings, loadgen, clients):
    figures = bench.measure(server, load, settings, loadgen,
                            run=functools.partial(run_clients, clients))
    served = server.served_last_run()
    elapsed = figures["requests"] / figures["rps"] if figures["rps"] else None
    figures.update({
        "served": served,
        "served_total": sum(served),
        "spread": spread(served),
        "server_busy": figures["server_cpu_s"] / elapsed if elapsed else None,
        "elapsed_s": elapsed,
    })
    return figures


def run_kind(kind, configs, settings, loadgen, clients, conns, logdir, lifetime, log):
    """Every round of one kind's configurations, interleaved; per configuration, the rounds and
    their medians."""
    load = bench.Load(0, f"{KINDS[kind]}, a connection per request", kind, "connect", conns)

    def log_round(number, config, figures):
        log(f"  {kind} round {number + 1} {config.label} workers={config.workers} "
            f"{config.share}: {bench.fmt(figures['rps'], 0)} req/s, "
            f"{bench.fmt(figures['server_us_per_req'], 1)} us/req, "
            f"served {figures['served']}, {figures['errors']} errors")

    servers, rounds = bench.measure_rounds(
        configs, lambda config: ScalingServer(config, logdir, lifetime),
        lambda server: measure(server, load, settings, loadgen, clients), settings.rounds,
        log_round)
    results = []
    for config in configs:
        tracebacks, _ = servers[config].tracebacks()
        results.append({
            "kind": kind, "impl": config.impl, "label": config.label,
            "implementation": servers[config].implementation,
            "workers": config.workers, "share": config.share,
            "median": bench.medians(rounds[config], leave_out=("served",)),
            "rounds": rounds[config],
            "server_tracebacks": tracebacks,
            "worker_restarts": servers[config].restarts(),
            "pids": servers[config].pids,
        })
    base = results[0]["median"]["rps"]  # stdlib
    one = results[1]["median"]["rps"]  # fastserver, one process
    for result in results:
        rps = result["median"]["rps"]
        result["vs_stdlib"] = rps / base if rps and base else None
        result["vs_one_worker"] = rps / one if rps and one else None
    return results


def _shares(result):
    """The workers' shares of the requests in the median round (by total served), e.g. 52/48."""
    rows = result["rounds"]
    if result["workers"] < 2 or not rows:
        return "-"
    ordered = sorted(rows, key=lambda r: r["served_total"])
    served = ordered[len(ordered) // 2]["served"]
    total = sum(served)
    if not total:
        return "-"
    shares = sorted((100 * n / total for n in served), reverse=True)
    if len(shares) <= 4:
        return "/".join(f"{s:.0f}" for s in shares)
    return f"{shares[-1]:.0f}–{shares[0]:.0f}"


def _x(value):
    return "-" if value is None else f"{value:.2f}x"


def markdown(report):
    head = ["server", "workers", "address shared by", "req/s", "÷ stdlib", "÷ 1 worker",
            "server CPU µs/req", "server cores busy", "server ctx switches/req",
            "client CPU µs/req", "client cores busy",
            "spread", "shares %", "errors"]
    rows = []
    for result in report["results"]:
        med = result["median"]
        errors = sum(r["errors"] for r in result["rounds"])
        rows.append([
            f"{KINDS[result['kind']]} ({result['label']})", str(result["workers"]),
            SHARES[result["share"]], bench.fmt(med["rps"], 0), _x(result["vs_stdlib"]),
            _x(result["vs_one_worker"]) if result["impl"] != "stdlib" else "-",
            bench.fmt(med["server_us_per_req"], 1), bench.fmt(med["server_busy"], 2),
            bench.fmt(med["server_switches_per_req"], 2),
            bench.fmt(med["client_us_per_req"], 1),
            bench.fmt(med["client_busy"], 2),
            _x(med["spread"]) if med["spread"] is not None else "-", _shares(result),
            str(errors)])
    lines = bench.table(head, rows)
    lines += ["", "Medians of interleaved rounds. ÷ stdlib, ÷ 1 worker: req/s over the stdlib's "
                  "req/s and over fastserver's with workers = 1, same server kind. server CPU: "
                  "summed over every process of the server (workers and supervising parent). "
                  "cores busy: CPU seconds per second of the run (client: every load "
                  "generator process; on this machine both compete for the same cores). "
                  "ctx switches: voluntary and involuntary, of every server process. "
                  "spread: the busiest "
                  "worker's requests ÷ an even share (1.00x: even); shares: each worker's "
                  "share of the requests in the median round."]
    return "\n".join(lines)


def notes_for(report):
    notes = []
    cpus = report["cpus"]
    clients = report["clients"]
    client = max(r["median"]["client_busy"] or 0 for r in report["results"])
    busiest = max((r["median"]["server_busy"] or 0) + (r["median"]["client_busy"] or 0)
                  for r in report["results"])
    if report["max_workers"] + clients > cpus or busiest > 0.8 * cpus:
        notes.append(f"this machine has {cpus} CPUs and the load generator"
                     f"{'s run' if clients > 1 else ' runs'} on them too (up to {client:.2f} "
                     f"cores here; server + client kept up to {busiest:.2f} of the {cpus} "
                     f"cores busy): N workers get less than N cores, and the ratios are lower "
                     f"than on a machine with cores to spare")
    for result in report["results"]:
        name = f"{KINDS[result['kind']]} {result['label']} workers={result['workers']} " \
               f"{result['share']}"
        errors = sum(r["errors"] for r in result["rounds"])
        if errors:
            notes.append(f"{name}: {errors} client errors")
        if result["server_tracebacks"]:
            notes.append(f"{name}: {result['server_tracebacks']} tracebacks in the server's "
                         f"stderr")
        if result["worker_restarts"]:
            notes.append(f"{name}: {result['worker_restarts']} workers were replaced")
        busy = (result["median"]["client_busy"] or 0) / clients
        if busy > 0.9:
            notes.append(f"{name}: the load generator was busy {busy:.0%} of a core "
                         f"({'each, ' if clients > 1 else ''}single-threaded): the req/s may "
                         f"be its limit (try --clients)")
    return notes


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="bench/scaling.py",
        description="Scaling benchmark: fastserver with workers = 1..N (inherited socket and "
                    "SO_REUSEPORT) against the standard library's single process, on 127.0.0.1.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.rounds} rounds of {QUICK.duration} s (default: "
                             f"{STANDARD.rounds} rounds of {STANDARD.duration} s)")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1,
                        help="measure workers = 1 .. this (default: os.cpu_count())")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="server kinds: threading (ThreadingTCPServer), single (TCPServer)")
    parser.add_argument("--core", choices=sorted(_cores.CORES),
                        help="fastserver's core (default: the one fastserver uses here)")
    parser.add_argument("--clients", type=int, default=max(2, (os.cpu_count() or 1) // 4),
                        help="load generator processes run at once (default: a quarter of the "
                             "CPUs, at least 2: one is single-threaded, and saturates a core at "
                             "some 25,000 connections per second)")
    parser.add_argument("--conns", type=int, default=CONNS,
                        help=f"concurrent connections, split between the load generators "
                             f"(default {CONNS})")
    parser.add_argument("--no-reuseport", action="store_true",
                        help="leave out the SO_REUSEPORT configurations")
    parser.add_argument("--rounds", type=int, help="rounds (overrides --quick)")
    parser.add_argument("--duration", type=float, help="seconds of each measured run")
    parser.add_argument("--warmup", type=float, help="seconds of the warm-up before each run")
    parser.add_argument("--requests", type=int, help="at most this many requests in a run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    settings = bench.settings_from(args, QUICK if args.quick else STANDARD, parser)
    if args.max_workers < 1 or args.clients < 1 or args.conns < args.clients:
        parser.error("--max-workers and --clients must be positive, --conns at least --clients")
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    if not kinds or any(kind not in KINDS for kind in kinds):
        parser.error(f"--kinds: names among {', '.join(KINDS)}")
    return args, settings, kinds


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, settings, kinds = parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    if not hasattr(os, "fork") or not hasattr(os, "wait4"):
        raise bench.BenchError("the scaling benchmark needs a Unix (fork, wait4)")
    impl = args.core or _cores.active.name
    reuseport = not args.no_reuseport and hasattr(socket, "SO_REUSEPORT")
    if not reuseport and not args.no_reuseport:
        log("SO_REUSEPORT is missing here: those configurations are left out")
    loadgen = bench.build_loadgen()
    configs = {kind: configs_for(kind, impl, args.max_workers, reuseport) for kind in kinds}
    runs = settings.rounds * sum(len(c) for c in configs.values())
    lifetime = 300 + 4 * runs * (settings.duration + settings.warmup + 5)
    started = time.monotonic()
    report = {
        "command": " ".join(["PYTHONPATH=src python bench/scaling.py", *argv]),
        "settings": dataclasses.asdict(settings),
        "clients": args.clients,
        "conns": args.conns,
        "max_workers": args.max_workers,
        "core": impl,
        **bench.machine(),
        "loadavg_before": bench.loadavg(),
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="fastserver-scaling-") as tmp:
        for kind in kinds:
            log(f"{KINDS[kind]}: {', '.join(c.name for c in configs[kind])}")
            report["results"] += run_kind(kind, configs[kind], settings, loadgen, args.clients,
                                          args.conns, tmp, lifetime, log)
    report["elapsed_s"] = time.monotonic() - started
    report["loadavg_after"] = bench.loadavg()
    report["notes"] = notes_for(report)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    implementations = sorted({r["implementation"] for r in report["results"]
                              if r["impl"] != "stdlib"})
    print(f"fastserver scaling benchmark: {report['command']}")
    print(f"Python {report['python']}, {report['platform']}, {report['cpus']} CPUs; fastserver "
          f"core {', '.join(implementations)}; load generator: connect mode, {args.clients} "
          f"process{'es' if args.clients > 1 else ''}, {args.conns} concurrent connections in "
          f"all; {settings.rounds} round{'s' if settings.rounds != 1 else ''} "
          f"of {settings.duration} s; {report['elapsed_s']:.0f} s in all; load average "
          f"{report['loadavg_before']} before, {report['loadavg_after']} after")
    print()
    print(bench.with_notes(markdown(report), report["notes"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"bench/scaling.py: {exc}", file=sys.stderr)
        sys.exit(1)
