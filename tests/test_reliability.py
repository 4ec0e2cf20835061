"""Reliability: what a server must survive, and what it must leave behind when it stops.

Each test counts something (replies, handle_error calls, descriptors, threads, children, CPU
seconds, resident memory) and fails when the count is wrong; timings are only checked against
generous bounds. What the standard library does not promise runs on fastserver's cores only, and
where the stdlib's figure is interesting it is printed (``pytest -s``), never asserted.
"""

import errno
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from helpers import (
    TIMEOUT,
    alive,
    ask,
    bounded,
    child_env,
    children_of,
    client_for,
    closed_by_peer,
    core_of,
    is_stdlib,
    live_children,
    make_server,
    serving,
    talk,
    wait_until,
)

# The head of every child script: ``ss`` is the module under test, named by argv[1].
CHILD_PRELUDE = """\
import sys
CORE = sys.argv[1]
if CORE == "stdlib":
    import socketserver as ss
else:
    import fastserver as ss
    ss._use_core(CORE)
"""


def spawn(script, module, *args):
    """A Python child running CHILD_PRELUDE + ``script`` on ``module``'s core."""
    return subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + script, core_of(module),
                             *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def finish(proc, timeout):
    """Wait for ``proc`` (killing it if it outlives ``timeout``): (returncode, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # its pipes are held open: by orphans of its own
            pytest.fail(f"child or its children still running after {timeout} s")
        pytest.fail(f"child still running after {timeout} s; stderr:\n{err}")
    return proc.returncode, out, err


def read_line(proc, timeout=TIMEOUT):
    """One line of the child's stdout, failing (not hanging) if none comes within ``timeout``."""
    line = bounded(proc.stdout.readline, timeout=timeout)
    if not line:
        _, _, err = finish(proc, TIMEOUT)
        pytest.fail(f"child exited early; stderr:\n{err}")
    return line


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def describe_fds(fds):
    names = {}
    for fd in fds:
        try:
            names[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            names[fd] = "?"
    return names


def line_handler(module, respond=lambda line: b"ok " + line):
    """A stream handler that reads one line and writes ``respond(line)``."""

    class Handler(module.StreamRequestHandler):
        def handle(self):
            self.wfile.write(respond(self.rfile.readline()))

    return Handler


def quiet_errors(errors, lock):
    """A handle_error that records the exception instead of printing it."""

    def handle_error(self, request, client_address):
        with lock:
            errors.append(sys.exc_info()[1])

    return handle_error


# --- 1. shutdown() latency ------------------------------------------------------------------

def test_shutdown_does_not_wait_out_poll_interval(ss):
    # fastserver wakes its loop; the stdlib waits out poll_interval, so it runs with 0.5 s and is
    # held to the stdlib's own bound (poll_interval plus slack).
    poll = 0.5 if is_stdlib(ss) else 5.0
    bound = poll + 1.0 if is_stdlib(ss) else 0.5
    server = make_server(ss, "tcp", line_handler(ss))
    latencies = []
    try:
        for _ in range(5):
            thread = threading.Thread(target=server.serve_forever, args=(poll,), daemon=True)
            thread.start()
            assert talk(server, b"ping\n") == b"ok ping\n"
            time.sleep(0.05)  # back in its wait
            start = time.monotonic()
            bounded(server.shutdown, timeout=poll + TIMEOUT)
            latencies.append(time.monotonic() - start)
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "serve_forever() did not return after shutdown()"
    finally:
        server.server_close()
    median = statistics.median(latencies)
    print(f"\n[{core_of(ss)}] shutdown() latency, poll_interval={poll}: median {median:.4f} s, "
          f"all {[round(x, 4) for x in latencies]}")
    assert median <= bound


# --- 2. out of descriptors: back off, do not spin ---------------------------------------------

EMFILE_CHILD = """\
import errno, json, os, resource, select, socket, threading, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, soft), hard))

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"served " + self.rfile.readline())

server = getattr(ss, sys.argv[2])(("127.0.0.1", 0), Handler)
thread = threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True)
thread.start()

def reply(client):
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode()

with socket.create_connection(server.server_address, timeout=5) as first:
    first.sendall(b"first\\n")
    assert reply(first) == "served first\\n"

waiting = socket.socket()  # made before the hog: connect() then needs no descriptor
waiting.settimeout(5)
hog = []

def take_every_descriptor():
    for _ in range(1024):
        try:
            hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return
    raise SystemExit("never ran out of descriptors")

take_every_descriptor()
time.sleep(0.2)  # the server may close the first request's socket only after its client read EOF
take_every_descriptor()
waiting.connect(server.server_address)  # queued; the server's accept() now fails: EMFILE
waiting.sendall(b"waiting\\n")
time.sleep(0.1)
cpu0, wall0 = time.process_time(), time.monotonic()
time.sleep(2.0)
cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
early = select.select([waiting], [], [], 0)[0]  # nothing back yet: it cannot have been accepted
for fd in hog:
    os.close(fd)
freed = time.monotonic()
answer = reply(waiting)
served_after = time.monotonic() - freed
waiting.close()
server.shutdown()
server.server_close()
print(json.dumps({"cpu": cpu, "wall": wall, "hogged": len(hog), "reply": answer,
                  "served_after": served_after, "early": bool(early)}))
"""


@pytest.mark.parametrize("server_class", ["TCPServer", "ThreadingTCPServer"])
def test_out_of_descriptors_backs_off_then_serves(ss, server_class):
    # (ThreadingTCPServer: on the compiled core its request threads accept for themselves)
    code, out, err = finish(spawn(EMFILE_CHILD, ss, server_class), timeout=30)
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    print(f"\n[{core_of(ss)}] EMFILE: {result['cpu']:.3f} s CPU over {result['wall']:.2f} s "
          f"({result['hogged']} descriptors hogged); served {result['served_after']:.3f} s "
          f"after they were freed")
    assert result["hogged"] > 0
    assert not result["early"], "served while out of descriptors: the test proved nothing"
    assert result["reply"] == "served waiting\n"
    assert result["served_after"] <= 2.0
    if not is_stdlib(ss):  # the stdlib spins in accept() for the whole time (about 2 s of CPU)
        assert result["cpu"] <= 0.2


# --- 3. mixed clients: every reply, every error counted once, nothing left behind -------------

MIX = ["good"] * 12 + ["raise"] * 3 + ["reset"] * 3 + ["vanish"] * 2  # per 20 clients
CLIENTS = 3000
CLIENT_THREADS = 8


def mixed_client(kind, address, number, failures):
    try:
        client = socket.create_connection(address, timeout=TIMEOUT)
    except OSError as exc:
        failures.append((number, kind, f"connect: {exc!r}"))
        return
    with client:
        try:
            if kind == "good":
                client.sendall(b"hello %d\n" % number)
                reply = _read_all(client)
                if reply != b"ok hello %d\n" % number:
                    failures.append((number, kind, reply))
            elif kind == "raise":
                client.sendall(b"RAISE\n")
                reply = _read_all(client)
                if reply != b"":
                    failures.append((number, kind, reply))
            elif kind == "reset":
                client.sendall(b"partial li")
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            # "vanish": connect, then close at once
        except OSError as exc:
            failures.append((number, kind, repr(exc)))


def _read_all(client):
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_mixed_clients_are_all_answered_and_nothing_leaks(ss):
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    lock = threading.Lock()
    counts = dict.fromkeys(["started", "finished", "replied", "raised", "incomplete",
                            "connection_error"], 0)
    errors = []

    def bump(name):
        with lock:
            counts[name] += 1

    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT  # a handler never waits forever; a timeout would go to handle_error

        def handle(self):
            bump("started")
            try:
                line = self.rfile.readline()
                if line == b"RAISE\n":
                    bump("raised")
                    raise RuntimeError("marker request")
                if not line.endswith(b"\n"):
                    bump("incomplete")  # reset or vanished clients
                    return
                self.wfile.write(b"ok " + line)
                bump("replied")
            except ConnectionError:
                bump("connection_error")  # reset clients, counted apart from handle_error
            finally:
                bump("finished")

    server = make_server(ss, "tcp", Handler, base="ThreadingTCPServer", request_queue_size=128,
                         handle_error=quiet_errors(errors, lock))
    failures = []
    kinds = [MIX[number % len(MIX)] for number in range(CLIENTS)]

    def client_thread(first):
        for number in range(first, CLIENTS, CLIENT_THREADS):
            mixed_client(kinds[number], server.server_address, number, failures)

    start = time.monotonic()
    with serving(server):
        clients = [threading.Thread(target=client_thread, args=(n,), daemon=True)
                   for n in range(CLIENT_THREADS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        assert not any(thread.is_alive() for thread in clients), "clients hung"
        # The last requests of reset/vanished clients may still be running: wait for them.
        wait_until(lambda: counts["started"] == counts["finished"], timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    print(f"\n[{core_of(ss)}] {CLIENTS} mixed clients in {elapsed:.2f} s: {counts}")

    assert failures == []
    assert counts["replied"] == kinds.count("good")
    assert counts["raised"] == kinds.count("raise")
    assert len(errors) == kinds.count("raise"), [repr(e) for e in errors[:5]]
    assert all(isinstance(e, RuntimeError) and str(e) == "marker request" for e in errors), \
        {repr(e) for e in errors}
    assert counts["started"] == counts["finished"]
    assert counts["started"] <= CLIENTS
    extra = counts["started"] - kinds.count("good") - kinds.count("raise")
    assert extra == counts["incomplete"] + counts["connection_error"]
    leaked_fds = open_fds() - fds_before
    assert not leaked_fds, describe_fds(leaked_fds)
    leaked_threads = set(threading.enumerate()) - threads_before
    assert not leaked_threads, leaked_threads


# --- 4. resident memory over many connections -------------------------------------------------

MEMORY_CHILD = """\
import os, threading

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())

class Server(ss.ThreadingTCPServer):
    request_queue_size = 128

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

server = Server(("127.0.0.1", 0), Handler)
thread = threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True)
thread.start()
print(server.server_address[1], flush=True)
for command in sys.stdin:
    if command.strip() != "rss":
        break
    print(rss(), threading.active_count(), flush=True)
server.shutdown()
server.server_close()
print("closed", threading.active_count(), flush=True)
"""
WARM_UP = 2000
# Measured on a shared 2-core box: 30,000 connections take 4-10 s on fastserver's cores and
# 15-21 s on the stdlib; the stdlib (only a reference here) runs 10,000 to keep this file's
# total under 90 s.
CONNECTIONS = {"cython": 30000, "python": 30000, "stdlib": 10000}
MAX_GROWTH = 4 * 1024 * 1024


def test_resident_memory_stays_flat_over_many_connections(ss):
    proc = spawn(MEMORY_CHILD, ss)
    try:
        address = ("127.0.0.1", int(read_line(proc)))

        def rss():
            proc.stdin.write("rss\n")
            proc.stdin.flush()
            size, threads = read_line(proc).split()
            return int(size), int(threads)

        failures = []

        def connect(count):
            for number in range(count):
                try:
                    reply = ask(address, b"n%d\n" % number)
                except OSError as exc:
                    failures.append(repr(exc))
                    return
                if reply != b"n%d\n" % number:
                    failures.append(reply)
                    return

        def run(total, threads=2):
            workers = [threading.Thread(target=connect, args=(total // threads,), daemon=True)
                       for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(120)
            assert not any(worker.is_alive() for worker in workers), "clients hung"

        run(WARM_UP)
        before, _ = rss()
        start = time.monotonic()
        run(CONNECTIONS[core_of(ss)])
        elapsed = time.monotonic() - start
        after, threads = rss()
        assert failures == []
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        code, out, err = finish(proc, TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    growth = after - before
    print(f"\n[{core_of(ss)}] RSS {before / 2**20:.2f} -> {after / 2**20:.2f} MiB "
          f"({growth / 2**10:+.0f} KiB) over {CONNECTIONS[core_of(ss)]} connections "
          f"in {elapsed:.1f} s; {threads} threads")
    assert code == 0, err
    assert growth <= MAX_GROWTH


# --- 5. idle connections do not starve a well-behaved client ----------------------------------

IDLE = 200


def test_idle_flood_does_not_starve_a_client(ss):
    lock = threading.Lock()
    errors = []

    class Handler(ss.StreamRequestHandler):
        timeout = 1

        def handle(self):
            self.wfile.write(b"ok " + self.rfile.readline())

    # Configured against it: at most 8 request threads, and a connection gets one only once it
    # has sent something (first_data_timeout; the stdlib, without it, starts a thread each).
    server = make_server(ss, "tcp", Handler, base="ThreadingTCPServer", max_threads=8,
                         first_data_timeout=1.0, request_queue_size=IDLE + 56,
                         handle_error=quiet_errors(errors, lock))
    base_threads = threading.active_count()
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.wait(0.01):
            peak[0] = max(peak[0], threading.active_count() - base_threads)

    idle = []
    sampler = threading.Thread(target=sample, daemon=True)
    latency = None
    try:
        with serving(server):
            sampler.start()
            for _ in range(IDLE):
                idle.append(socket.create_connection(server.server_address, timeout=TIMEOUT))
            start = time.monotonic()
            try:
                reply = ask(server.server_address, b"hello\n", timeout=5.0)
            except TimeoutError:
                reply = None
            latency = time.monotonic() - start
            sampling.set()
            sampler.join(TIMEOUT)
            for client in idle:
                client.close()
            idle.clear()
    finally:
        sampling.set()
        for client in idle:
            client.close()
    # minus the sampler and serve_forever threads themselves
    request_threads = peak[0] - 2
    print(f"\n[{core_of(ss)}] {IDLE} idle connections: client answered in {latency:.3f} s "
          f"({reply!r}); peak request threads {request_threads}")
    assert reply == b"ok hello\n", f"no reply within 5 s ({latency:.2f} s)"
    assert latency <= 5.0
    if not is_stdlib(ss):  # the stdlib starts a thread per connection: that is the contrast
        assert request_threads <= 8 + 2


# --- 6. a graceful stop ----------------------------------------------------------------------

def test_no_connection_is_served_after_shutdown(ss):
    served = []
    server = make_server(ss, "tcp", line_handler(ss, lambda line: served.append(line) or line))
    try:
        with serving(server, close=False):
            assert talk(server, b"before\n") == b"before\n"
        late = client_for(server)  # lands in the backlog; nobody accepts it any more
        late.sendall(b"late\n")
        late.settimeout(0.5)
        with pytest.raises(TimeoutError):
            late.recv(100)
    finally:
        server.server_close()
    with late:
        late.settimeout(TIMEOUT)
        assert closed_by_peer(late)  # reset (or EOF) once the listener is closed
    with pytest.raises(ConnectionRefusedError), socket.socket() as again:
        again.settimeout(TIMEOUT)
        again.connect(server.server_address)
    assert served == [b"before\n"]


def test_accepted_connections_are_finished_not_abandoned(ss):
    entered = []

    def respond(line):
        entered.append(line)
        time.sleep(0.2)
        return b"done " + line

    server = make_server(ss, "tcp", line_handler(ss, respond), base="ThreadingTCPServer",
                         request_queue_size=32)
    clients = [client_for(server) for _ in range(8)]
    outcomes = []
    try:
        with serving(server, close=False):
            for number, client in enumerate(clients):
                client.sendall(b"c%d\n" % number)
            assert wait_until(lambda: entered)
        server.server_close()  # block_on_close: the running requests finish first
        for client in clients:
            try:
                outcomes.append(_read_all(client))
            except ConnectionResetError:
                outcomes.append("reset")
            except TimeoutError:
                outcomes.append("hung")
    finally:
        server.server_close()
        for client in clients:
            client.close()
    replies = [o for o in outcomes if isinstance(o, bytes) and o]
    assert "hung" not in outcomes, outcomes
    assert len(replies) == len(entered), outcomes
    assert all(o in (b"", "reset") or o.startswith(b"done c") for o in outcomes), outcomes


def test_server_close_waits_for_running_handlers(ss):
    started = threading.Event()
    finished = []

    def respond(line):
        started.set()
        time.sleep(0.5)
        finished.append(line)
        return line

    server = make_server(ss, "tcp", line_handler(ss, respond), base="ThreadingTCPServer")
    client = None
    try:
        with serving(server, close=False):
            client = client_for(server)
            client.sendall(b"slow\n")
            assert started.wait(TIMEOUT)
        start = time.monotonic()
        bounded(server.server_close)
        waited = time.monotonic() - start
        assert finished == [b"slow\n"]
        assert waited >= 0.2
        assert _read_all(client) == b"slow\n"
    finally:
        server.server_close()
        if client is not None:
            client.close()


def test_stuck_daemon_handler_does_not_hang_server_close(ss):
    started = threading.Event()
    release = threading.Event()
    exited = threading.Event()

    class Handler(ss.StreamRequestHandler):
        def handle(self):
            started.set()
            try:
                release.wait(60)
            finally:
                exited.set()

    server = make_server(ss, "tcp", Handler, base="ThreadingTCPServer", daemon_threads=True,
                         block_on_close=False)
    client = None
    try:
        with serving(server, close=False):
            client = client_for(server)
            assert started.wait(TIMEOUT)
        start = time.monotonic()
        bounded(server.server_close, timeout=2.0)
        assert time.monotonic() - start < 1.0
        assert not exited.is_set()
    finally:
        release.set()
        assert exited.wait(TIMEOUT)
        server.server_close()
        if client is not None:
            client.close()


# --- 7. signals -------------------------------------------------------------------------------

SIGINT_CHILD = """\
import signal
# An ignored SIGINT is inherited (pytest under nohup, or started with & by a script), and Python
# then installs no handler of its own: take the one an interactive program has.
signal.signal(signal.SIGINT, signal.default_int_handler)

class Handler(ss.BaseRequestHandler):
    pass

server = getattr(ss, sys.argv[3])(("127.0.0.1", 0), Handler)
print("ready", flush=True)
server.serve_forever(poll_interval=float(sys.argv[2]))
"""


def spawn_with_sigint(disposition, *args):
    """spawn(*args), the child inheriting SIGINT's ``disposition`` ("ignored": as when pytest
    runs under nohup, or with & from a script)."""
    if disposition == "default":
        return spawn(*args)
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal.signal() needs the main thread")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return spawn(*args)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
@pytest.mark.parametrize("server_class", ["TCPServer", "ThreadingTCPServer"])
def test_sigint_interrupts_serve_forever(ss, server_class, inherited):
    poll = 0.5 if is_stdlib(ss) else 10.0
    proc = spawn_with_sigint(inherited, SIGINT_CHILD, ss, poll, server_class)
    try:
        assert read_line(proc) == "ready\n"
        time.sleep(0.3)  # inside serve_forever's wait
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGINT did not stop serve_forever()")
        elapsed = time.monotonic() - start
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"\n[{core_of(ss)}] SIGINT -> exit in {elapsed:.3f} s (poll_interval={poll})")
    assert proc.returncode in (1, -signal.SIGINT), err
    assert "KeyboardInterrupt" in err
    assert "serve_forever" in err
    assert elapsed <= 1.0


# --- 8. ForkingMixIn: every child reaped, max_children honoured -------------------------------

def test_forking_reaps_children_and_honours_max_children(ss):
    if not hasattr(os, "fork"):
        pytest.skip("no fork() here")
    fd, log = tempfile.mkstemp(prefix="fs-fork-")
    os.close(fd)

    class Handler(ss.StreamRequestHandler):
        def handle(self):
            begin = time.monotonic()
            line = self.rfile.readline()
            time.sleep(0.3)
            end = time.monotonic()
            record = os.open(log, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(record, b"%d %.6f %.6f\n" % (os.getpid(), begin, end))
            finally:
                os.close(record)
            self.wfile.write(b"ok " + line)

    server = make_server(ss, "tcp", Handler, base="ForkingTCPServer", max_children=2,
                         request_queue_size=16)
    replies = []
    try:
        with serving(server):
            def one(number):
                replies.append(ask(server.server_address, b"f%d\n" % number))

            clients = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(6)]
            for client in clients:
                client.start()
            for client in clients:
                client.join(TIMEOUT * 2)
            assert not any(client.is_alive() for client in clients)
        with open(log) as f:
            records = [line.split() for line in f]
    finally:
        os.unlink(log)
    assert sorted(replies) == [b"ok f%d\n" % n for n in range(6)]
    assert len({pid for pid, _, _ in records}) == 6
    events = sorted([(float(begin), 1) for _, begin, _ in records]
                    + [(float(end), -1) for _, _, end in records])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most <= 2, records
    zombies = {pid: state for pid, state in children_of(os.getpid()).items() if state == "Z"}
    assert not zombies
    assert not server.active_children
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


# --- 9. worker processes ----------------------------------------------------------------------

WORKERS_CHILD = """\
import os

class Handler(ss.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        if line == b"slow\\n":  # a request in flight: it goes on when the client says so
            self.wfile.write(b"busy %d\\n" % os.getpid())
            self.rfile.readline()
        self.wfile.write(b"%d\\n" % os.getpid())

class Server(ss.ThreadingTCPServer):
    workers = 3
    request_queue_size = 128

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever(poll_interval=0.5)
server.server_close()
print("stopped", flush=True)
"""


def settled_workers(proc, replacing=frozenset(), timeout=TIMEOUT):
    """The 3 workers of the supervisor ``proc`` once it runs exactly 3, none of them in
    ``replacing`` (checked on one scan of /proc, which is the one returned: a worker that has
    exited but is not reaped yet, or one being forked, never makes a count right by chance);
    None if that does not happen within ``timeout``."""
    seen = set()

    def settled():
        seen.clear()
        seen.update(live_children(proc.pid))
        return len(seen) == 3 and not seen & replacing

    return set(seen) if wait_until(settled, timeout=timeout) else None


def test_workers_respawn_reload_and_stop_gracefully(fast):
    proc = spawn(WORKERS_CHILD, fast)
    try:
        address = ("127.0.0.1", int(read_line(proc)))
        workers = settled_workers(proc)
        assert workers, "the supervisor did not start 3 workers"

        # every worker answers
        answered = set()
        for _ in range(300):
            answered.add(int(ask(address)))
            if answered == workers:
                break
        assert answered == workers

        # a killed worker is replaced within a second
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        workers = settled_workers(proc, replacing={victim}, timeout=2.0)
        replaced_in = time.monotonic() - start
        assert workers, "the killed worker was not replaced"
        assert replaced_in <= 1.0
        assert int(ask(address)) in workers

        # SIGHUP replaces every worker without refusing a connection
        outcomes = []
        reloading = threading.Event()

        def keep_connecting():
            for _ in range(5000):
                if reloading.is_set():
                    break
                try:
                    outcomes.append(int(ask(address)))
                except (OSError, ValueError) as exc:
                    outcomes.append(repr(exc))

        client = threading.Thread(target=keep_connecting, daemon=True)
        client.start()
        try:
            assert wait_until(lambda: outcomes), "no answer before the reload"
            os.kill(proc.pid, signal.SIGHUP)
            new_workers = settled_workers(proc, replacing=workers)
            # the client goes on until a new worker has answered it
            answered_by_new = new_workers and wait_until(lambda: set(outcomes) & new_workers)
        finally:
            reloading.set()
            client.join(TIMEOUT)
        assert new_workers, "the old workers were not replaced"
        errors = [o for o in outcomes if not isinstance(o, int)]
        assert errors == [], errors
        assert answered_by_new, "no new worker answered during the reload"
        assert live_children(proc.pid) == new_workers
        workers = new_workers

        # SIGTERM: a request in flight completes, every worker exits, the parent returns
        with socket.create_connection(address, timeout=TIMEOUT) as slow, \
                slow.makefile("rb") as replies:
            slow.sendall(b"slow\n")
            busy = int(replies.readline().split()[1])  # its handler has begun
            os.kill(proc.pid, signal.SIGTERM)
            idle = workers - {busy}
            assert wait_until(lambda: not [pid for pid in idle if alive(pid)]), \
                "the idle workers did not stop"
            assert alive(busy), "the busy worker exited before its request was done"
            assert proc.poll() is None, "the supervisor returned before its workers exited"
            slow.sendall(b"go\n")
            reply = replies.read()
        code, out, err = finish(proc, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, err
    assert out.splitlines()[-1] == "stopped"
    assert busy in workers
    assert reply == b"%d\n" % busy
    assert not [pid for pid in workers if alive(pid)], "orphaned workers"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_stop_when_the_supervisor_is_killed(fast):
    proc = spawn(WORKERS_CHILD, fast)
    try:
        address = ("127.0.0.1", int(read_line(proc)))
        workers = settled_workers(proc)
        assert workers, "the supervisor did not start 3 workers"
        assert int(ask(address)) in workers
        proc.kill()  # SIGKILL: no chance to stop them itself
        code, _, _ = finish(proc, TIMEOUT)  # their pipes close as they exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == -signal.SIGKILL
    assert wait_until(lambda: not [pid for pid in workers if alive(pid)], timeout=TIMEOUT), \
        "orphaned workers still running"


# --- 10. bad input (beyond tests/test_bad_input.py) -------------------------------------------

def test_negative_request_queue_size_is_accepted(ss):
    # listen() takes a negative backlog as 0, in the stdlib as here
    server = make_server(ss, "tcp", line_handler(ss), request_queue_size=-1)
    with serving(server):
        assert talk(server, b"x\n") == b"ok x\n"


def test_huge_request_queue_size_overflows_without_leaking(ss):
    before = open_fds()
    with pytest.raises(OverflowError):
        make_server(ss, "tcp", line_handler(ss), request_queue_size=2**40)
    assert open_fds() == before  # the constructor closed its socket


@pytest.mark.parametrize("size", [0, -1])
def test_udp_max_packet_size_not_positive(ss, size):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(b"got %d bytes" % len(self.packet))

    server = make_server(ss, "udp", Handler, max_packet_size=size)
    try:
        with client_for(server) as client:
            client.sendto(b"data", server.server_address)
            if size == 0:  # recvfrom(0): the datagram is consumed, empty
                bounded(server.handle_request)
                assert client.recv(100) == b"got 0 bytes"
            else:  # recvfrom(-1): ValueError, out of handle_request as in the stdlib
                with pytest.raises(ValueError):
                    bounded(server.handle_request)
    finally:
        server.server_close()


@pytest.mark.parametrize("workers, error", [(0, ValueError), (-2, ValueError),
                                            ("3", TypeError), (True, TypeError),
                                            (2.0, TypeError)])
def test_invalid_workers_raise_at_serve_forever(fast, workers, error):
    server = make_server(fast, "tcp", line_handler(fast), workers=workers)
    try:
        with pytest.raises(error):
            bounded(server.serve_forever, 0.05)
        assert children_of(os.getpid()) == {}
    finally:
        server.server_close()


@pytest.mark.parametrize("setting, value, error", [
    ("max_threads", 0, ValueError), ("max_threads", -1, ValueError),
    ("max_threads", "3", TypeError), ("max_threads", True, TypeError),
    ("first_data_timeout", 0, ValueError), ("first_data_timeout", -1.5, ValueError),
    ("first_data_timeout", float("nan"), ValueError), ("first_data_timeout", "1", TypeError),
])
def test_invalid_settings_raise_when_a_loop_starts(fast, setting, value, error):
    # Not a hang (a pool that can never run a request) and not a late error per request: the
    # loop refuses to start, the listening socket stays usable.
    server = make_server(fast, "tcp", line_handler(fast), base="ThreadingTCPServer",
                         **{setting: value})
    try:
        with pytest.raises(error, match=setting):
            bounded(server.serve_forever, 0.05)
        with pytest.raises(error, match=setting):
            server.handle_request()
        setattr(server, setting, None)
        with serving(server):
            assert ask(server.server_address, b"still\n") == b"ok still\n"
    finally:
        server.server_close()


def test_non_socket_descriptor_is_refused_at_creation(ss):
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            socket.socket(fileno=read_end)
        assert info.value.errno == errno.ENOTSOCK
        os.fstat(read_end)  # still open: the failed constructor did not take it
        if not is_stdlib(ss):
            with pytest.raises((TypeError, AttributeError)):
                ss.TCPServer.from_socket(read_end, line_handler(ss))
    finally:
        os.close(read_end)
        os.close(write_end)


WORKER_GAP_CHILD = """\
import os
import time

SUPERVISOR = os.getpid()

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"%d\\n" % os.getpid())

class Server(ss.ThreadingTCPServer):
    workers = 2

    @property
    def worker_id(self):
        return self.__dict__.get("_worker_id")

    @worker_id.setter
    def worker_id(self, value):  # the worker's first step after fork(): held open here
        self.__dict__["_worker_id"] = value
        if value is not None and os.getpid() != SUPERVISOR:
            os.write(1, b"forked %d\\n" % os.getpid())  # one write: the two workers share stdout
            time.sleep(1.0)

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever(poll_interval=0.5)
server.server_close()
"""


def test_a_worker_stopped_as_it_starts_stops(fast):
    # SIGTERM between fork() and the worker's own handlers: the worker must still stop (it ran
    # the supervisor's handler there, and then forgot the request as it reset its state)
    proc = spawn(WORKER_GAP_CHILD, fast)
    try:
        read_line(proc)  # the port
        words = read_line(proc).split()
        assert words[0] == "forked", words
        worker = int(words[1])
        os.kill(worker, signal.SIGTERM)  # while its worker_id setter sleeps
        assert wait_until(lambda: not alive(worker), timeout=TIMEOUT), \
            "the worker did not stop: the SIGTERM was lost"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            finish(proc, TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
