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
import time

from .clients import run_loadgen, run_wrk, warm_http
from .loads import SOCKET_ONLY, Unavailable
from .report import fmt
from .servers import make_docroot, start_server


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


def run_load(load, impls, settings, loadgen, docroot, logdir, log, baseline=None):
    """Every round of one load, the implementations interleaved; per implementation, the rounds
    and their medians, or ``{"unavailable": why}`` for one that cannot run here."""
    if load.client == "wrk":
        impls = tuple(impl for impl in impls if impl not in SOCKET_ONLY)  # no HTTP server
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
                                    "client": load.client, "conns": load.conns,
                                    "results": results})
    report["elapsed_s"] = time.monotonic() - started
    report["loadavg_after"] = loadavg()
    return report
