"""What the bench measures: the loads, the implementations they run on, and a run's settings."""

import dataclasses
from dataclasses import dataclass

#: The Python implementations, run by default: the stdlib's socketserver, fastserver's cores.
IMPLS = ("stdlib", "cython", "python")
#: fastserver's compiled core from another tree (``--baseline DIR``): a change's before and after
#: in one interleaved run.
BASELINE = "baseline"
#: The floor (_floor.c): the socket loads' servers written in C, for reference; asked for by name.
FLOORS = ("c-threads", "c-loop")
#: The peers (peer_script.py): the socket loads' work on an event loop, as asyncio's users write
#: it (streams, or a Protocol for speed), on asyncio's default loop and on uvloop's, and as
#: gevent's users write it (a StreamServer, a greenlet per connection); by name.
PEERS = ("asyncio-streams", "asyncio-protocol", "uvloop-streams", "uvloop-protocol", "gevent")
#: Every implementation, in the order of the table.
ALL_IMPLS = IMPLS + (BASELINE,) + PEERS + FLOORS
#: Names that stand for several implementations in ``--impls``.
IMPL_GROUPS = {"asyncio": PEERS[:2], "uvloop": PEERS[2:4], "peers": PEERS, "floor": FLOORS}
#: Only the socket loads (the load generator's) run these: they have no HTTP server (gevent runs
#: the keep-alive load's, see ``serves``).
SOCKET_ONLY = PEERS + FLOORS
IMPL_LABELS = {"stdlib": "stdlib", "cython": "fastserver", "python": "fastserver pure",
               BASELINE: "fastserver baseline",
               "asyncio-streams": "asyncio streams", "asyncio-protocol": "asyncio Protocol",
               "uvloop-streams": "uvloop streams", "uvloop-protocol": "uvloop Protocol",
               "gevent": "gevent", "c-threads": "C threads", "c-loop": "C epoll"}
HOST = "127.0.0.1"
HTTP_FILE = "small.txt"
HTTP_FILE_SIZE = 1024
LINE_SIZE = 64  # bytes of each request (a line, in the echo mode)


class BenchError(RuntimeError):
    """The bench cannot go on (no compiler, a server that does not answer, a client that failed);
    the command line prints the message and exits with status 1."""


class Unavailable(BenchError):
    """An optional implementation cannot run here (uvloop is not installed): the report says so in
    its place, and the bench goes on with the others."""


def expand_impls(text):
    """The implementations a ``--impls`` value names, in the table's order, each once (a group
    name such as ``asyncio`` stands for its members); ValueError for an unknown name."""
    wanted = set()
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        if name in IMPL_GROUPS:
            wanted.update(IMPL_GROUPS[name])
        elif name in ALL_IMPLS:
            wanted.add(name)
        else:
            raise ValueError(name)
    return tuple(impl for impl in ALL_IMPLS if impl in wanted)


@dataclass(frozen=True)
class Load:
    """One load: a server (a kind of the server script) and the client that drives it."""

    number: int
    title: str
    server: str  # the server script's kind
    client: str  # "connect" or "echo" (the C load generator), "wrk", or "paced-echo" or
    # "paced-http" (the paced client, _paced.c: many persistent connections, a request each per
    # period)
    conns: int = 8  # the paced loads: the default of --idle-conns or --http-clients
    close: bool = False  # wrk: "Connection: close" on every request
    tls: bool = False  # wrk: HTTPS (a certificate made for the run by openssl)


LOADS = (
    Load(1, "ThreadingTCPServer, a connection per request", "threading-oneshot", "connect"),
    Load(2, "ThreadingTCPServer, echo, 8 persistent connections", "threading-echo", "echo"),
    Load(3, "ThreadingTCPServer, echo, 256 persistent connections", "threading-echo", "echo", 256),
    Load(4, "TCPServer, a connection per request", "single-oneshot", "connect"),
    Load(5, "ThreadingHTTPServer, small file, keep-alive (wrk)", "http", "wrk"),
    Load(6, "ThreadingHTTPServer, small file, Connection: close (wrk)", "http", "wrk", close=True),
    Load(7, "as 5, the handler sets disable_nagle_algorithm", "http-nodelay", "wrk"),
    Load(8, "ThreadingHTTPServer over TLS, small file, keep-alive (wrk)", "https", "wrk",
         tls=True),
    Load(9, "ThreadingHTTPServer over TLS, small file, Connection: close: a handshake per "
         "request (wrk)", "https", "wrk", close=True, tls=True),
    Load(10, "ThreadingTCPServer, echo, many mostly idle persistent connections: a line each per "
         "period (paced client)", "idle-echo", "paced-echo", 5000),
    Load(11, "ThreadingHTTPServer, many keep-alive HTTP/1.1 clients: a GET each per period on its "
         "own connection (paced client)", "http-keepalive", "paced-http", 10000),
)
LOADS_BY_NUMBER = {load.number: load for load in LOADS}
#: The loads run when ``--loads`` is not given: the paced ones (minutes each) only by number.
DEFAULT_LOADS = tuple(load for load in LOADS if not load.client.startswith("paced"))


def is_paced(load):
    """Whether ``load`` is one of the paced client's: many connections, mostly idle."""
    return load.client.startswith("paced")


def serves(load, impl):
    """Whether ``impl`` has a server for ``load``: the peers and the floor serve the socket loads
    only, but gevent also serves the keep-alive HTTP load (http.server's ThreadingHTTPServer, its
    threads made greenlets by gevent's monkey-patching: how gevent's users run it), and the floor
    has no paced loads' servers."""
    if impl in FLOORS:
        return load.client in ("connect", "echo")
    if impl in PEERS:
        return load.client in ("connect", "echo", "paced-echo") or (
            impl == "gevent" and load.server == "http-keepalive")
    return True


@dataclass(frozen=True)
class Settings:
    """How long a run measures each server, and how often."""

    rounds: int
    duration: float  # seconds of each measured run
    warmup: float  # seconds of the unmeasured run before each measured one (load generator)
    requests: int  # at most this many requests in a run (the C load generator)
    # the paced loads (10 and 11)
    period: float = 5.0  # seconds between two requests of a connection
    periods: int = 2  # measured periods, after the ramp's one
    idle_conns: int = LOADS[9].conns  # load 10's connections
    http_clients: int = LOADS[10].conns  # load 11's clients
    max_threads: int = 64  # fastserver's max_threads there (0: none)


QUICK = Settings(rounds=3, duration=0.7, warmup=0.1, requests=10_000_000)
FULL = Settings(rounds=5, duration=3.0, warmup=0.5, requests=50_000_000)


def settings_from(args, base, parser):
    """``base`` with the figures given on the command line (``args.rounds``, ``.duration``,
    ``.warmup``, ``.requests``; None: not given) in place of its own; ``parser.error()`` if one
    is not positive."""
    given = {field.name: getattr(args, field.name, None) for field in dataclasses.fields(Settings)}
    settings = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    if settings.rounds < 1 or settings.duration <= 0 or settings.requests < 1:
        parser.error("--rounds, --duration and --requests must be positive")
    if settings.period <= 0 or settings.periods < 1 or settings.idle_conns < 1 or \
            settings.http_clients < 1 or settings.max_threads < 0:
        parser.error("--period, --periods, --idle-conns and --http-clients must be positive, "
                     "--max-threads at least 0")
    return settings


def paced_conns(load, settings):
    """How many connections a paced load opens with these settings."""
    return settings.idle_conns if load.server == "idle-echo" else settings.http_clients
