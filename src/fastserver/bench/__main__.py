"""``python -m fastserver.bench``: the command line (see ``--help`` and bench/README.md)."""

import argparse
import json
import shutil
import sys

from .loads import FLOORS, FULL, IMPLS, LOADS, LOADS_BY_NUMBER, QUICK, BenchError, settings_from
from .report import text, warnings_for
from .rounds import run_bench
from .tools import build_loadgen


def parse_args(argv):
    """(the arguments, the Settings, the loads, the implementations) of a command line."""
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
    settings = settings_from(args, FULL if args.full else QUICK, parser)
    try:
        loads = [LOADS_BY_NUMBER[int(n)] for n in args.loads.split(",") if n.strip()]
    except (KeyError, ValueError):
        parser.error(f"--loads: numbers among {sorted(LOADS_BY_NUMBER)}")
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    if not impls or any(impl not in IMPLS + FLOORS for impl in impls):
        parser.error(f"--impls: names among {', '.join(IMPLS + FLOORS)}")
    return args, settings, loads, impls


def runnable(loads, impls, log):
    """The loads and implementations this machine can run, and a line per load skipped (the
    implementations left out are logged)."""
    from .. import _cores

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
    return loads, impls, skipped


def main(argv=None):
    """Run the bench with ``argv`` (default: ``sys.argv[1:]``); print the report; return 0."""
    argv = sys.argv[1:] if argv is None else argv
    args, settings, loads, impls = parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    loads, impls, skipped = runnable(loads, impls, log)
    for line in skipped:
        log(line)
    loadgen = None
    if any(load.client != "wrk" for load in loads):
        loadgen = build_loadgen()
    report = run_bench(" ".join(["python -m fastserver.bench", *argv]), settings, loads, impls,
                       skipped, loadgen, log)
    report["warnings"] = warnings_for(report)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(text(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"fastserver.bench: {exc}", file=sys.stderr)
        sys.exit(1)
