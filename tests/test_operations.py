"""Operating fastserver: the supervisor's log and limits, a graceful SIGTERM without workers,
one-line startup errors, the command line's settings (issue 23).

Real processes, signals and sockets on loopback, each server on the compiled and the pure core
(the child gets ``FASTSERVER_NO_EXTENSIONS=1`` for the pure one). Every wait is for something
the test can see (a line of the log, a port that answers, a process that exits), bounded.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest
from helpers import TIMEOUT, child_env, children_of, wait_until
from test_graceful import SIZE, Server, digest, pattern, slow_download

import fastserver
from fastserver import _log, workers

LOG_LINE = re.compile(r"^fastserver\[\d+\] - - \[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] (.*)$")


@pytest.fixture(params=["cython", "python"])
def child_core(request):
    """The core the child processes run on."""
    if request.param not in fastserver._cores.CORES:
        pytest.skip("no compiled core in this installation")
    return request.param


def env_for(core=None, **extra):
    env = child_env()
    env.pop("FASTSERVER_NO_EXTENSIONS", None)
    if core == "python":
        env["FASTSERVER_NO_EXTENSIONS"] = "1"
    env.update(extra)
    return env


def messages(text):
    """The messages of the fastserver log lines in ``text`` (stderr), in order."""
    return [m[1] for line in text.splitlines() if (m := LOG_LINE.match(line))]


class LogServer(Server):
    """test_graceful's Server, and a look at its log (stderr) as it grows."""

    def wait_for_log(self, pattern, count=1, timeout=TIMEOUT * 2):
        """The log's messages once ``count`` of them match ``pattern`` (a regex)."""
        found = []

        def enough():
            found[:] = [m for m in messages(self.errors_all()) if re.search(pattern, m)]
            return len(found) >= count

        assert wait_until(enough, timeout=timeout), (
            f"no {count} log lines matching {pattern!r}; stderr:\n{self.errors()}")
        return found

    def errors_all(self):
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")


def cli(core, tmp_path, *options):
    """``python -m fastserver.http`` on 127.0.0.1 (a port it picks), serving ``tmp_path``."""
    server = LogServer([sys.executable, "-m", "fastserver.http", "--bind", "127.0.0.1",
                        "--directory", str(tmp_path), *options, "0"], core, tmp_path)
    first = server.line()
    assert first.startswith("Serving HTTP on 127.0.0.1 port "), first
    server.port = int(first.split()[5])
    server.request = b"GET /big.bin HTTP/1.0\r\n\r\n"
    return server


def write_big_file(tmp_path):
    with open(tmp_path / "big.bin", "wb") as f:
        for block in pattern(SIZE):
            f.write(block)


def get(port, path="/", timeout=TIMEOUT):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def run(args, timeout=TIMEOUT * 4, core=None, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env_for(core, **env))


# --- the supervisor ---------------------------------------------------------------------------

def test_the_supervisor_logs_starts_exits_replacements_reloads_and_stops(child_core, tmp_path):
    server = cli(child_core, tmp_path, "--workers", "2")
    try:
        started = server.wait_for_log(r"^worker \d \(pid \d+\) started$", count=2)
        pids = {int(re.search(r"pid (\d+)", line)[1]) for line in started}
        assert pids == server.wait_for_workers()
        assert server.wait_for_log(rf"^supervisor \(pid {server.proc.pid}\) starting 2 workers "
                                   rf"on 127\.0\.0\.1 port {server.port}$")
        # a worker killed: its exit (the signal) and its replacement, each one line
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log(rf"^worker \d \(pid {victim}\) was killed by signal 9 \(SIGKILL\)")
        server.wait_for_log(rf"^worker \d \(pid \d+\) started, replacing pid {victim}$")
        assert get(server.port).startswith(b"HTTP/1.0 200")
        # a reload: one line, then the new workers' starts and the old ones' exits
        before = server.wait_for_workers()
        server.signal(signal.SIGHUP)
        server.wait_for_log(r"^SIGHUP: reloading: starting 2 new workers, then retiring pids ")
        for pid in before:
            server.wait_for_log(rf"^worker \d \(pid {pid}\) exited with status 0$")
        assert server.stop() == 0
        log = messages(server.errors_all())
        assert "SIGTERM: stopping 2 workers (graceful_timeout 10 s)" in log
        assert log[-1] == f"supervisor (pid {server.proc.pid}) stopped"
        # every line about a worker names its index and its pid
        for line in log:
            if line.startswith("worker") and "failed to boot" not in line:
                assert re.match(r"^worker \d \(pid \d+\) ", line), line
        assert "Traceback" not in server.errors_all()
    finally:
        server.close()


BOOT_SCRIPT = """\
import os, signal, sys
import fastserver

HOW = sys.argv[1]


class Server(fastserver.ThreadingTCPServer):
    workers = 2
    allow_reuse_address = True

    def service_actions(self):  # each worker, as it starts
        if HOW == "raise":
            raise ValueError("no database")
        os.kill(os.getpid(), signal.SIGKILL)


with Server(("127.0.0.1", 0), fastserver.StreamRequestHandler) as server:
    print(fastserver.IMPLEMENTATION, server.server_address[1], flush=True)
    server.serve_forever(0.05)
"""


@pytest.mark.parametrize("how, cause", [
    ("raise", r"exited with status 1 \(ValueError: no database\)"),
    ("kill", r"was killed by signal 9 \(SIGKILL\)"),
])
def test_workers_that_fail_to_boot_stop_the_supervisor_with_status_3(child_core, how, cause,
                                                                     tmp_path):
    server = LogServer([sys.executable, "-c", BOOT_SCRIPT, how], child_core, tmp_path)
    try:
        assert server.line().startswith(child_core)
        code = server.wait_exit(TIMEOUT * 4)  # and no worker is left
        log = messages(server.errors_all())
        assert code == workers.BOOT_FAILED == 3, server.errors()
        # four replacements, each after a longer delay, then the fifth failure gives up
        delays = [float(m[1]) for line in log
                  if (m := re.search(r"\(\d in a row\): replacing it in ([\d.]+) s$", line))]
        assert delays == [0.25, 0.5, 1, 2], log
        failed = [line for line in log if line.startswith("worker failed to boot: ")]
        assert len(failed) == 1, log
        assert re.search(r"worker \d \(pid \d+\) " + cause, failed[0]), failed
        assert failed[0].endswith("the 5th worker in a row to die within 1 s; stopping the others")
        started = [line for line in log if re.match(r"^worker \d \(pid \d+\) started", line)]
        assert len(started) == 5, log  # each a failure (the 4th one's replacement: never)
        # a failing worker's traceback, at most once for each of the five
        assert server.errors_all().count("Traceback") == (5 if how == "raise" else 0)
    finally:
        server.close()


SPAWN_SCRIPT = """\
import logging, os, signal, sys
import fastserver
from fastserver import workers


class SignalAtFirstStart(logging.Handler):
    # the application's handler: SIGTERM to the supervisor as soon as its first worker started
    def emit(self, record):
        message = record.getMessage()
        print(message, file=sys.stderr, flush=True)
        if message.startswith("worker 0 (pid"):
            os.kill(os.getpid(), signal.SIGTERM)


logging.getLogger("fastserver").addHandler(SignalAtFirstStart())


class Server(fastserver.TCPServer):
    workers = workers.max_workers()
    allow_reuse_address = True


with Server(("127.0.0.1", 0), fastserver.StreamRequestHandler) as server:
    print(fastserver.IMPLEMENTATION, server.workers, flush=True)
    server.serve_forever(0.05)
print("returned", flush=True)
"""


def test_sigterm_while_workers_are_spawned_stops_at_once(child_core, tmp_path):
    server = LogServer([sys.executable, "-c", SPAWN_SCRIPT], child_core, tmp_path)
    try:
        implementation, count = server.line().split()
        assert implementation.startswith(child_core) and int(count) >= 32
        assert server.line() == "returned\n"
        assert server.wait_exit() == 0
        errors = server.errors_all()
        started = re.findall(r"(?m)^worker \d+ \(pid \d+\) started", errors)
        assert 1 <= len(started) <= 3, errors  # not max_workers(): it stopped spawning
        assert "SIGTERM: stopping" in errors
        assert "fastserver[" not in errors  # the application's handler took the lines: no echo
    finally:
        server.close()


def test_too_many_workers_is_a_clear_error():
    limit = workers.max_workers()
    assert limit == 32 * os.cpu_count()

    class Server(fastserver.ThreadingTCPServer):
        workers = limit + 1

    before = set(children_of(os.getpid()))
    with Server(("127.0.0.1", 0), fastserver.StreamRequestHandler) as server:
        with pytest.raises(ValueError, match=rf"workers must be at most {limit} "):
            server.serve_forever(0.05)
    assert set(children_of(os.getpid())) == before
    done = run(["-m", "fastserver.http", "--workers", "100000"])
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        f"error: --workers must be at most {limit} (32 per CPU), not 100000")


# --- logging ----------------------------------------------------------------------------------

LOGGING_SCRIPT = """\
import logging, sys
from fastserver import _log

if sys.argv[1] == "configured":
    logging.basicConfig(format="APP %(name)s %(message)s")
log = _log.logger()
log.info("one %d", 1)
log.debug("hidden")
root = logging.getLogger().handlers
print(root == ([] if sys.argv[1] == "bare" else root), file=sys.stderr)
"""


def test_the_log_goes_to_stderr_once_in_the_stdlibs_style_unless_the_app_configured_logging():
    bare = run(["-c", LOGGING_SCRIPT, "bare"])
    lines = bare.stderr.splitlines()
    assert len(lines) == 2 and LOG_LINE.match(lines[0]), lines
    assert messages(bare.stderr) == ["one 1"]
    assert lines[1] == "True"  # the root logger is left alone
    configured = run(["-c", LOGGING_SCRIPT, "configured"])
    assert configured.stderr.splitlines() == ["APP fastserver one 1", "True"]  # once, theirs


def test_log_level_option_sets_the_fastserver_loggers_level(child_core, tmp_path):
    server = cli(child_core, tmp_path, "--workers", "2", "--log-level", "warning")
    try:
        server.wait_for_workers()
        victim = min(server.workers())
        os.kill(victim, signal.SIGKILL)  # a warning: logged
        server.wait_for_log(rf"\(pid {victim}\) was killed by signal 9")
        assert server.stop() == 0
        assert not [m for m in messages(server.errors_all()) if " started" in m]  # info: not
    finally:
        server.close()


# --- a graceful SIGTERM without workers -------------------------------------------------------

def test_sigterm_without_workers_lets_a_download_finish_and_refuses_new_requests(child_core,
                                                                                tmp_path):
    write_big_file(tmp_path)
    server = cli(child_core, tmp_path)
    outcome = []
    try:
        downloader = threading.Thread(
            target=lambda: outcome.append(slow_download(server, signum=signal.SIGTERM)),
            daemon=True)
        downloader.start()
        server.wait_for_log(r"^SIGTERM: stopped accepting; finishing the requests in flight "
                            r"\(graceful_timeout 10 s\)$")
        try:  # it stopped accepting: a new request gets no reply
            late = get(server.port, timeout=TIMEOUT * 3)
        except OSError:
            late = b""
        assert late == b""
        downloader.join(TIMEOUT * 6)
        assert not downloader.is_alive(), "the download hung"
        received, sha, error = outcome[0]
        assert (received, error) == (SIZE, None), f"cut off; stderr:\n{server.errors()}"
        assert sha == digest(SIZE)
        assert server.wait_exit() == 0
        assert messages(server.errors_all())[-1] == f"server (pid {server.proc.pid}) stopped"
    finally:
        server.close()


def test_a_download_stuck_past_graceful_timeout_is_reset_and_the_process_exits_1(child_core,
                                                                                  tmp_path):
    write_big_file(tmp_path)
    server = cli(child_core, tmp_path, "--graceful-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            client.sendall(server.request)
            assert client.recv(100).startswith(b"HTTP/1.0 200")  # then it stops reading
            server.signal(signal.SIGTERM)
            assert server.wait_exit(TIMEOUT * 2) == 1
            with pytest.raises(ConnectionResetError):
                while client.recv(1 << 20):
                    pass
        assert "still busy 1 s (graceful_timeout)" in server.errors_all()
    finally:
        server.close()


def test_sigint_without_workers_is_still_keyboardinterrupt(child_core, tmp_path):
    server = cli(child_core, tmp_path)
    try:
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0
        assert server.proc.stdout.read().decode().strip() == "Keyboard interrupt received, exiting."
        assert "SIGTERM" not in server.errors_all()
    finally:
        server.close()


# --- startup errors and --version -------------------------------------------------------------

def one_error_line(done, status):
    assert done.returncode == status, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr.splitlines()[-1]


def test_a_port_in_use_is_one_line_and_status_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(["-m", "fastserver.http", "--bind", "127.0.0.1", str(port)])
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert one_error_line(done, 1).endswith(
        f"error: cannot listen on 127.0.0.1 port {port}: Address already in use")


def test_an_unknown_host_is_one_line_and_status_1():
    done = run(["-m", "fastserver.http", "--bind", "no-such-host.invalid", "0"])
    assert done.stderr.count("\n") == 1
    assert "error: cannot resolve no-such-host.invalid: " in one_error_line(done, 1)


@pytest.fixture(scope="module")
def pems(tmp_path_factory):
    """Two self-signed certificates with their keys: {"cert": ..., "key": ..., "other_key"}."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("pems")
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", str(directory / f"{name}.key"),
                        "-out", str(directory / f"{name}.crt")],
                       check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "2", "-subj",
                    "/CN=localhost", "-passout", "pass:secret", "-keyout",
                    str(directory / "locked.key"), "-out", str(directory / "locked.crt")],
                   check=True, capture_output=True, timeout=60)
    (directory / "wrong.txt").write_text("not the secret\n")
    (directory / "garbage.crt").write_text("not a certificate\n")
    return {"cert": str(directory / "a.crt"), "key": str(directory / "a.key"),
            "locked_cert": str(directory / "locked.crt"),
            "locked_key": str(directory / "locked.key"), "wrong": str(directory / "wrong.txt"),
            "other_key": str(directory / "b.key"), "garbage": str(directory / "garbage.crt"),
            "missing": str(directory / "missing.crt")}


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "{missing}"], "cannot read --tls-cert {missing}: No such file or directory"),
    (["--tls-cert", "{cert}", "--tls-key", "{missing}"],
     "cannot read --tls-key {missing}: No such file or directory"),
    (["--tls-cert", "{cert}", "--tls-key", "{other_key}"],
     "the private key does not match the certificate (--tls-cert {cert} and --tls-key "
     "{other_key})"),
    (["--tls-cert", "{garbage}"], "cannot load the TLS certificate and key (--tls-cert {garbage})"),
    (["--tls-cert", "{locked_cert}", "--tls-key", "{locked_key}", "--tls-password-file",
      "{wrong}"], "cannot load the TLS certificate and key (--tls-cert {locked_cert} and "
                  "--tls-key {locked_key}) with the password of --tls-password-file: a wrong "
                  "password"),
], ids=["missing-cert", "missing-key", "mismatched-key", "not-a-certificate", "wrong-password"])
def test_tls_file_errors_name_the_file(pems, args, message):
    done = run(["-m", "fastserver.http", *(arg.format(**pems) for arg in args), "0"])
    assert message.format(**pems) in one_error_line(done, 2)
    assert done.stdout == ""  # it never started serving


@pytest.mark.parametrize("module", ["fastserver", "fastserver.http"])
def test_version(module):
    done = run(["-m", module, "--version"])
    assert (done.returncode, done.stdout, done.stderr) == (0, f"fastserver {fastserver.VERSION}\n",
                                                         "")


# --- the command line's settings --------------------------------------------------------------

@pytest.mark.parametrize("option, value", [
    ("--graceful-timeout", "-1"), ("--graceful-timeout", "nan"), ("--graceful-timeout", "inf"),
    ("--graceful-timeout", "soon"), ("--max-threads", "0"), ("--max-threads", "1.5"),
    ("--first-data-timeout", "0"), ("--tls-handshake-timeout", "-2"), ("--log-level", "loud"),
    ("--workers", "0"),
])
def test_bad_setting_values_are_usage_errors(option, value):
    done = run(["-m", "fastserver.http", option, value, "0"])
    line = one_error_line(done, 2)
    assert option in line and "error:" in line, line
    assert done.stderr.startswith("usage: ")


SETTINGS_SCRIPT = """\
import json, logging, sys
import fastserver.http as cli
import fastserver.workers

def report(httpd, poll_interval=0.5, ready=None):
    handler = getattr(httpd.RequestHandlerClass, "func", httpd.RequestHandlerClass)  # partial
    print(json.dumps({name: getattr(httpd, name) for name in
                      ("graceful_timeout", "max_threads", "first_data_timeout",
                       "tls_handshake_timeout", "workers")}
                     | {"quiet": handler.log_request is cli._no_access_log,
                        "level": logging.getLogger("fastserver").level}))

fastserver.workers.serve_until_stopped = report
sys.exit(cli.main(sys.argv[1:] + ["--bind", "127.0.0.1", "0"]))
"""


def test_settings_reach_the_server():
    done = run(["-c", SETTINGS_SCRIPT, "--graceful-timeout", "3", "--max-threads", "7",
                "--first-data-timeout", "2.5", "--tls-handshake-timeout", "4", "--no-access-log",
                "--log-level", "error"])
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout.splitlines()[-1])
    assert settings == {"graceful_timeout": 3.0, "max_threads": 7, "first_data_timeout": 2.5,
                        "tls_handshake_timeout": 4.0, "workers": 1, "quiet": True, "level": 40}
    done = run(["-c", SETTINGS_SCRIPT])
    defaults = json.loads(done.stdout.splitlines()[-1])
    assert defaults == {"graceful_timeout": 10.0, "max_threads": None, "first_data_timeout": None,
                        "tls_handshake_timeout": 10.0, "workers": 1, "quiet": False, "level": 20}


def test_no_access_log_drops_the_request_lines_not_the_errors(child_core, tmp_path):
    for options, expect_access in (((), True), (("--no-access-log",), False)):
        server = cli(child_core, tmp_path, *options)
        try:
            assert get(server.port, "/").startswith(b"HTTP/1.0 200")
            assert get(server.port, "/missing").startswith(b"HTTP/1.0 404")
            assert server.stop() == 0
            errors = server.errors_all()
            assert ('"GET / HTTP/1.0" 200' in errors) is expect_access, errors
            assert "code 404, message File not found" in errors  # log_error() still writes
        finally:
            server.close()


def test_log_module_never_configures_the_root_logger():
    import logging

    before = list(logging.getLogger().handlers), logging.getLogger().level
    _log.logger()
    assert (list(logging.getLogger().handlers), logging.getLogger().level) == before
    handlers = [h for h in logging.getLogger("fastserver").handlers
                if isinstance(h, _log._FallbackHandler)]
    assert len(handlers) == 1

