"""The clients: one run of the C load generator or of ``wrk``, with the CPU time it used.

A run's result is a dict in the load generator's JSON shape (``requests``, ``errors``,
``elapsed_s``, ``rps``, ``lat_us`` percentiles), with ``client_cpu_s`` added: the client's user +
system time, from ``wait4``.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time

from .loads import HOST, HTTP_FILE, LINE_SIZE, BenchError

PACED_GRACE = 2.0  # seconds the paced client waits for the replies still due at its end
PACED_RAMP_MAX = 3  # periods the paced client's ramp lasts at most (every connection answered)


def run_measured(argv, timeout):
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
    output, cpu, _ = run_measured(argv, duration + 30)
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


def run_wrk(port, conns, duration, close, tls=False):
    """One run of wrk (one thread, ``conns`` connections) on the HTTP loads' file (over HTTPS
    with ``tls``)."""
    argv = [shutil.which("wrk") or "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s",
            "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"{'https' if tls else 'http'}://{HOST}:{port}/{HTTP_FILE}")
    output, cpu, _ = run_measured(argv, duration + 30)
    result = parse_wrk(output)
    result["client_cpu_s"] = cpu
    return result


def warm_http(port, requests=20, tls=False):
    """A few requests on one connection: the HTTP loads' warm-up (over HTTPS, the server's
    certificate unchecked, with ``tls``)."""
    import http.client

    if tls:
        import ssl

        conn = http.client.HTTPSConnection(HOST, port, timeout=10,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for _ in range(requests):
            conn.request("GET", f"/{HTTP_FILE}")
            conn.getresponse().read()
    finally:
        conn.close()


def run_paced(exe, port, mode, conns, period, periods, at_ramp=None, at_result=None):
    """One run of the paced client (``mode`` "echo" or "http", ``conns`` connections, a request
    each per ``period`` seconds: the ramp's periods, until every connection has had a reply or
    PACED_RAMP_MAX, then ``periods`` measured ones); its JSON result, with ``ramped`` (connections
    open once the ramp was over), ``answered`` (those of them that had had a reply),
    ``ramp_periods`` and the CPU it used as client_cpu_s. ``at_ramp()`` is called when the ramp
    is over, ``at_result()`` once the result is in while the client still holds its connections
    open (each may take the server's figures)."""
    argv = [exe, "--host", HOST, "--port", str(port), "--mode", mode, "--conns", str(conns),
            "--period", str(period), "--periods", str(periods), "--grace", str(PACED_GRACE),
            "--ramp-max", str(PACED_RAMP_MAX),
            "--linger", "60", "--size", str(LINE_SIZE), "--path", f"/{HTTP_FILE}"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, close_fds=True, text=True)
    killer = threading.Timer(period * (periods + PACED_RAMP_MAX) + PACED_GRACE + 60, proc.kill)
    killer.start()
    output = []
    ramped = result = None
    ramp = {}
    try:
        for line in proc.stdout:
            if not line.startswith("{"):
                output.append(line)
                continue
            data = json.loads(line)
            if "ramped" in data:
                ramped = data["ramped"]
                ramp = data
                if at_ramp:
                    at_ramp()
            else:
                result = data
                if at_result:
                    at_result()
                break
        proc.stdin.close()  # the client closes its connections now
        output.append(proc.stdout.read())
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        proc.stdout.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or result is None:
        raise BenchError(f"the paced client exited with {code}:\n{''.join(output)}")
    result["ramped"] = ramped
    result["answered"] = ramp.get("answered")
    result["ramp_periods"] = ramp.get("ramp_periods")
    result["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    result["client_wall_s"] = time.monotonic() - started
    return result
