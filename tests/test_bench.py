"""The load benchmark's tools: the C load generator, and ``python -m fastserver.bench`` end to end.

These check that the tools work and count right, never how fast anything is.
"""

import importlib
import importlib.resources
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig

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
    assert "| 4 | stdlib |" in table and "4. TCPServer, a connection per request" in table


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
    assert "| 2 | stdlib |" in table and "|  | C threads |" in table


# --- the peers (asyncio, uvloop), the report's header, --plot and --from ----------------------


def installed_by_test_extra(name):
    """Whether the test extra installs the distribution ``name`` on this interpreter (its
    requirement's marker, read from fastserver's installed metadata; True if there is none)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        requirements = metadata.requires("fastserver") or []
    except metadata.PackageNotFoundError:
        return True
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == name:
            marker = requirement.marker
            if marker is not None and marker.evaluate({"extra": "test"}):
                return True
    return False


def import_or_fail(module):
    """Import ``module``; where the test extra installs it, its absence fails the test (nothing
    is skipped for a missing test dependency); elsewhere the test is skipped, saying why."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if installed_by_test_extra(module):
            pytest.fail(f"{module} cannot be imported ({exc}), and the test extra installs it "
                        f"on this interpreter: pip install '.[test]'")
        pytest.skip(f"the test extra does not install {module} on this interpreter")


def needs_peer(impl):
    if impl.startswith("uvloop"):
        import_or_fail("uvloop")
    elif impl == "gevent":
        import_or_fail("gevent")


@pytest.fixture
def no_module(tmp_path, monkeypatch):
    """A function that makes ``import NAME`` fail in this test's child processes (the bench and
    the servers it starts): a sitecustomize on their PYTHONPATH that refuses to find NAME, even
    where NAME is installed beside fastserver (whose directory comes first on that path)."""
    shims = tmp_path / "shims"
    shims.mkdir()
    hidden = []

    def hide(name):
        hidden.append(name)
        (shims / "sitecustomize.py").write_text(
            "import sys\n\n\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.partition('.')[0] in {hidden!r}:\n"
            "            raise ModuleNotFoundError(f'{name} hidden by the test', name=name)\n\n\n"
            "sys.meta_path.insert(0, Hide())\n")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
            filter(None, [str(shims), os.environ.get("PYTHONPATH")])))

    return hide


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_to_eof(sock):
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


REPLY_CASES = ["stdlib", *bench.PEERS]  # the stdlib's server says what the replies must be


@pytest.mark.parametrize("impl", REPLY_CASES)
@pytest.mark.parametrize("number", [1, 4])
def test_peers_reply_once_and_close_as_the_socketserver_handler(number, impl, tmp_path):
    # loads 1 and 4: recv(1024), send it back, close; an empty request gets an empty reply
    needs_peer(impl)
    server = bench.start_server(bench.LOADS_BY_NUMBER[number], impl, str(tmp_path),
                                str(tmp_path))
    try:
        for request in (b"x" * bench.LINE_SIZE, b"hello, fastserver\n", b""):
            with socket.create_connection((bench.HOST, server.port), timeout=10) as client:
                client.sendall(request)
                if not request:
                    client.shutdown(socket.SHUT_WR)
                assert recv_to_eof(client) == request, (impl, request)
    finally:
        server.stop()
    assert server.proc.returncode == 0


@pytest.mark.parametrize("impl", REPLY_CASES)
def test_peers_echo_lines_as_the_socketserver_handler(impl, tmp_path):
    # loads 2 and 3: each whole line back as it arrives, a partial one once it is whole, and
    # what is left at EOF; then the server closes
    needs_peer(impl)
    server = bench.start_server(bench.LOADS_BY_NUMBER[2], impl, str(tmp_path), str(tmp_path))
    try:
        with socket.create_connection((bench.HOST, server.port), timeout=10) as client:
            client.sendall(b"one\ntw")
            assert recv_exactly(client, 4) == b"one\n"
            client.sendall(b"o\nthree\n")
            assert recv_exactly(client, 10) == b"two\nthree\n"
            client.sendall(b"no newline")
            client.shutdown(socket.SHUT_WR)
            assert recv_to_eof(client) == b"no newline"
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_peer_script_refuses_unknown_arguments():
    source = importlib.resources.files(bench).joinpath("peer_script.py").read_text("utf-8")
    done = subprocess.run(bench.python_argv(source, "threading-echo", "trio-streams"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr


def test_impls_names_and_groups():
    assert bench.expand_impls("asyncio,uvloop,gevent") == bench.PEERS
    assert bench.expand_impls("peers") == bench.PEERS
    assert bench.expand_impls("uvloop-protocol, stdlib,uvloop") == (
        "stdlib", "uvloop-streams", "uvloop-protocol")
    assert bench.expand_impls("gevent,stdlib") == ("stdlib", "gevent")
    assert bench.expand_impls("floor,cython") == ("cython", "c-threads", "c-loop")
    with pytest.raises(ValueError, match="trio"):
        bench.expand_impls("stdlib,trio")
    done = subprocess.run([sys.executable, "-m", "fastserver.bench", "--impls", "trio"],
                          capture_output=True, text=True, timeout=30, env=child_env())
    assert done.returncode == 2 and "--impls: trio" in done.stderr


def run_bench(argv, tmp_path, timeout=120):
    """``python -m fastserver.bench *argv`` in a child; its completed process (status 0)."""
    env = dict(child_env(), FASTSERVER_BENCH_CACHE=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "fastserver.bench", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """One short run of every implementation on loads 1 and 2, saved with --json: (its path,
    the report)."""
    tmp_path = tmp_path_factory.mktemp("run")
    done = run_bench(["--loads", "1,2", "--impls", "stdlib,cython,python,peers,floor",
                      "--rounds", "1", "--requests", "200", "--warmup", "0.05", "--json"],
                     tmp_path)
    assert done.stdout.lstrip().startswith("{")  # progress went to stderr
    assert "load 1 round 1" in done.stderr
    path = tmp_path / "results.json"
    path.write_text(done.stdout)
    return path, json.loads(done.stdout)


def test_bench_runs_the_peers_on_the_socket_loads(saved_run):
    _, report = saved_run
    by_load = {entry["load"]: entry["results"] for entry in report["loads"]}
    assert set(by_load) == {1, 2}
    for number, results in by_load.items():
        for impl in bench.PEERS:
            result = results[impl]
            if "unavailable" in result:
                needs_peer(impl)  # fails where the test extra installs uvloop, else skips
                pytest.fail(result["unavailable"])
            median = result["median"]
            assert (median["requests"], median["errors"]) == (200, 0), (number, impl)
            assert median["rps"] > 0 and median["server_us_per_req"] > 0, (number, impl)
            assert median["p50_us"] is not None, (number, impl)
            loop = impl.partition("-")[0]  # asyncio, uvloop or gevent
            assert result["implementation"].startswith(loop), result["implementation"]
            assert result["gil_enabled"] in (True, False)


def test_report_says_where_it_ran(saved_run):
    _, report = saved_run
    assert report["python"] == sys.version.split()[0]
    assert report["free_threaded"] == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert isinstance(report["gil_enabled"], bool)
    if not report["free_threaded"]:
        assert report["gil_enabled"]
    assert report["fastserver_core"].startswith(("cython-", "python-"))
    assert report["cpus"] == os.cpu_count()
    assert "cpu_model" in report
    assert report["loadavg_before"] is not None and report["loadavg_after"] is not None
    text = bench.text(report)
    assert f"GIL {'on' if report['gil_enabled'] else 'off'} in the bench" in text
    assert f"{report['cpus']} CPUs" in text and "load average" in text


def test_from_prints_the_saved_run_within_100_columns(saved_run, tmp_path):
    path, report = saved_run
    done = run_bench(["--from", str(path)], tmp_path)
    assert done.stdout == bench.text(report) + "\n"
    lines = done.stdout.splitlines()
    assert lines[0].startswith("fastserver load benchmark: python -m fastserver.bench")
    assert max(len(line) for line in lines) <= 100
    assert set(report["impls"]) == set(bench.ALL_IMPLS) - {"baseline"}  # see test_baseline_...
    for impl in report["impls"]:
        assert f"| {bench.IMPL_LABELS[impl]} |" in done.stdout, impl
    assert "of which user" not in done.stdout  # the detail table is asked for
    detailed = run_bench(["--from", str(path), "--detail"], tmp_path)
    assert "of which user" in detailed.stdout


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<svg")])
def test_plot_draws_a_saved_run(saved_run, tmp_path, suffix, magic):
    import_or_fail("matplotlib")
    path, _ = saved_run
    picture = tmp_path / f"bench{suffix}"
    done = run_bench(["--from", str(path), "--plot", str(picture)], tmp_path)
    assert str(picture) in done.stderr
    content = picture.read_bytes()
    assert len(content) > 10_000 and magic in content[:1000]
    if suffix == ".svg":  # the title says the interpreter and its GIL, the legend the floor
        text = content.decode()
        assert "GIL" in text and "the floor" in text


def test_plot_without_matplotlib_says_how_to_get_it(saved_run, tmp_path, no_module):
    no_module("matplotlib")
    path, _ = saved_run
    done = subprocess.run([sys.executable, "-m", "fastserver.bench", "--from", str(path),
                           "--plot", str(tmp_path / "bench.png")], capture_output=True,
                          text=True, timeout=60, env=child_env())
    assert done.returncode == 2
    assert "pip install 'fastserver[plot]'" in done.stderr
    assert not (tmp_path / "bench.png").exists()


def test_plot_and_from_refuse_bad_arguments(saved_run, tmp_path):
    path, _ = saved_run
    for argv, message in ((["--from", str(path), "--plot", "bench.jpg"], ".png or .svg"),
                          (["--from", str(path), "--loads", "1"], "--loads"),
                          (["--from", str(tmp_path / "none.json")], "cannot read")):
        done = subprocess.run([sys.executable, "-m", "fastserver.bench", *argv],
                              capture_output=True, text=True, timeout=60, env=child_env())
        assert done.returncode != 0 and message in done.stderr, (argv, done.stderr)


def test_missing_uvloop_is_reported_not_an_error(tmp_path, no_module):
    no_module("uvloop")
    with pytest.raises(bench.Unavailable, match="uvloop"):
        bench.start_server(bench.LOADS_BY_NUMBER[1], "uvloop-protocol", str(tmp_path),
                           str(tmp_path))
    done = run_bench(["--loads", "4,5", "--impls", "stdlib,uvloop", "--rounds", "1",
                      "--requests", "200", "--warmup", "0.05", "--duration", "1", "--json"],
                     tmp_path)
    report = json.loads(done.stdout)
    by_load = {entry["load"]: entry["results"] for entry in report["loads"]}
    for impl in ("uvloop-streams", "uvloop-protocol"):
        assert "uvloop" in by_load[4][impl]["unavailable"]
    assert by_load[4]["stdlib"]["median"]["requests"] == 200
    if 5 in by_load:  # wrk is installed: no peer has an HTTP server
        assert set(by_load[5]) == {"stdlib"}
    assert any(note.startswith("uvloop-streams, uvloop-protocol: not run, uvloop")
               for note in report["warnings"])
    text = bench.text(report)
    assert "| uvloop Protocol | unavailable |" in text


def test_rounds_leave_out_servers_that_cannot_start():
    # a start() that returns None (an implementation unavailable here) leaves its key out; with
    # every key left out there is nothing to measure, and no error
    measured = []
    servers, figures = bench.measure_rounds(
        ["a", "b"], lambda key: None, measured.append, 3, lambda *figures: None)
    assert (servers, figures, measured) == ({}, {}, [])

    class Server:
        def __init__(self, key):
            self.key = key

        def stop(self):
            pass

    servers, figures = bench.measure_rounds(
        ["a", "gone", "b"], lambda key: None if key == "gone" else Server(key),
        lambda server: server.key, 2, lambda *figures: None)
    assert list(servers) == ["a", "b"]
    assert figures == {"a": ["a", "a"], "b": ["b", "b"]}


def test_baseline_runs_the_fastserver_of_another_tree_beside_this_one(tmp_path):
    # a copy of this package stands for another checkout: the baseline's server must import it
    # (not this one), on its compiled core, interleaved with this tree's servers
    package = os.path.dirname(fastserver.__file__)
    if not any(name.startswith("_core.") and name.endswith((".so", ".pyd"))
               for name in os.listdir(package)):
        pytest.fail("the compiled core is not built in place (python setup.py build_ext "
                    "--inplace): the baseline runs a tree's compiled core")
    other = tmp_path / "other" / "src"
    shutil.copytree(package, other / "fastserver",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    done = run_bench(["--loads", "2", "--impls", "stdlib,cython", "--baseline", str(other),
                      "--rounds", "1", "--requests", "200", "--warmup", "0.05", "--json"],
                     tmp_path)
    report = json.loads(done.stdout)
    assert report["impls"] == ["stdlib", "cython", "baseline"]
    (entry,) = report["loads"]
    results = entry["results"]
    assert results["baseline"]["package"] == str(other / "fastserver")
    assert results["cython"]["package"] == package
    assert results["stdlib"]["package"] is None
    assert results["baseline"]["implementation"].startswith("cython-")
    assert results["baseline"]["median"]["requests"] == 200
    text = bench.text(report)
    assert "|  | fastserver baseline |" in text
    assert "fastserver baseline: cython-" in " ".join(text.split())  # the servers line


def test_baseline_refuses_a_directory_without_fastserver(tmp_path):
    for argv, message in ((["--baseline", str(tmp_path)], "has no fastserver package"),
                          (["--impls", "cython,baseline"], "baseline needs --baseline DIR")):
        done = subprocess.run([sys.executable, "-m", "fastserver.bench", "--loads", "2", *argv],
                              capture_output=True, text=True, timeout=60, env=child_env())
        assert done.returncode != 0 and message in done.stderr, (argv, done.stderr)


# --- the paced loads (10, 11): many mostly idle persistent connections --------------------------


@pytest.fixture(scope="module")
def paced(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("the paced client needs epoll (Linux)")
    return bench.build_paced(str(tmp_path_factory.mktemp("paced")))


def test_paced_client_checks_its_arguments(paced):
    for argv in (["--mode", "echo"], ["--port", "1", "--mode", "ftp"],
                 ["--port", "1", "--period", "1", "--ramp", "2"]):
        usage = subprocess.run([paced, *argv], capture_output=True, text=True, timeout=10)
        assert usage.returncode == 2 and "usage" in usage.stderr, argv


def test_paced_client_sends_a_line_per_connection_per_period(fast, paced):
    # 20 connections, the ramp's period then two measured ones: 40 measured replies, every
    # connection opened once and held open until the result is read
    server = make_server(fast, "tcp", echo_handler(fast), base="ThreadingTCPServer",
                         request_queue_size=64)
    calls = []
    with serving(server):
        result = bench.run_paced(paced, server.server_address[1], "echo", 20, 0.3, 2,
                                 lambda: calls.append("ramp"), lambda: calls.append("result"))
    assert calls == ["ramp", "result"]
    assert result["ramped"] == 20 and result["connects"] == 20 and result["max_open"] == 20
    assert result["answered"] == 20 and result["ramp_periods"] >= 1
    assert result["errors"] == 0 and result["ramp_replies"] == 20
    assert result["sent"] + result["skipped"] == 40  # the schedule, whatever the server's pace
    assert result["requests"] == result["sent"] - result["unanswered"]
    assert result["requests"] >= 20
    assert result["lat_us"]["p99"] >= result["lat_us"]["p50"] > 0
    assert result["client_cpu_s"] >= 0


def test_bench_runs_the_paced_loads(paced, tmp_path):
    done = run_bench(["--loads", "10,11", "--impls", "stdlib,cython,python,gevent,uvloop-protocol",
                      "--idle-conns", "40", "--http-clients", "40", "--period", "0.5",
                      "--periods", "1", "--rounds", "1", "--json"], tmp_path)
    report = json.loads(done.stdout)
    by_load = {entry["load"]: entry for entry in report["loads"]}
    assert set(by_load) == {10, 11}
    assert "uvloop-protocol" not in by_load[11]["results"]  # asyncio has no HTTP server
    for number, entry in by_load.items():
        assert entry["conns"] == 40
        for impl, result in entry["results"].items():
            if "unavailable" in result:  # a failure where the test extra installs it
                module = "gevent" if impl == "gevent" else "uvloop"
                assert not installed_by_test_extra(module), result["unavailable"]
                continue
            median = result["median"]
            assert median["errors"] == 0, (number, impl)
            assert median["ramped"] == 40, (number, impl)
            assert median["sent"] + median["skipped"] == 40, (number, impl)
            assert median["requests"] >= 20, (number, impl)
            assert median["server_us_per_req"] >= 0, (number, impl)  # /proc: 10 ms ticks
            assert median["rss_growth_kib_per_conn"] is not None, (number, impl)
            assert median["answered"] == 40 and median["ramp_periods"] >= 1, (number, impl)
            assert result["max_threads"] == (64 if impl in ("cython", "python") else None)
        # the stdlib holds a thread per connection; gevent, greenlets in one thread
        assert entry["results"]["stdlib"]["median"]["peak_threads"] > 40
        if "median" in entry["results"].get("gevent", {}):
            assert entry["results"]["gevent"]["median"]["peak_threads"] < 20
    if "implementation" in by_load[11]["results"]["gevent"]:
        assert by_load[11]["results"]["gevent"]["implementation"].startswith("gevent")
    text = bench.text(report)
    assert "| 10 (40) | stdlib |" in text and "| fastserver, max_threads 64 |" in text
    assert "peak threads" in text or "threads" in text


def test_missing_gevent_is_reported_not_an_error(tmp_path, no_module):
    no_module("gevent")
    for number in (1, 11):  # its StreamServer, and the stdlib's http.server monkey-patched
        with pytest.raises(bench.Unavailable, match="gevent"):
            bench.start_server(bench.LOADS_BY_NUMBER[number], "gevent", str(tmp_path),
                               str(tmp_path))


def test_server_exceptions_are_summed_up_from_its_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                   "    g()\nBrokenPipeError: [Errno 32] Broken pipe\n"
                   "Traceback (most recent call last):\n  File \"x.py\", line 2, in g\n"
                   "ValueError: no\nsome other line\n"
                   "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                   "BrokenPipeError: [Errno 32] Broken pipe\n")
    server = object.__new__(bench.ServerProcess)  # the log is all it reads
    server.log_path = str(log)
    assert server.exceptions() == [("BrokenPipeError: [Errno 32] Broken pipe", 2),
                                   ("ValueError: no", 1)]
    assert server.tracebacks() == (3, 2)
