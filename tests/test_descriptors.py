"""A request thread costs no descriptor: ThreadingMixIn at 200 concurrent requests holds what the
stdlib holds, plus a constant that does not grow with the number of threads (issue 12, part 2).

On the compiled core (Linux) the request threads accept their own connections; only a fixed few
of the idle ones wait on the listener, each in an epoll instance of its own, and the others park
on a lock (fastserver._acceptors). The stdlib's own figures, taken the same way in the same
session, are the reference.
"""

import gc
import json
import os
import resource
import socket
import socketserver
import subprocess
import sys
import threading

import pytest
from helpers import TIMEOUT, child_env, wait_until

CONCURRENT = 200
# What fastserver's compiled core may hold beyond the stdlib's descriptors, whatever the number of
# threads: its loop's poller and wakeup descriptor, the request threads' stop descriptor and their
# waiting slots (fastserver._acceptors.SLOTS, 8), and a little slack.
EXTRA = 14
HOLD = 30.0  # seconds a handler waits for the test at most (200 connections take long in valgrind)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc/self/fd")


def open_fds():
    """This process's descriptors, as (number, what it is) pairs."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:
            pass  # the directory's own descriptor, or one closed meanwhile
    return found


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors():
    """This process holds both ends of every connection: room for them (and for a core that
    spends a descriptor per thread, so that it fails an assertion, not with EMFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8 * CONCURRENT + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE allows {hard} descriptors, fewer than {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def burst(module, settled):
    """Serve CONCURRENT requests at once on ``module``'s ThreadingTCPServer, each held by its
    handler until all have started. Returns how many descriptors this process holds that it did
    not hold before the server existed (those that earlier tests leave behind may close
    meanwhile: they do not count): at the peak, and once every reply is read and every client
    closed (as soon as no more than ``settled`` remain, or 2 s later; the threads are idle then,
    they retire after 5 s)."""
    lock = threading.Lock()
    running, release = [0], threading.Event()

    class Handler(module.BaseRequestHandler):
        def handle(self):
            self.request.recv(16)
            with lock:
                running[0] += 1
            release.wait(HOLD)
            with lock:
                running[0] -= 1
            self.request.sendall(b"ok")

    class Server(module.ThreadingTCPServer):
        daemon_threads = True
        request_queue_size = 2 * CONCURRENT  # every client connects at once, none is refused

    gc.collect()  # sockets that earlier tests dropped
    base = open_fds()

    def new_fds():
        return len(open_fds() - base)

    server = Server(("127.0.0.1", 0), Handler)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                            name="serve_forever", daemon=True)
    loop.start()
    clients = []
    try:
        for _ in range(CONCURRENT):
            client = socket.create_connection(server.server_address, timeout=TIMEOUT)
            clients.append(client)
            client.sendall(b"x")
        assert wait_until(lambda: running[0] == CONCURRENT, timeout=HOLD)
        peak = new_fds()
        release.set()
        for client in clients:
            assert client.recv(16) == b"ok"
            client.close()
        clients.clear()
        wait_until(lambda: new_fds() <= settled, timeout=2)
        after = new_fds()
    finally:
        release.set()
        for client in clients:
            client.close()
        server.shutdown()
        loop.join(TIMEOUT)
        server.server_close()
    return peak, after


@pytest.fixture(scope="module")
def stdlib_burst():
    """The stdlib's figures, taken once per session: its listener is all that is left."""
    return burst(socketserver, settled=1)


def test_request_threads_hold_no_more_descriptors_than_the_stdlibs(fast, stdlib_burst):
    stdlib_peak, stdlib_after = stdlib_burst
    peak, after = burst(fast, settled=stdlib_after + EXTRA)
    assert stdlib_peak >= 2 * CONCURRENT + 1  # both ends of every connection, and the listener
    assert peak <= stdlib_peak + EXTRA
    # The request threads, idle now, hold no more either.
    assert after <= stdlib_after + EXTRA


# A server in a child process under a low descriptor limit: every handler waits until all of
# CONCURRENT requests run at once (or TOGETHER_TIMEOUT passes) and replies whether they did.
CHILD = r"""
import json, os, resource, sys, threading

core, limit, concurrent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout = float(sys.argv[4])
if core == "stdlib":
    import socketserver as module
else:
    import fastserver as module
    module._use_core(core)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
peak = []  # counted by the last request to arrive, before any is let go
together = threading.Barrier(concurrent, timeout=timeout,
                             action=lambda: peak.append(len(os.listdir("/proc/self/fd"))))

class Handler(module.BaseRequestHandler):
    def handle(self):
        self.request.recv(16)
        try:
            together.wait()
            reply = b"together"
        except threading.BrokenBarrierError:
            reply = b"alone"
        self.request.sendall(reply)

class Server(module.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 2 * concurrent

server = Server(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.readline()  # the test has read every reply
print(json.dumps({"peak": peak[0] if peak else None}), flush=True)
"""
LIMIT = 256
TOGETHER_TIMEOUT = 15.0


def test_every_client_is_served_at_once_under_a_low_descriptor_limit(ss):
    """RLIMIT_NOFILE 256, 200 concurrent requests: the stdlib needs some 210 descriptors for
    them, and so may fastserver; it must not run out and leave requests waiting for others."""
    core = "stdlib" if ss is socketserver else ss.IMPLEMENTATION.split("-")[0]
    child = subprocess.Popen([sys.executable, "-c", CHILD, core, str(LIMIT), str(CONCURRENT),
                              str(TOGETHER_TIMEOUT)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=child_env())
    clients = []
    try:
        port = json.loads(child.stdout.readline())["port"]
        for _ in range(CONCURRENT):
            client = socket.create_connection(("127.0.0.1", port), timeout=TOGETHER_TIMEOUT + 5)
            clients.append(client)
            client.sendall(b"x")
        replies = []
        for client in clients:
            chunks = []
            while chunk := client.recv(16):
                chunks.append(chunk)
            replies.append(b"".join(chunks))
        child.stdin.write("done\n")
        child.stdin.flush()
        peak = json.loads(child.stdout.readline())["peak"]
    finally:
        for client in clients:
            client.close()
        child.kill()
        child.communicate(timeout=TIMEOUT)
    assert replies.count(b"together") == CONCURRENT, (
        f"{replies.count(b'alone')} of {CONCURRENT} requests did not run at the same time as "
        f"the others, {replies.count(b'')} got no reply")
    assert peak is not None and peak < LIMIT
