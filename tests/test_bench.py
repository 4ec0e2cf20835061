"""The load benchmark's tools: the C load generator, and ``python -m fastserver.bench`` end to end.

These check that the tools work and count right, never how fast anything is.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import child_env, make_server, serving

import fastserver
from fastserver import bench

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "wait4"), reason="the benchmark needs a Unix"),
    pytest.mark.skipif(bench.compiler() is None, reason="no C compiler for the load generator"),
]


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    return bench.build_loadgen(str(tmp_path_factory.mktemp("loadgen")))


def echo_handler(module):
    class Echo(module.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    return Echo


def oneshot_handler(module):
    class OneShot(module.BaseRequestHandler):
        def handle(self):
            self.request.sendall(self.request.recv(1024))

    return OneShot


def test_loadgen_builds_once_and_checks_its_arguments(loadgen, tmp_path):
    assert os.access(loadgen, os.X_OK)
    assert bench.build_loadgen(os.path.dirname(loadgen)) == loadgen  # cached
    usage = subprocess.run([loadgen, "--mode", "echo"], capture_output=True, text=True,
                           timeout=10)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_loadgen_echo_mode_counts_every_request(fast, loadgen):
    server = make_server(fast, "tcp", echo_handler(fast), base="ThreadingTCPServer")
    with serving(server):
        result = bench.run_loadgen(loadgen, server.server_address[1], "echo", conns=4,
                                   requests=300, duration=20)
    assert result["mode"] == "echo"
    assert (result["requests"], result["errors"], result["abandoned"]) == (300, 0, 0)
    assert result["connects"] == 4  # persistent connections
    assert set(result["lat_us"]) >= {"p50", "p90", "p99", "max"}
    assert result["client_cpu_s"] >= 0


def test_loadgen_connect_mode_counts_every_request(fast, loadgen):
    server = make_server(fast, "tcp", oneshot_handler(fast), base="TCPServer",
                         request_queue_size=64)
    with serving(server):
        result = bench.run_loadgen(loadgen, server.server_address[1], "connect", conns=8,
                                   requests=200, duration=20)
    assert result["mode"] == "connect"
    assert (result["requests"], result["errors"], result["abandoned"]) == (200, 0, 0)
    assert result["connects"] == 200  # a connection per request


def test_loadgen_counts_refused_connections_as_errors(loadgen):
    with socket.socket() as probe:  # a port that nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = bench.run_loadgen(loadgen, port, "connect", conns=2, requests=20, duration=20)
    assert (result["requests"], result["errors"]) == (0, 20)
    assert "refused" in result["first_error"].lower()


def test_loadgen_stops_at_its_time_limit(loadgen):
    # a server that accepts and never answers: the run ends at duration + grace, all abandoned
    with socket.create_server(("127.0.0.1", 0)) as listener:
        argv = [loadgen, "--port", str(listener.getsockname()[1]), "--mode", "echo",
                "--conns", "2", "--requests", "1000", "--duration", "0.2", "--grace", "0.1"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    result = json.loads(done.stdout)
    assert (result["requests"], result["abandoned"]) == (0, 2)


WRK_REPORT = """\
Running 1s test @ http://127.0.0.1:8000/small.txt
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   810.12us  300.00us   5.10ms   90.00%
    Req/Sec     9.80k   500.00    10.20k    70.00%
  Latency Distribution
     50%  750.00us
     75%    0.90ms
     90%    1.10ms
     99%    2.50ms
  9803 requests in 1.00s, 11.20MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:   9801.22
Transfer/sec:     11.19MB
"""


def test_parse_wrk():
    result = bench.parse_wrk(WRK_REPORT)
    assert result["requests"] == 9803
    assert result["errors"] == 4
    assert result["rps"] == pytest.approx(9803.0)
    assert result["lat_us"]["p50"] == pytest.approx(750.0)
    assert result["lat_us"]["p99"] == pytest.approx(2500.0)


def test_bench_runs_end_to_end(tmp_path):
    env = dict(child_env(), FASTSERVER_BENCH_CACHE=str(tmp_path))
    argv = [sys.executable, "-m", "fastserver.bench", "--loads", "4", "--rounds", "1",
            "--requests", "200", "--warmup", "0.05", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = {"stdlib", "python"} | ({"cython"} & set(fastserver._cores.CORES))
    assert set(report["impls"]) == expected
    (entry,) = report["loads"]
    assert entry["load"] == 4 and set(entry["results"]) == expected
    for impl, result in entry["results"].items():
        median = result["median"]
        assert median["requests"] == 200, impl
        assert median["errors"] == 0, impl
        assert median["rps"] > 0, impl
        assert median["server_us_per_req"] > 0, impl
    table = bench.markdown(report)
    assert "| 4. TCPServer, a connection per request |" in table


FLOOR_CASES = [(load, design) for load in (1, 2, 4) for design in ("threads", "loop")
               if design == "threads" or sys.platform.startswith("linux")]


@pytest.mark.parametrize("number,design", FLOOR_CASES)
def test_floor_servers_answer_every_request_and_report_their_cpu(number, design, loadgen,
                                                                 tmp_path):
    # the C reference servers do the work of the bench's handlers: a wrong reply (or none) is an
    # error for the load generator, and their CPU figures come from the same protocol
    load = bench.LOADS_BY_NUMBER[number]
    server = bench.start_server(load, f"c-{design}", str(tmp_path), str(tmp_path))
    try:
        before = server.cpu()
        result = bench.run_loadgen(loadgen, server.port, load.client, load.conns, requests=300,
                                   duration=20)
        after = server.cpu()
    finally:
        server.stop()
    assert (result["requests"], result["errors"], result["abandoned"]) == (300, 0, 0)
    assert result["connects"] == (300 if load.client == "connect" else load.conns)
    assert all(b >= a >= 0 for a, b in zip(before, after, strict=True))  # getrusage, 3 figures
    assert server.proc.returncode == 0  # "quit" ends it


def test_floor_server_refuses_unknown_arguments(tmp_path):
    floor = bench.build_floor(str(tmp_path))
    usage = subprocess.run([floor, "threading-echo", "coroutines"], capture_output=True,
                           text=True, timeout=10)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_bench_runs_the_floor_beside_the_stdlib_and_leaves_it_out_of_http(tmp_path):
    env = dict(child_env(), FASTSERVER_BENCH_CACHE=str(tmp_path))
    argv = [sys.executable, "-m", "fastserver.bench", "--loads", "2,5", "--rounds", "1",
            "--requests", "200", "--duration", "1", "--warmup", "0.05",
            "--impls", "stdlib,c-threads", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    by_load = {entry["load"]: entry["results"] for entry in report["loads"]}
    assert by_load[2]["c-threads"]["median"]["requests"] == 200
    assert by_load[2]["c-threads"]["implementation"] == "C, a thread per connection"
    if 5 in by_load:  # wrk is installed
        assert set(by_load[5]) == {"stdlib"}  # no C HTTP server
    table = bench.markdown(report)
    assert "C, a thread per connection µs/req" in table
