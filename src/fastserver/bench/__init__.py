"""``python -m fastserver.bench``: fastserver against the stdlib, its peers and C, under load.

Each load runs the same server code three ways, each in its own subprocess: on the standard
library's ``socketserver`` (``stdlib``), on fastserver's compiled core (``cython``) and on its pure
core (``python``). The client is a small C load generator (``_loadgen.c``, compiled with ``cc -O2``
into a cache directory on first use) or, for HTTP, ``wrk``. Rounds are interleaved (every round
measures every implementation, in a rotating order) and the table reports medians over the rounds.

Asked for by name (``--impls ...,c-threads,c-loop``), the socket loads also run on the floor: the
same servers written in C (``_floor.c``: a thread per connection, and one epoll thread), which say
what any server of that design costs on the machine, with no interpreter. And on the peers
(``--impls ...,asyncio,uvloop``): the same work as asyncio's users write it, streams or a
``Protocol``, on asyncio's default loop and on uvloop, and as gevent's users write it (a
``StreamServer``) (``peer_script.py``); a missing uvloop or gevent is reported in its columns.

Loads 10 and 11, asked for by number, hold thousands of mostly idle persistent connections (echo
lines; keep-alive HTTP/1.1 clients), each sending a request per period, from a paced C client
(``_paced.c``); they report each server's peak threads, RSS growth per connection, CPU per reply,
replies and p99 latency.

Two figures per measurement:

- server CPU per request: the user + system CPU time of the server process (all its threads, as
  ``getrusage(RUSAGE_SELF)`` counts them, taken by the server itself when the bench asks, just
  before and just after the client runs), divided by the requests completed;
- requests per second, as the client counts them.

The client's own CPU time is measured too (``wait4``): a client that uses more CPU than the server
it loads would make the requests/s figures the client's, and the bench says so.

Usage: ``python -m fastserver.bench [--quick | --full] [--loads 1,2,5] [--impls ...] [--json]
[--detail] [--plot FILE] [--from RESULTS_JSON]``; see ``--help`` and ``bench/README.md``. Linux or
another Unix with a C compiler; all traffic is on 127.0.0.1. The result goes to stdout, progress
to stderr.

The package, a module a job (each imports only those before it):

- ``loads``: the loads, the implementations, a run's settings, ``BenchError``;
- ``tools``: the C tools (``_loadgen.c``, ``_paced.c``, ``_floor.c``, shipped here), compiled and
  cached;
- ``clients``: one run of the load generator, the paced client or wrk, with the CPU it used;
- ``server_script``: the Python servers' script, run as ``python -c``; ``peer_script``: the
  peers' (asyncio, uvloop); ``servers``: the server subprocesses and their protocol;
- ``report``: the markdown tables, the header, the notes, the printed text;
- ``rounds``: a measured run, interleaved rounds, medians, where it ran, a whole run's report;
- ``plot``: ``--plot``, with matplotlib (imported only there);
- ``__main__``: the command line.

The names below are those that bench/scaling.py, bench/profile_load.py and the tests use.
"""

from .clients import parse_wrk, run_loadgen, run_paced, run_wrk
from .loads import (
    ALL_IMPLS,
    FLOORS,
    FULL,
    HOST,
    HTTP_FILE,
    HTTP_FILE_SIZE,
    IMPL_LABELS,
    IMPLS,
    LINE_SIZE,
    LOADS,
    LOADS_BY_NUMBER,
    PEERS,
    QUICK,
    BenchError,
    Load,
    Settings,
    Unavailable,
    expand_impls,
    is_paced,
    serves,
    settings_from,
)
from .plot import draw
from .report import detail, fmt, markdown, summary, table, text, warnings_for, with_notes
from .rounds import (
    gil_enabled,
    loadavg,
    machine,
    measure,
    measure_paced,
    measure_rounds,
    median,
    medians,
    run_load,
)
from .servers import ServerProcess, make_docroot, python_argv, start_server
from .tools import build_floor, build_loadgen, build_paced, cache_dir, compiler

__all__ = [
    "ALL_IMPLS", "BenchError", "FLOORS", "FULL", "HOST", "HTTP_FILE", "HTTP_FILE_SIZE", "IMPLS",
    "IMPL_LABELS", "LINE_SIZE", "LOADS", "LOADS_BY_NUMBER", "Load", "PEERS", "QUICK",
    "ServerProcess", "Settings", "Unavailable", "build_floor", "build_loadgen", "build_paced",
    "cache_dir", "compiler", "detail", "draw", "expand_impls", "fmt", "gil_enabled", "is_paced",
    "loadavg", "machine", "make_docroot", "markdown", "measure", "measure_paced",
    "measure_rounds", "median", "medians", "parse_wrk", "python_argv", "run_load", "run_loadgen",
    "run_paced", "run_wrk", "serves", "settings_from", "start_server", "summary", "table", "text",
    "warnings_for", "with_notes",
]
