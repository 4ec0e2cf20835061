"""``python -m fastserver.bench``: the command line (see ``--help`` and bench/README.md)."""

import argparse
import json
import shutil
import sys

from .loads import (
    ALL_IMPLS,
    BASELINE,
    DEFAULT_LOADS,
    FULL,
    IMPL_GROUPS,
    IMPLS,
    LOADS,
    LOADS_BY_NUMBER,
    QUICK,
    BenchError,
    expand_impls,
    is_paced,
    settings_from,
)
from .plot import check_plot_path, draw
from .report import text, warnings_for
from .rounds import run_bench
from .servers import check_baseline
from .tools import build_loadgen


def parse_args(argv):
    """(the arguments, the Settings, the loads, the implementations) of a command line; with
    ``--from``, (the arguments, None, None, None)."""
    parser = argparse.ArgumentParser(
        prog="python -m fastserver.bench",
        description="Load benchmark: fastserver (compiled and pure cores) against the standard "
                    "library's socketserver, asyncio and uvloop, and C servers, on 127.0.0.1. "
                    "The result goes to stdout, progress to stderr.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"the default: {QUICK.rounds} rounds of {QUICK.duration} s (~1 min)")
    size.add_argument("--full", action="store_true",
                      help=f"{FULL.rounds} rounds of {FULL.duration} s (~5 min)")
    parser.add_argument("--loads",
                        help="the loads to run, by number (default: 1-9; 10 and 11, minutes "
                             "each, only when named): "
                             + "; ".join(f"{load.number}: {load.title}" for load in LOADS))
    parser.add_argument("--impls",
                        help="the implementations (default: stdlib,cython,python), among "
                             f"{', '.join(ALL_IMPLS)}; asyncio, uvloop, peers and floor stand "
                             "for several. The peers (asyncio, uvloop: streams and Protocol) "
                             "and the floor (C: a thread per connection; one epoll thread) run "
                             "the socket loads (1-4) only")
    parser.add_argument("--baseline", metavar="DIR",
                        help="add the baseline column: the compiled core of the fastserver that "
                             "DIR holds (another checkout's src, built), interleaved with this "
                             "one: a change's before and after")
    parser.add_argument("--rounds", type=int, help="rounds (overrides --quick/--full)")
    parser.add_argument("--duration", type=float,
                        help="seconds of each measured run (wrk: whole seconds, at least 1)")
    parser.add_argument("--warmup", type=float, help="seconds of the warm-up before each run")
    parser.add_argument("--requests", type=int,
                        help="at most this many requests in a run (the C load generator)")
    paced = parser.add_argument_group(
        "the paced loads (10, 11)", "many persistent connections, each sending a request per "
        "period: a ramp period (the connections open), then the measured periods; each round "
        "starts fresh servers")
    paced.add_argument("--idle-conns", type=int,
                       help=f"load 10's connections (default {FULL.idle_conns:,})")
    paced.add_argument("--http-clients", type=int,
                       help=f"load 11's clients (default {FULL.http_clients:,})")
    paced.add_argument("--period", type=float,
                       help=f"seconds between two requests of a connection (default "
                            f"{FULL.period:g})")
    paced.add_argument("--periods", type=int,
                       help=f"measured periods after the ramp (default {FULL.periods})")
    paced.add_argument("--max-threads", type=int,
                       help=f"fastserver's max_threads there (default {FULL.max_threads}; 0: "
                            "none)")
    parser.add_argument("--json", action="store_true",
                        help="print the whole report as JSON (every round; --from reads it)")
    parser.add_argument("--detail", action="store_true",
                        help="add the detail table: user time, context switches, client CPU, "
                             "errors")
    parser.add_argument("--plot", metavar="FILE",
                        help="draw the results into FILE, .png or .svg (needs matplotlib: "
                             "pip install 'fastserver[plot]')")
    parser.add_argument("--from", dest="from_file", metavar="RESULTS_JSON",
                        help="run nothing: print (and with --plot draw) the report that --json "
                             "saved in this file")
    args = parser.parse_args(argv)
    if args.plot:
        try:
            check_plot_path(args.plot)
        except BenchError as exc:
            parser.error(str(exc))
    if args.from_file:
        given = [f"--{name.replace('_', '-')}" for name in (
            "quick", "full", "loads", "impls", "baseline", "rounds", "duration", "warmup",
            "requests", "idle_conns", "http_clients", "period", "periods", "max_threads")
            if getattr(args, name) not in (None, False)]
        if given:
            parser.error(f"--from prints a saved run: {', '.join(given)} chooses what to run")
        return args, None, None, None
    settings = settings_from(args, FULL if args.full else QUICK, parser)
    numbers = args.loads or ",".join(str(load.number) for load in DEFAULT_LOADS)
    try:
        loads = [LOADS_BY_NUMBER[int(n)] for n in numbers.split(",") if n.strip()]
    except (KeyError, ValueError):
        parser.error(f"--loads: numbers among {sorted(LOADS_BY_NUMBER)}")
    try:
        impls = expand_impls(args.impls or ",".join(IMPLS))
    except ValueError as exc:
        parser.error(f"--impls: {exc} is none of {', '.join(ALL_IMPLS + tuple(IMPL_GROUPS))}")
    if args.baseline:
        impls = expand_impls(",".join((*impls, BASELINE)))
    elif BASELINE in impls:
        parser.error("--impls: baseline needs --baseline DIR")
    if not impls or not loads:
        parser.error("--loads and --impls name at least one each")
    return args, settings, loads, impls


def read_report(path):
    """The report that ``--json`` saved in ``path``; BenchError if it is not one."""
    try:
        with open(path, encoding="utf-8") as saved:
            report = json.load(saved)
    except (OSError, ValueError) as exc:
        raise BenchError(f"--from: cannot read {path}: {exc}") from None
    if not isinstance(report, dict) or not {"loads", "impls", "settings"} <= set(report):
        raise BenchError(f"--from: {path} is not a report of python -m fastserver.bench --json")
    report.setdefault("warnings", warnings_for(report))
    return report


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
    if not sys.platform.startswith("linux"):
        for load in loads:
            if is_paced(load):
                skipped.append(f"load {load.number} ({load.title}) skipped: the paced client "
                               f"needs epoll and /proc (Linux)")
        loads = [load for load in loads if not is_paced(load)]
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

    if args.from_file:
        report = read_report(args.from_file)
    else:
        loads, impls, skipped = runnable(loads, impls, log)
        for line in skipped:
            log(line)
        baseline = check_baseline(args.baseline) if args.baseline else None
        loadgen = None
        if any(load.client in ("connect", "echo") for load in loads):
            loadgen = build_loadgen()
        report = run_bench(" ".join(["python -m fastserver.bench", *argv]), settings, loads,
                           impls, skipped, loadgen, log, baseline)
        report["warnings"] = warnings_for(report)
    if args.plot:
        draw(report, args.plot)
        log(f"the picture is in {args.plot}")
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(text(report, with_detail=args.detail))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"fastserver.bench: {exc}", file=sys.stderr)
        sys.exit(1)
