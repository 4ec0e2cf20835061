"""Measuring: one measured run of a server, interleaved rounds of several, their medians.

A measured run: the warm-up, the server's CPU just before, the client's run, the server's CPU
just after. Rounds are interleaved: each round measures every server once, in an order that
rotates from round to round, so that a burst of other work on the machine hits them all alike.
A whole run's report records the machine it ran on and its load average before and after.
"""

import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

from .clients import run_loadgen, run_paced, run_wrk, warm_http
from .loads import FLOORS, PEERS, BenchError, Unavailable, is_paced, paced_conns, serves
from .report import fmt
from .servers import make_docroot, proc_cpu, proc_status, start_server
from .tools import build_paced

SAMPLE_EVERY = 0.05  # seconds between two looks at a paced load's server (threads, RSS)
#: The paced loads' implementations that are not fastserver: no max_threads for them.
FOREIGN = PEERS + FLOORS


def measure(server, load, settings, loadgen, run=run_loadgen):
    """Warm the server up, then one measured run; the figures of that run. ``run`` runs the
    load generator (bench/scaling.py passes one that runs several at once)."""
    if load.client == "wrk":
        warm_http(server.port, tls=load.tls)
    elif settings.warmup > 0:
        run(loadgen, server.port, load.client, load.conns, max(1, settings.requests // 10),
            settings.warmup)
    user0, system0, switches0 = server.cpu()
    if load.client == "wrk":
        result = run_wrk(server.port, load.conns, settings.duration, load.close, load.tls)
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


def median(values):
    """The median of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def medians(rounds, leave_out=()):
    """Figure by figure, the median over ``rounds`` (dicts of figures, one per round)."""
    return {key: median([r[key] for r in rounds]) for key in rounds[0] if key not in leave_out}


def measure_rounds(keys, start, measure_one, rounds, log_round):
    """Start a server per key (``start(key)``), then ``rounds`` interleaved rounds of
    ``measure_one(server)``, each result passed to ``log_round(round index, key, figures)``; stop
    every server, whatever happens. (the servers by key, the figures of each key by round). A key
    whose ``start()`` returns None is left out of both."""
    servers = {}
    figures = {}
    try:
        for key in keys:
            server = start(key)
            if server is not None:
                servers[key] = server
                figures[key] = []
        keys = list(servers)
        for number in range(rounds if keys else 0):
            shift = number % len(keys)
            for key in keys[shift:] + keys[:shift]:
                result = measure_one(servers[key])
                figures[key].append(result)
                log_round(number, key, result)
    finally:
        for server in servers.values():
            server.stop()
    return servers, figures


class Sampler:
    """Looks at a process's threads and resident memory every SAMPLE_EVERY seconds, in a thread
    of its own, from start() to stop(); keeps the most of each."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_threads = self.peak_rss = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def look(self):
        threads, rss = proc_status(self.pid)
        if threads is not None:
            self.peak_threads = max(threads, self.peak_threads or 0)
        if rss is not None:
            self.peak_rss = max(rss, self.peak_rss or 0)
        return threads, rss

    def _run(self):
        while not self._stop.is_set():
            self.look()
            self._stop.wait(SAMPLE_EVERY)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.look()


def measure_paced(server, load, settings, exe):
    """One run of a paced load against a fresh server: the paced client's ramp (its connections
    open, each sends its first request), then its measured periods. The server's CPU is taken when
    the ramp is over and when the result is in (every connection still open): CPU per reply is
    that of the measured periods, the ramp's accepts left out. Its threads and resident memory are
    looked at all along: the peak threads, and the RSS growth (the peak over the RSS before the
    first connection) per connection. The CPU comes from /proc (``proc_cpu``), where there is one:
    no context switches then."""
    conns = paced_conns(load, settings)
    pid = server.proc.pid
    sampler = Sampler(pid)
    threads0, rss0 = sampler.look()
    marks = {}

    def cpu():
        figures = proc_cpu(pid)
        return (*figures, None) if figures is not None else server.cpu()

    def at_ramp():
        marks["before"] = cpu()

    def at_result():
        marks["after"] = cpu()
        marks["threads_end"], marks["rss_end"] = sampler.look()

    sampler.start()
    try:
        result = run_paced(exe, server.port, load.client[len("paced-"):], conns, settings.period,
                           settings.periods, at_ramp, at_result)
    finally:
        sampler.stop()
    if "before" not in marks:
        raise BenchError("the paced client gave no ramp line")
    (user0, system0, switches0), (user1, system1, switches1) = marks["before"], marks["after"]
    server_cpu = (user1 - user0) + (system1 - system0)
    replies = result["requests"]
    growth = None
    if rss0 is not None and sampler.peak_rss is not None:
        growth = (sampler.peak_rss - rss0) / conns
    wall = result["client_wall_s"]
    return {
        "conns": conns,
        "ramped": result["ramped"],
        "answered": result["answered"],
        "ramp_periods": result["ramp_periods"],
        "requests": replies,
        "sent": result["sent"],
        "skipped": result["skipped"],
        "unanswered": result["unanswered"],
        "errors": result["errors"],
        "closed_idle": result["closed_idle"],
        "rps": result["rps"],
        "server_cpu_s": server_cpu,
        "server_user_s": user1 - user0,
        "server_sys_s": system1 - system0,
        "client_cpu_s": result["client_cpu_s"],
        "server_us_per_req": server_cpu / replies * 1e6 if replies else None,
        "server_user_us_per_req": (user1 - user0) / replies * 1e6 if replies else None,
        "server_switches_per_req": (switches1 - switches0) / replies
        if replies and switches0 is not None else None,
        "client_us_per_req": result["client_cpu_s"] / replies * 1e6 if replies else None,
        "client_busy": result["client_cpu_s"] / wall if wall else None,
        "p50_us": result["lat_us"].get("p50") if replies else None,
        "p99_us": result["lat_us"].get("p99") if replies else None,
        "threads_before": threads0,
        "peak_threads": sampler.peak_threads,
        "threads_end": marks.get("threads_end"),
        "rss_before_kib": rss0,
        "peak_rss_kib": sampler.peak_rss,
        "rss_end_kib": marks.get("rss_end"),
        "rss_growth_kib_per_conn": growth,
    }


def run_paced_load(load, impls, settings, docroot, logdir, log, baseline=None):
    """Every round of a paced load: each round starts a fresh server per implementation, in an
    order that rotates, measures it once (``measure_paced``) and stops it, so that each run's
    threads and memory start from a new process. fastserver's servers get
    ``settings.max_threads``. Per implementation, its rounds and their medians, or
    ``{"unavailable": why}``."""
    exe = build_paced()
    unavailable = {}
    rounds = {impl: [] for impl in impls}
    seen = {}
    tracebacks = {impl: [0, 0] for impl in impls}
    exceptions = {}
    for number in range(settings.rounds):
        order = [impl for impl in impls if impl not in unavailable]
        if not order:
            break
        shift = number % len(order)
        for impl in order[shift:] + order[:shift]:
            limit = settings.max_threads if impl not in ("stdlib", *FOREIGN) else 0
            try:
                server = start_server(load, impl, docroot, logdir, baseline, max_threads=limit)
            except Unavailable as exc:
                log(f"  load {load.number} {impl}: {exc}")
                unavailable[impl] = str(exc)
                continue
            try:
                figures = measure_paced(server, load, settings, exe)
            finally:
                server.stop()
            found, gone = server.tracebacks()
            tracebacks[impl][0] += found
            tracebacks[impl][1] += gone
            for line, count in server.exceptions():
                exceptions.setdefault(impl, {})
                exceptions[impl][line] = exceptions[impl].get(line, 0) + count
            seen[impl] = server
            rounds[impl].append(figures)
            log(f"  load {load.number} round {number + 1} {impl:16}: "
                f"{figures['requests']:,} replies of {figures['sent']:,}, "
                f"{fmt(figures['server_us_per_req'], 1)} us/reply, "
                f"p99 {fmt(figures['p99_us'], 0)} us, {figures['peak_threads']} threads, "
                f"{fmt(figures['rss_growth_kib_per_conn'], 1)} KiB/conn, "
                f"{figures['errors']} errors")
    result = {}
    for impl in impls:
        if impl in unavailable:
            result[impl] = {"unavailable": unavailable[impl]}
            continue
        server = seen[impl]
        result[impl] = {
            "implementation": server.implementation,
            "streams": server.streams,
            "gil_enabled": server.gil_enabled,
            "package": server.package,
            "max_threads": settings.max_threads if impl not in ("stdlib", *FOREIGN) else None,
            "median": medians(rounds[impl]),
            "rounds": rounds[impl],
            "server_tracebacks": tracebacks[impl][0],
            "server_tracebacks_client_gone": tracebacks[impl][1],
            "server_exceptions": sorted(exceptions.get(impl, {}).items(),
                                        key=lambda item: -item[1])[:3],
        }
    return result


def run_load(load, impls, settings, loadgen, docroot, logdir, log, baseline=None):
    """Every round of one load, the implementations interleaved; per implementation, the rounds
    and their medians, or ``{"unavailable": why}`` for one that cannot run here."""
    impls = tuple(impl for impl in impls if serves(load, impl))
    if is_paced(load):
        return run_paced_load(load, impls, settings, docroot, logdir, log, baseline)
    unavailable = {}

    def start(impl):
        try:
            return start_server(load, impl, docroot, logdir, baseline)
        except Unavailable as exc:
            log(f"  load {load.number} {impl}: {exc}")
            unavailable[impl] = str(exc)
            return None

    def log_round(number, impl, figures):
        log(f"  load {load.number} round {number + 1} {impl:16}: "
            f"{fmt(figures['server_us_per_req'], 1)} us/req, "
            f"{fmt(figures['rps'], 0)} req/s, {figures['errors']} errors")

    servers, rounds = measure_rounds(
        impls, start, lambda server: measure(server, load, settings, loadgen), settings.rounds,
        log_round)
    result = {}
    for impl in impls:
        if impl in unavailable:
            result[impl] = {"unavailable": unavailable[impl]}
            continue
        tracebacks, client_gone = servers[impl].tracebacks()
        result[impl] = {
            "implementation": servers[impl].implementation,
            "streams": servers[impl].streams,
            "gil_enabled": servers[impl].gil_enabled,
            "package": servers[impl].package,
            "median": medians(rounds[impl]),
            "rounds": rounds[impl],
            "server_tracebacks": tracebacks,
            "server_tracebacks_client_gone": client_gone,
        }
    return result


def loadavg():
    """The 1-minute load average (other work on the machine makes the figures noisy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def gil_enabled():
    """Whether the GIL is on in this process now (always, before Python 3.13)."""
    return getattr(sys, "_is_gil_enabled", lambda: True)()


def cpu_model():
    """The CPU's model name, as the OS tells it; None if it does not."""
    try:
        with open("/proc/cpuinfo", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip() or None
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def machine():
    """Where a run ran: the interpreter (version, a free-threaded build or not, the GIL on in this
    process now), fastserver's default core, the platform, the CPU model and count."""
    import fastserver

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"python": sys.version.split()[0],
            "python_implementation": platform.python_implementation(),
            "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
            "gil_enabled": gil_enabled(),
            "fastserver_core": fastserver.IMPLEMENTATION,
            "platform": platform.platform(),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "cpus_usable": usable}


def run_bench(command, settings, loads, impls, skipped, loadgen, log, baseline=None):
    """Every load in turn; the report (a dict, what ``--json`` prints) without its warnings.
    ``baseline``: the directory the baseline's fastserver is imported from."""
    started = time.monotonic()
    report = {
        "command": command,
        "settings": dataclasses.asdict(settings),
        "impls": list(impls),
        **machine(),
        "loadavg_before": loadavg(),
        "skipped": skipped,
        "baseline": baseline,
        "loads": [],
    }
    with tempfile.TemporaryDirectory(prefix="fastserver-bench-") as tmp:
        docroot = make_docroot(tmp)
        for load in loads:
            log(f"load {load.number}: {load.title}")
            results = run_load(load, impls, settings, loadgen, docroot, tmp, log, baseline)
            report["loads"].append({"load": load.number, "title": load.title,
                                    "client": load.client,
                                    "conns": paced_conns(load, settings) if is_paced(load)
                                    else load.conns,
                                    "results": results})
    report["elapsed_s"] = time.monotonic() - started
    report["loadavg_after"] = loadavg()
    return report
