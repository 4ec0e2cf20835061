"""Where a load's server spends its Python time: one load of ``python -m fastserver.bench`` under
py-spy (``pip install py-spy``), sampling only the threads that hold the GIL.

    PYTHONPATH=src python bench/profile_load.py LOAD IMPL [SECONDS] [--native]

LOAD is a load number of the bench (1-7), IMPL one of stdlib, cython, python. Prints the server's
CPU per request (user, system), its context switches per request, then the functions with the
most samples: self time, and inclusive time. The samples are of the GIL holder only (py-spy
--gil), so a thread blocked in a system call or waiting for the GIL is not counted; system time
is not visible here at all (see the user/system split printed first). py-spy sees few of the
short GIL holds of a fast handler: read the shares, not the sample count; --no-gil samples every
thread that py-spy judges busy instead (it counts some blocking calls as busy).
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from fastserver import bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("load", type=int, choices=sorted(bench.LOADS_BY_NUMBER))
    parser.add_argument("impl", choices=bench.IMPLS)
    parser.add_argument("seconds", type=float, nargs="?", default=3.0)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--no-gil", action="store_true",
                        help="sample every thread py-spy thinks is busy, not only the GIL holder")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    load = bench.LOADS_BY_NUMBER[args.load]
    with tempfile.TemporaryDirectory(prefix="fastserver-profile-") as tmp:
        docroot = bench.make_docroot(tmp)
        loadgen = None if load.client == "wrk" else bench.build_loadgen()
        server = bench.start_server(load, args.impl, docroot, tmp)
        try:
            warm = bench.Settings(rounds=1, duration=args.seconds, warmup=0.3,
                                  requests=100_000_000)
            bench.measure(server, load, warm, loadgen)  # warm-up, and imports done
            samples = os.path.join(tmp, "samples.txt")
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(server.proc.pid), "-r", "1000", "-d",
                 str(int(args.seconds) + 1), "-f", "raw", "-o", samples]
                + ([] if args.no_gil else ["--gil"]) + (["--native"] if args.native else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # py-spy attaches
            measured = bench.Settings(rounds=1, duration=args.seconds, warmup=0,
                                      requests=100_000_000)
            figures = bench.measure(server, load, measured, loadgen)
            spy.wait(60)
        finally:
            server.stop()
        report(load, args.impl, figures, samples, args.top)


def report(load, impl, figures, samples, top):
    requests = figures["requests"]
    user = figures["server_user_s"] / requests * 1e6
    system = figures["server_sys_s"] / requests * 1e6
    print(f"load {load.number} ({load.title}), {impl}: {requests} requests, "
          f"{figures['rps']:,.0f} req/s (slowed by py-spy)")
    print(f"server CPU {user + system:.1f} µs/req: user {user:.1f}, system {system:.1f}; "
          f"{figures['server_switches_per_req']:.2f} context switches/req")
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    try:
        with open(samples) as f:
            for line in f:
                stack, _, count = line.rstrip().rpartition(" ")
                frames = [frame for frame in stack.split(";") if not frame.startswith("thread (")]
                if not frames:
                    continue
                total += int(count)
                own[frames[-1]] += int(count)
                for frame in set(frames):
                    inclusive[frame] += int(count)
    except OSError:
        pass
    if not total:
        print("no samples (py-spy needs ptrace permission: run as root, or set "
              "kernel.yama.ptrace_scope=0)")
        return
    print(f"{total} samples")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"-- {title}")
        for frame, count in counter.most_common(top):
            print(f"{count / total:6.1%}  {frame[:140]}")


if __name__ == "__main__":
    main()
