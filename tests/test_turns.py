"""Request threads take turns running Python (ThreadingMixIn.request_turns, csrc/turn.c).

A thread whose runs use much CPU holds the turn from the end of one wait on its connection to the
start of the next, so that busy threads stop trading the GIL at every syscall. What must hold:
while one holds the turn no other turn-taking thread runs; a holder that blocks elsewhere loses
the turn after the switch interval (no deadlock, no long stall); light handlers never wait for a
turn; ``request_turns = False`` switches it off. Without a GIL (a free-threaded build running
without it) there is nothing to take turns for: nobody takes one.
"""

import contextlib
import os
import sys
import threading
import time

import pytest
from helpers import TIMEOUT, client_for, make_server, serving, using

import fastserver

# A burst goes on until the other thread's has begun and then AFTER_THE_OTHER more steps, or for
# BURST_SECONDS after the other began to wait for the turn, or for LONGEST_BURST at most: without
# turns the two interleave (however late the other begins: it takes the GIL at one of the
# burst's releases), with them the first runs alone to the end, well within a patience of
# PATIENCE seconds from the start of the other's wait.
BURST_SECONDS = 0.5
LONGEST_BURST = 3.0
AFTER_THE_OTHER = 20
PATIENCE = 2.0

GIL_ENABLED = getattr(sys, "_is_gil_enabled", lambda: True)()
needs_gil = pytest.mark.skipif(
    not GIL_ENABLED, reason="no GIL: nobody takes turns (test_without_the_gil_nobody_takes_turns)")


@pytest.fixture
def compiled():
    with using("cython") as module:
        if fastserver._cores.active.turns is None:
            pytest.fail("the compiled core runs without the compiled stream files")
        yield module


def turn_stats():
    return fastserver._cores.active.turns.turn_stats()


@contextlib.contextmanager
def switch_interval(seconds):
    """The interpreter's switch interval, which is also how long a turn waiter is patient
    (read when a request thread starts)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def spin(seconds):
    """Use ``seconds`` of this thread's CPU in Python."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def line_server(module, commands, **attrs):
    """A threading server whose handler runs ``commands[line]`` for each line it reads, then
    answers b"ok"."""

    class Handler(module.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                commands[line.strip()](self)
                self.wfile.write(b"ok\n")

    return make_server(module, "tcp", Handler, base="ThreadingTCPServer", **attrs)


def ask(client, command):
    client.sendall(command + b"\n")
    return client.recv(64)


def ask_all(clients, command):
    """Send ``command`` on every connection at once, then check that each answered."""
    for client in clients:
        client.sendall(command + b"\n")
    for client in clients:
        assert client.recv(64) == b"ok\n"


def heavy_clients(server, count, turns=True):
    """``count`` connections whose handlers have run long enough to take turns from now on.

    With ``turns``, each handler burns until a run of its own has taken the turn: only then is
    it known to be heavy. (A run ends only where the thread waits for its connection: a request
    that arrives before the thread has read again, its CPU taken by the client just woken, is part
    of the same run, so that a count of requests says nothing of the runs.)"""
    clients = [client_for(server) for _ in range(count)]
    try:
        for client in clients:
            for _ in range(200):  # a thread that lost a turn takes none for 64 runs
                taken = turn_stats()[0] if turns else None
                assert ask(client, b"burn") == b"ok\n"
                if not turns or turn_stats()[0] > taken:  # the others wait for data: it took it
                    break
            else:
                pytest.fail("a handler that burns CPU on every run never took the turn")
        if not turns:
            for _ in range(2):
                for client in clients:
                    assert ask(client, b"burn") == b"ok\n"
    except BaseException:
        for client in clients:  # else their handlers read on, and server_close() waits
            client.close()
        raise
    return clients


def bursts(log):
    """How many times the thread that appended to ``log`` changed along it."""
    return sum(1 for a, b in zip(log, log[1:], strict=False) if a != b)


def concurrent_bursts(module, turns=True, **attrs):
    """Two heavy connections each asked for a burst of GIL-releasing work at the same moment:
    (the thread idents in the order the bursts ran, turn_stats() before, after).

    A burst begins only once both requests are sent: the client thread needs the GIL between
    its two sends, and a burst releases it only for moments, which a thread that has lost its
    CPU misses (with a switch interval of PATIENCE nothing forces a hand-off): on a busy machine
    the second request could otherwise come after the first burst had ended, nobody waiting."""
    log = []
    begun = set()
    sent = threading.Event()
    waits_before = []

    def burst(handler):
        assert sent.wait(TIMEOUT)
        me = threading.get_ident()
        begun.add(me)
        end = time.monotonic() + LONGEST_BURST
        other_waits = False
        steps_after_the_other = 0
        while time.monotonic() < end and steps_after_the_other < AFTER_THE_OTHER:
            log.append(me)
            os.stat(".")  # releases the GIL: without turns, the other thread takes it here
            if len(begun) == 2:
                steps_after_the_other += 1
            elif not other_waits and turn_stats()[1] > waits_before[0]:
                other_waits = True  # for the turn this thread holds
                end = min(end, time.monotonic() + BURST_SECONDS)

    commands = {b"burn": lambda handler: spin(0.003), b"burst": burst}
    server = line_server(module, commands, **attrs)
    with serving(server):
        clients = heavy_clients(server, 2, turns)
        try:
            before = turn_stats()
            waits_before.append(before[1])
            for client in clients:
                client.sendall(b"burst\n")
            sent.set()
            for client in clients:
                assert client.recv(64) == b"ok\n"
            after = turn_stats()
        finally:
            sent.set()
            for client in clients:
                client.close()
    return log, before, after


PATHS = {"the threads accept": {}, "the loop accepts (thread pool)": {"first_data_timeout": 5}}


@needs_gil
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_turn_holder_runs_alone_between_its_waits(compiled, path):
    with switch_interval(PATIENCE):
        log, before, after = concurrent_bursts(compiled, **PATHS[path])
    assert len(set(log)) == 2
    assert bursts(log) == 1  # one thread's whole burst, then the other's
    # One of them waited for the turn, and took it (the other may hold it since its last burn:
    # the burst is then part of that run).
    assert after[1] > before[1]
    assert after[0] > before[0]


def test_without_request_turns_the_threads_trade_the_gil(compiled):
    """The control for the test above: the same bursts interleave, and no turn is taken."""
    with switch_interval(PATIENCE):
        log, before, after = concurrent_bursts(compiled, turns=False, request_turns=False)
    assert after == before
    assert len(set(log)) == 2
    assert bursts(log) > 1


def test_a_holder_blocked_elsewhere_loses_the_turn(ss):
    """A request that holds the turn and waits for another request (a lock, an event) does not
    deadlock the server: the other takes the turn once the switch interval has passed. The
    thread that lost it takes no turn for a while, so that doing the same again costs nothing."""
    released = threading.Event()
    waiting = threading.Event()

    def wait(handler):
        waiting.set()
        released.wait(TIMEOUT)

    commands = {
        b"burn": lambda handler: spin(0.003),
        b"wait": wait,
        b"release": lambda handler: released.set(),
    }
    with switch_interval(0.05):
        server = line_server(ss, commands)
        with serving(server):
            turns = (ss is fastserver and fastserver._cores.active.turns is not None
                     and GIL_ENABLED)
            waiter, releaser = heavy_clients(server, 2, turns)
            try:
                stats = turn_stats() if turns else None
                for _ in range(5):
                    released.clear()
                    waiting.clear()
                    waiter.sendall(b"wait\n")
                    # the waiter holds the turn (compiled core) and blocks
                    assert waiting.wait(TIMEOUT)
                    started = time.monotonic()
                    assert ask(releaser, b"release") == b"ok\n"
                    assert waiter.recv(64) == b"ok\n"
                    assert time.monotonic() - started < 2.0
                    for client in (waiter, releaser):  # heavy again
                        for _ in range(2):
                            assert ask(client, b"burn") == b"ok\n"
            finally:
                waiter.close()
                releaser.close()
    if stats is not None:
        assert turn_stats()[2] - stats[2] == 1  # taken from the blocked holder, once


def test_light_handlers_do_not_take_turns(compiled):
    """An echo handler's runs are short: its threads do not take the turn (waiting for it would
    cost more than the GIL hand-offs it saves). Two runs in a row that something else lengthened
    (an interrupt, a garbage collection) may take one."""
    commands = {b"echo": lambda handler: None}
    server = line_server(compiled, commands)
    with serving(server):
        clients = [client_for(server) for _ in range(4)]
        try:
            before = turn_stats()
            for _ in range(100):
                ask_all(clients, b"echo")
            after = turn_stats()
        finally:
            for client in clients:
                client.close()
    assert after[0] - before[0] <= 20  # of 400 runs


def make_heavy(turns):
    """Drive the calling thread's runs as a request thread's: long ones (the first is not
    timed, then two heavy ones in a row), so that the next begin_request() takes the turn."""
    for _ in range(3):
        turns.begin_request()
        spin(0.002)
        turns.end_request()


@needs_gil
def test_one_heavy_run_is_not_enough_to_take_the_turn(compiled):
    """A run whose CPU time something else inflated (an interrupt, the kernel's side of a send)
    must not make a light handler wait for turns: only two heavy runs in a row take it."""
    turns = fastserver._cores.active.turns
    turns.enroll(True)
    try:
        for _ in range(2):  # long on the wall clock (not timed), then heavy once
            turns.begin_request()
            spin(0.002)
            turns.end_request()
        before = turn_stats()
        turns.begin_request()
        took_after_one = turn_stats()[0] - before[0]
        spin(0.002)  # heavy twice in a row
        turns.end_request()
        turns.begin_request()
        took_after_two = turn_stats()[0] - before[0] - took_after_one
        turns.end_request()
    finally:
        turns.enroll(False)
    assert (took_after_one, took_after_two) == (0, 1)


@needs_gil
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
def test_a_child_forked_while_the_turn_is_held_starts_with_it_free(compiled):
    """fork() copies the turn's state but not the thread that held it: a request thread of the
    child must not wait for a holder that does not exist there."""
    turns = fastserver._cores.active.turns
    with switch_interval(2.0):
        turns.enroll(True)
        try:
            make_heavy(turns)
            turns.begin_request()  # holds the turn now
            pid = os.fork()
            if pid == 0:  # the child: a thread that takes turns there
                code = 1
                try:
                    def child_request():
                        nonlocal code
                        turns.enroll(True)
                        make_heavy(turns)
                        before = turns.turn_stats()
                        turns.begin_request()
                        after = turns.turn_stats()
                        turns.end_request()
                        code = 0 if after[0] == before[0] + 1 and after[1] == before[1] else 2

                    thread = threading.Thread(target=child_request)
                    thread.start()
                    thread.join()
                finally:
                    os._exit(code)
            turns.end_request()
        finally:
            turns.enroll(False)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # took the turn without waiting


@pytest.mark.skipif(GIL_ENABLED, reason="with the GIL, the tests above check the turns")
def test_without_the_gil_nobody_takes_turns(compiled):
    """Without a GIL, request threads run Python at once: a heavy thread does not take the
    turn, and the bursts of two heavy handlers interleave as with request_turns False."""
    turns = fastserver._cores.active.turns
    turns.enroll(True)
    try:
        before = turn_stats()
        make_heavy(turns)
        turns.begin_request()
        turns.end_request()
        assert turn_stats() == before
    finally:
        turns.enroll(False)
    with switch_interval(PATIENCE):
        log, before, after = concurrent_bursts(compiled, turns=False)  # request_turns True
    assert after == before
    assert len(set(log)) == 2
    assert bursts(log) > 1
