"""The seam between the API and the cores, and the policy both cores share.

What a core sees of a server (``_seam``: LoopState, Hooks found by ``servers.find_hooks``) and what
it decides (``_policy``) are plain Python: these tests pin them down, then check on real servers
that the cores act on them.
"""

import errno
import threading

import pytest
from helpers import TIMEOUT, make_server, serving, talk

from fastserver import _policy, _seam, servers

# --- the stdlib's private stop flag -----------------------------------------------------------


def test_setting_the_stdlibs_private_flag_stops_serve_forever(ss):
    # Code in the wild stops a loop from a handler so (socketserver has no other way that does
    # not deadlock in the loop's own thread); the flag is the LoopState's on fastserver.
    class Handler(ss.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"bye\n")
            self.server._BaseServer__shutdown_request = True

    server = make_server(ss, "tcp", Handler)
    try:
        loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        loop.start()
        assert talk(server, b"x\n") == b"bye\n"
        loop.join(TIMEOUT)
        assert not loop.is_alive()
    finally:
        server.server_close()


def test_loop_state_wakes_the_running_loop_and_asks_it_to_stop():
    woken = []

    class Loop:
        def wake(self):
            woken.append(True)

    state = _seam.LoopState()
    state.wake()  # no loop: nothing to do
    state.request_shutdown()
    assert state.shutdown_request and woken == []
    state.loop = Loop()
    state.request_shutdown()
    assert woken == [True]


# --- the policy ---------------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets_after_a_success():
    pacing = _policy.Pacing(0.5)
    assert pacing.timeout() == 0.5 and pacing.listener_wanted()
    delays = []
    for _ in range(len(_policy.BACKOFF_MS) + 2):
        pacing.accepted(errno.EMFILE)
        assert not pacing.listener_wanted()
        delays.append(pacing.timeout())
        assert pacing.resume()  # the wait was the back-off: the listener is left alone once
        assert not pacing.resume()
    assert delays == [ms / 1000 for ms in _policy.BACKOFF_MS] + [0.05, 0.05]
    pacing.accepted(errno.EAGAIN)  # drained, not failing: no back-off
    pacing.accepted(errno.ENFILE)
    assert pacing.timeout() == _policy.BACKOFF_MS[0] / 1000


def test_pacing_waits_no_longer_than_poll_interval_back_off_or_the_next_parked_deadline():
    class Silent:
        ready = ()

        def __init__(self, due):
            self.due = due

        def next_timeout(self):
            return self.due

    pacing = _policy.Pacing(None)
    assert pacing.timeout() is None
    assert pacing.timeout(Silent(None)) is None
    assert pacing.timeout(Silent(0.25)) == 0.25
    pacing.accepted(errno.ENOMEM)
    assert pacing.timeout(Silent(0.25)) == 0.001
    assert _policy.Pacing(0.1).timeout(Silent(3.0)) == 0.1


def test_the_listener_waits_while_no_thread_is_free_or_a_readable_connection_waits():
    pacing = _policy.Pacing(0.5)
    assert not pacing.listener_wanted(accepting=lambda: False)
    assert pacing.listener_wanted(accepting=lambda: True)

    class Parking:
        ready = ["a parked connection, readable"]
        first_data_timeout = 1.0  # new connections are held until they speak: no thread needed

    assert not pacing.listener_wanted(lambda: True, Parking())
    Parking.ready = []
    assert pacing.listener_wanted(lambda: False, Parking())
    Parking.first_data_timeout = None  # keep-alive only: a new connection needs a thread at once
    assert not pacing.listener_wanted(lambda: False, Parking())
    assert pacing.listener_wanted(lambda: True, Parking())


@pytest.mark.parametrize("socket_timeout, server_timeout, expected",
                         [(None, None, None), (None, 2.0, 2.0), (3.0, None, 3.0),
                          (3.0, 2.0, 2.0), (1.0, 2.0, 1.0)])
def test_handle_request_waits_the_shorter_timeout(ss, socket_timeout, server_timeout, expected):
    server = make_server(ss, "tcp", ss.BaseRequestHandler, timeout=server_timeout)
    try:
        server.socket.settimeout(socket_timeout)
        assert _policy.request_timeout(server) == expected
    finally:
        server.server_close()


def test_handle_request_waits_again_after_an_interrupted_wait_then_times_out():
    class Server:
        timeout = 0.05

        class socket:
            @staticmethod
            def gettimeout():
                return None

        def handle_timeout(self):
            return "timed out"

    waits = []
    outcome = _policy.handle_request(Server(), lambda t: waits.append(t) or False,
                                     lambda: "handled")
    assert outcome == "timed out"
    assert len(waits) >= 2 and waits[0] == 0.05 and all(t < 0.05 for t in waits[1:])
    assert _policy.handle_request(Server(), lambda t: True, lambda: "handled") == "handled"


# --- the hooks -----------------------------------------------------------------------------------


def test_find_hooks_runs_the_defaults_in_the_core_and_calls_overrides(fast):
    def verify_request(self, request, client_address):
        return True

    for attrs, overridden in (({}, False), ({"verify_request": verify_request}, True)):
        server = make_server(fast, "tcp", fast.BaseRequestHandler, base="ThreadingTCPServer",
                             **attrs)
        try:
            hooks = servers.find_hooks(server)
            assert hooks.accept
            assert (hooks.verify_request is not None) is overridden
            assert hooks.threads_accept is not overridden  # the threads accept unless verified
            assert (hooks.thread_pool is not None) is hooks.threads_accept
            assert hooks.shutdown_request is _seam.SHUTDOWN_TCP
            assert hooks.close_request is _seam.CLOSE_SOCKET
        finally:
            server.server_close()


def test_an_override_on_the_instance_counts_too(fast):
    server = make_server(fast, "tcp", fast.BaseRequestHandler)
    calls = []

    def close_request(request):
        calls.append(request)
        request.close()

    server.close_request = close_request
    assert servers.find_hooks(server).close_request is close_request
    with serving(server):
        assert talk(server, b"x") == b""
    assert len(calls) == 1


# --- the cores, switched together ---------------------------------------------------------------


def test_switching_the_core_switches_its_loops_streams_and_parser(core):
    import fastserver
    from fastserver import proxy

    assert fastserver.IMPLEMENTATION == core.implementation
    assert proxy.IMPLEMENTATION == core.name
    streams = {}

    class Handler(fastserver.StreamRequestHandler):
        def handle(self):
            streams["rfile"] = type(self.rfile).__module__
            self.wfile.write(self.rfile.readline())

    server = make_server(fastserver, "tcp", Handler)
    with serving(server):
        assert talk(server, b"hi\n") == b"hi\n"
    assert (streams["rfile"] == "fastserver._stream") == (core.name == "cython")
    assert (core.turns is not None) == (core.name == "cython")
