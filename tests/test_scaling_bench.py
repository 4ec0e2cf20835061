"""bench/scaling.py in its tiniest form: every row is there and counts right (never how fast)."""

import json
import os
import socket
import subprocess
import sys

import pytest

import fastserver
from fastserver import bench

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                      "scaling.py")

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "wait4"),
                       reason="the benchmark needs a Unix"),
    pytest.mark.skipif(bench.compiler() is None, reason="no C compiler for the load generator"),
    pytest.mark.skipif(not os.path.exists(SCRIPT), reason="bench/ is not in this tree"),
]


def test_scaling_bench_runs_end_to_end(tmp_path):
    env = dict(os.environ, FASTSERVER_BENCH_CACHE=str(tmp_path))
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastserver.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, SCRIPT, "--max-workers", "2", "--rounds", "1", "--requests", "200",
            "--duration", "10", "--warmup", "0.05", "--clients", "2", "--conns", "8",
            "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    core = fastserver.IMPLEMENTATION.split("-")[0]  # what FASTSERVER_NO_EXTENSIONS selects
    assert report["core"] == core
    shares = ["one", "inherited"] + (["reuseport"] if hasattr(socket, "SO_REUSEPORT") else [])
    expected = [(kind, impl, workers, share)
                for kind in ("threading", "single")
                for impl, workers, share in [("stdlib", 1, "one"), (core, 1, "one")]
                + [(core, 2, share) for share in shares[1:]]]
    rows = [(r["kind"], r["impl"], r["workers"], r["share"]) for r in report["results"]]
    assert rows == expected
    for result in report["results"]:
        name = (result["kind"], result["impl"], result["workers"], result["share"])
        median = result["median"]
        assert median["requests"] == 200, name
        assert median["errors"] == 0, name
        assert median["rps"] > 0 and median["server_us_per_req"] > 0, name
        (run,) = result["rounds"]
        assert len(run["served"]) == result["workers"], name
        assert sum(run["served"]) == 200, name  # every request served once, by some worker
        assert result["vs_stdlib"] > 0, name
        assert result["server_tracebacks"] == 0 and result["worker_restarts"] == 0, name
        assert result["pids"], name
        for pid in result["pids"]:  # no server process outlives the bench
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import scaling
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    table = scaling.markdown(report)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == len(expected) + 1  # the head and a row per configuration
    assert "| TCPServer (stdlib) | 1 | one process |" in table
