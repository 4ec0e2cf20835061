"""The server subprocess of ``python -m fastserver.bench``: one load's server on one implementation.

The bench runs this file's source as ``python -c <source> KIND IMPL DOCROOT [MAX_THREADS]`` (see
``servers.start_server``), so that the stdlib's server imports nothing of fastserver's; importing
it runs nothing. KIND is a load's server kind, IMPL ``stdlib``, ``cython`` or ``python`` (or
``gevent`` for ``http-keepalive``: the stdlib's server after ``gevent.monkey.patch_all()``, a
greenlet per connection), DOCROOT the HTTP loads' directory, MAX_THREADS fastserver's
``max_threads`` (0 or none: no limit; the stdlib has none). The paced loads' kinds,
``idle-echo`` and ``http-keepalive``, are ``threading-echo`` and ``http`` with a listen backlog
of 4096: thousands of connections ramp up. The HTTPS kind makes its certificate with
``openssl req``; the stdlib serves it with Python 3.14's ThreadingHTTPSServer where there is
one, else with the listening socket wrapped by hand (what 3.14's does), fastserver with
``ssl_context``.

The protocol, which the C servers of ``_floor.c`` and bench/scaling.py's server speak too: a hello
line, JSON ``{"port": ..., "implementation": ..., "streams": ..., "gil_enabled": ...,
"package": ...}`` (whether the GIL is on once the server is set up: on a free-threaded build an
extension module that does not declare itself safe without it turns it on; the directory of the
fastserver it imported, or null); then on stdin ``cpu`` is
answered with "<user seconds> <system seconds> <voluntary context switches> <involuntary ones>"
of the whole process (getrusage counts every thread, the finished ones too), and ``quit`` or EOF
ends it.
"""

import json
import os
import resource
import sys

BACKLOG = 1024  # the default 5 drops connections under a burst: SYN retries
BIG_BACKLOG = 4096  # the paced loads': thousands of connections ramp up


def make_server(kind, impl, docroot, max_threads=0):
    """(the server, its implementation's name, the module of its stream files)."""
    backlog = BIG_BACKLOG if kind in ("idle-echo", "http-keepalive") else BACKLOG
    limits = {"max_threads": max_threads} if impl not in ("stdlib", "gevent") and max_threads \
        else {}
    if impl in ("stdlib", "gevent"):
        import socketserver
    else:
        import fastserver

        fastserver._use_core(impl)
        if kind.startswith("http"):
            fastserver.install()
        socketserver = fastserver

    if kind.startswith("http"):
        import functools
        import http.server

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = kind == "http-nodelay"

            def end_headers(self):
                # say that the connection closes when it does (http.server does not), so that the
                # client opens a new one instead of writing its next request into a closing socket
                if self.close_connection:
                    self.send_header("Connection", "close")
                super().end_headers()

            def log_message(self, format, *args):
                pass  # a log line per request is not what is measured

        Server = type("Server", (http.server.ThreadingHTTPServer,),
                      {"request_queue_size": backlog, **limits})

        handler = functools.partial(Handler, directory=docroot)
        if kind == "https":
            server = https_server(http.server, Server, handler, impl)
        else:
            server = Server(("127.0.0.1", 0), handler)
    else:
        if kind.endswith("oneshot"):
            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    data = self.request.recv(1024)
                    self.request.sendall(data)
        else:
            class Handler(socketserver.StreamRequestHandler):
                def handle(self):
                    for line in self.rfile:
                        self.wfile.write(line)

        if kind.startswith("threading") or kind == "idle-echo":
            base = socketserver.ThreadingTCPServer
        else:
            base = socketserver.TCPServer

        Server = type("Server", (base,), {"allow_reuse_address": True,
                                          "request_queue_size": backlog, **limits})

        server = Server(("127.0.0.1", 0), Handler)

    if impl == "gevent":
        import gevent

        return server, f"gevent {gevent.__version__}, monkey-patched stdlib", "socket.makefile"
    if impl == "stdlib":
        return server, "stdlib", "socket.makefile"
    # compiled or pure rfile/wfile
    return server, fastserver.IMPLEMENTATION, fastserver._cores.active.stream_files.__module__


def https_server(http_server, plain_class, handler, impl):
    """The HTTPS server of the TLS loads, on a certificate made now for 127.0.0.1."""
    import ssl
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        stdlib_class = getattr(http_server, "ThreadingHTTPSServer", None)
        if impl == "stdlib" and stdlib_class is not None:  # Python 3.14's own
            server_class = type("Server", (stdlib_class,), {"request_queue_size": 1024})
            return server_class(("127.0.0.1", 0), handler, certfile=cert, keyfile=key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["http/1.1"])
    server = plain_class(("127.0.0.1", 0), handler)
    if impl == "stdlib":  # as 3.14's HTTPSServer does: the handshake in accept()
        server.socket = context.wrap_socket(server.socket, server_side=True)
    else:
        server.ssl_context = context
    return server


def stdin_lines(impl):
    """The bench's lines on stdin; under gevent, read in its thread pool (a plain read would stop
    every greenlet)."""
    if impl != "gevent":
        yield from sys.stdin
        return
    import gevent.os

    pending = b""
    while chunk := gevent.os.tp_read(sys.stdin.fileno(), 4096):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line.decode() for line in lines)


def answer(server, impl):
    """Answer the bench on stdin until "quit" or EOF; then shut the server down."""
    for line in stdin_lines(impl):
        if line.strip() == "cpu":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(f"{usage.ru_utime!r} {usage.ru_stime!r} {usage.ru_nvcsw} {usage.ru_nivcsw}",
                  flush=True)
        elif line.strip() == "quit":
            break
    server.shutdown()


def main(kind, impl, docroot, max_threads="0"):
    if impl == "gevent":  # first: what is imported after it is made cooperative
        try:
            from gevent import monkey
        except ImportError as exc:
            print(json.dumps({"missing": f"gevent cannot be imported here ({exc}); "
                                         f"pip install gevent"}), flush=True)
            return
        monkey.patch_all()
    import threading

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the paced loads open thousands
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server, implementation, streams = make_server(kind, impl, docroot, int(max_threads))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    package = None if impl in ("stdlib", "gevent") else \
        os.path.dirname(sys.modules["fastserver"].__file__)
    print(json.dumps({"port": server.server_address[1], "implementation": implementation,
                      "streams": streams, "gil_enabled": gil, "package": package}), flush=True)
    threading.Thread(target=answer, args=(server, impl), daemon=True).start()
    server.serve_forever()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a connection left open (it should not be) must not hold the exit up


if __name__ == "__main__":
    main(*sys.argv[1:5])
