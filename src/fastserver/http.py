"""``python -m fastserver.http``: the standard library's ``python -m http.server``, on fastserver.

The command line is the one ``http.server`` has on the running Python (the same options, defaults,
help texts and output, dual-stack binding included); only the loop underneath is fastserver's::

    python -m fastserver.http [--bind ADDRESS] [--directory DIR] [--protocol VERSION] [--cgi]
                              [--content-type TYPE] [--header HEADER VALUE]...
                              [--tls-cert FILE [--tls-key FILE] [--tls-password-file FILE]]
                              [port]

The options are those of the running Python's http.server, read from its own parser (3.15 added
``--content-type`` and ``--header``, and has no ``--cgi``); fastserver adds ``--workers`` and
``--proxy-protocol``. The TLS options are Python 3.14's, offered on every Python: ``--tls-cert``
serves HTTPS, each connection's handshake in its own request thread, never in the accept loop
(3.14's own ``HTTPSServer`` handshakes inside ``accept()``, so one stalled client blocks the
others).

:func:`main` runs the command line. Once it has read its options it calls
:func:`fastserver.install`, since the command line is ``python -m http.server`` on fastserver:
whatever the process imports from then on is built on fastserver too. :func:`serve` runs a server
as the command line does.

Importing this module changes nothing in the process: ``sys.modules["socketserver"]`` (and
``http.server``) stay what they were, absent or the stdlib's. The ``http.server`` classes it uses
and re-exports (``HTTPServer``, ``ThreadingHTTPServer``, ``SimpleHTTPRequestHandler``, ...) come
from a private copy of ``http.server`` (``server``, below) whose ``socketserver`` is fastserver:
they run on fastserver whether or not :func:`fastserver.install` is ever called.
"""

import argparse
import builtins
import contextlib
import functools
import importlib.util
import os
import socket
import sys

import fastserver


def _no_access_log(self, code="-", size="-"):
    """``--no-access-log``: BaseHTTPRequestHandler.log_request() that writes nothing (errors,
    through log_error(), are still written)."""


def _http_server_on_fastserver():
    """A private copy of ``http.server``, its classes built on fastserver.

    http.server's own code runs in a module of its own, never entered in ``sys.modules``, with
    the interpreter's builtins but for ``__import__``: ``import socketserver`` gets fastserver,
    every other import is passed on. So nothing outside this module changes, whatever was
    imported before or after. (The copy's builtins are those of the moment it is loaded: a later
    change to the ``builtins`` module does not reach it.)
    """

    def import_fastserver_as_socketserver(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "socketserver" and level == 0:
            return fastserver
        return builtins.__import__(name, globals, locals, fromlist, level)

    spec = importlib.util.find_spec("http.server")
    module = importlib.util.module_from_spec(spec)
    module.__builtins__ = dict(vars(builtins), __import__=import_fastserver_as_socketserver)
    spec.loader.exec_module(module)
    return module


server = _http_server_on_fastserver()

HTTPServer = server.HTTPServer
ThreadingHTTPServer = server.ThreadingHTTPServer
BaseHTTPRequestHandler = server.BaseHTTPRequestHandler
SimpleHTTPRequestHandler = server.SimpleHTTPRequestHandler
CGIHTTPRequestHandler = getattr(server, "CGIHTTPRequestHandler", None)  # gone in Python 3.15


class HTTPSServer(HTTPServer):
    """Python 3.14's ``http.server.HTTPSServer``, on every Python: HTTPServer over TLS.

    ``certfile`` (the certificate chain), ``keyfile`` and ``password`` go to
    ``SSLContext.load_cert_chain()``; ``alpn_protocols`` (default ``["http/1.1"]``) are the
    protocols offered to ALPN. The context is made in server_activate(), as in 3.14; unlike 3.14
    it becomes the server's ``ssl_context`` instead of wrapping the listening socket, so that each
    connection's handshake runs off the accept loop (fastserver.servers, ``ssl_context``).
    """

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True, *,
                 certfile, keyfile=None, password=None, alpn_protocols=None):
        try:
            import ssl
        except ImportError:
            raise RuntimeError("SSL module is missing; HTTPS support is unavailable") from None
        self.ssl = ssl
        self.certfile = certfile
        self.keyfile = keyfile
        self.password = password
        self.alpn_protocols = ["http/1.1"] if alpn_protocols is None else alpn_protocols
        super().__init__(server_address, RequestHandlerClass, bind_and_activate)

    def server_activate(self):
        """Listen, and make the TLS context every connection is wrapped with."""
        super().server_activate()
        self.ssl_context = self._create_context()

    def _create_context(self):
        """The server-side SSLContext: the stdlib's defaults, the certificate, ALPN."""
        context = self.ssl.create_default_context(self.ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile, self.password)
        context.set_alpn_protocols(self.alpn_protocols)
        return context


class ThreadingHTTPSServer(fastserver.ThreadingMixIn, HTTPSServer):
    """Python 3.14's ``http.server.ThreadingHTTPSServer``, on every Python: a thread per
    request, each handshake in its request's thread."""

    daemon_threads = True


class DualStackMixIn:
    """What the command line's servers add: IPv4 clients on an IPv6 socket, and a directory.

    ``directory`` is the directory the handlers serve (None: the current directory at each
    request, as the handlers do by themselves); ``extra_response_headers``, a list of (header,
    value) that the handlers add to each reply (Python 3.15's ``--header``; None: none).
    """

    directory = None
    extra_response_headers = None

    # The handler class is given ``directory`` (and ``extra_response_headers``, only where given:
    # the handlers before 3.15 have none) as keywords (a functools.partial) rather than by an
    # override of finish_request(), as http.server's own test() does it: with the default
    # finish_request(), keep-alive connections can park between requests (fastserver._pipeline).
    @property
    def RequestHandlerClass(self):
        handler_class = self._handler_class
        keywords = {}
        if self.directory is not None:
            keywords["directory"] = self.directory
        if self.extra_response_headers is not None:
            keywords["extra_response_headers"] = self.extra_response_headers
        if not keywords:
            return handler_class
        return functools.partial(handler_class, **keywords)

    @RequestHandlerClass.setter
    def RequestHandlerClass(self, handler_class):
        self._handler_class = handler_class

    def server_bind(self):
        # Accept IPv4 too on an IPv6 socket whatever the system default; not an IPv6 socket: no-op.
        with contextlib.suppress(Exception):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return super().server_bind()


class DualStackServer(DualStackMixIn, ThreadingHTTPServer):
    """The command line's HTTP server: ``ThreadingHTTPServer`` on fastserver, dual-stack."""


class DualStackHTTPSServer(DualStackMixIn, ThreadingHTTPSServer):
    """The command line's HTTPS server: dual-stack ``ThreadingHTTPSServer``."""


class _StartupError(OSError):
    """serve(): the server could not bind or listen on ``address``: the OSError it raised,
    with the address (main() says both in one line)."""

    def __init__(self, address, error):
        super().__init__(error.errno, error.strerror or str(error))
        self.address = address


def _best_family(host, port):
    """(family, address) of the first address getaddrinfo() gives for a passive stream socket."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    return family, address


def systemd_socket():
    """The first socket passed by systemd's socket activation (LISTEN_PID, LISTEN_FDS), or None.

    The variables are removed, as sd_listen_fds() does, so that child processes do not take the
    socket for theirs.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count < 1:
        return None
    first = 3  # SD_LISTEN_FDS_START
    os.set_inheritable(first, False)
    return socket.socket(fileno=first)


def serve(handler_class=SimpleHTTPRequestHandler, server_class=DualStackServer,
          protocol="HTTP/1.0", port=8000, bind=None, directory=None,
          tls_cert=None, tls_key=None, tls_password=None, workers=1, proxy_protocol=False,
          listen_socket=None, content_type=None, extra_response_headers=None, *,
          graceful_timeout=None, max_threads=None, first_data_timeout=None,
          tls_handshake_timeout=None, access_log=True, proxy_allow_from=None,
          keep_alive_timeout=None):
    """Serve until interrupted, as ``python -m http.server`` does; return 0 after Ctrl-C.

    The address family is the one ``bind`` resolves to first (all interfaces when None); the
    handlers speak ``protocol`` and serve ``directory``. With ``tls_cert``, the server class (an
    HTTPS one, such as DualStackHTTPSServer) is given ``certfile``, ``keyfile`` and
    ``password``. ``content_type`` (the handlers' ``default_content_type``, for files of unknown
    type) and ``extra_response_headers`` (a list of (header, value) added to each reply) are
    Python 3.15's ``--content-type`` and ``--header``; None keeps the handler's own. fastserver's
    additions: ``workers`` processes, ``proxy_protocol`` headers, and ``listen_socket``, a socket
    already bound and listening (systemd's) to serve on instead of binding ``bind`` and ``port``;
    the server settings ``graceful_timeout``, ``max_threads``, ``first_data_timeout``,
    ``tls_handshake_timeout``, ``proxy_allow_from`` and ``keep_alive_timeout`` (None: the
    class's default); and ``access_log`` (False: no line per request; errors are still
    written).

    SIGTERM stops the server gracefully (:func:`fastserver.workers.serve_until_stopped`; with
    ``workers``, the supervisor does it): it returns 0 once the requests in flight are finished.
    """
    from fastserver.workers import serve_until_stopped  # (before "Serving": SIGINT after it)

    family, address = _best_family(bind, port)
    if listen_socket is not None:
        family = listen_socket.family
    handler_attrs = {
        "protocol_version": protocol,
        "__module__": handler_class.__module__,
        "__qualname__": handler_class.__qualname__,
    }
    if content_type is not None:
        handler_attrs["default_content_type"] = content_type
    if not access_log:
        handler_attrs["log_request"] = _no_access_log
    handler = type(handler_class.__name__, (handler_class,), handler_attrs)
    settings = {"graceful_timeout": graceful_timeout, "max_threads": max_threads,
                "first_data_timeout": first_data_timeout,
                "tls_handshake_timeout": tls_handshake_timeout,
                "proxy_allow_from": proxy_allow_from, "keep_alive_timeout": keep_alive_timeout}
    cls = type(server_class.__name__, (server_class,), {
        "address_family": family,
        "directory": directory,
        "extra_response_headers": extra_response_headers,
        "workers": workers,
        "proxy_protocol": proxy_protocol,
        **{name: value for name, value in settings.items() if value is not None},
        "__module__": server_class.__module__,
        "__qualname__": server_class.__qualname__,
    })
    tls = {"certfile": tls_cert, "keyfile": tls_key, "password": tls_password} if tls_cert else {}
    if listen_socket is not None:
        httpd = cls.from_socket(listen_socket, handler, **tls)
        if tls:  # (from_socket() does not activate: the context is made here)
            httpd.ssl_context = httpd._create_context()
    else:
        try:
            httpd = cls(address, handler, **tls)
        except OSError as e:
            raise _StartupError(address, e) from e
    with httpd:
        host, port = httpd.socket.getsockname()[:2]
        url_host = f"[{host}]" if ":" in host else host
        scheme = "HTTPS" if tls_cert else "HTTP"

        def ready():  # once SIGTERM is handled, and inside the try: a signal then is handled
            print(f"Serving {scheme} on {host} port {port} ({scheme.lower()}://{url_host}:"
                  f"{port}/) ...", flush=True)

        try:
            serve_until_stopped(httpd, ready=ready)
        except KeyboardInterrupt:
            print("\nKeyboard interrupt received, exiting.", flush=True)
    return 0


class _Captured(Exception):
    """Raised by the stdlib's command line where it parses its arguments: carries its parser."""

    def __init__(self, parser):
        super().__init__(parser)
        self.parser = parser


def _stdlib_parser():
    """The argparse parser of ``python -m http.server`` on the running Python, as it is built
    there: its options, their order, defaults, help texts and argparse settings.

    http.server builds its parser inside its ``__main__`` code; that code runs here in a private
    copy of the module (as for ``server`` above), whose ``import argparse`` gets an argparse whose
    parsers stop at ``parse_args()`` and hand themselves over. Nothing is served, nothing else
    runs: the copy is dropped.
    """
    import argparse

    class CapturingParser(argparse.ArgumentParser):
        def parse_args(self, args=None, namespace=None):
            raise _Captured(self)

        parse_known_args = parse_intermixed_args = parse_known_intermixed_args = parse_args

    capturing_argparse = type(argparse)("argparse")
    vars(capturing_argparse).update(vars(argparse), ArgumentParser=CapturingParser)

    def private_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name == "socketserver":
            return fastserver
        if level == 0 and name == "argparse":
            return capturing_argparse
        return builtins.__import__(name, globals, locals, fromlist, level)

    spec = importlib.util.find_spec("http.server")
    module = importlib.util.module_from_spec(spec)
    module.__name__ = "__main__"
    module.__builtins__ = dict(vars(builtins), __import__=private_import)
    try:
        exec(spec.loader.get_code(spec.name), vars(module))
    except _Captured as captured:
        parser = captured.parser
    else:
        raise RuntimeError("http.server's __main__ code built no argument parser")
    parser.__class__ = argparse.ArgumentParser
    return parser


# What fastserver.http gives each destination of http.server's options (argparse's dest): every
# option of the running Python's http.server must be here, with the same meaning
# (tests/test_http_cli.py checks it): main() and serve() below.
_STDLIB_OPTIONS_HANDLED = {
    "help", "port", "bind", "directory",
    "protocol",  # 3.11
    "cgi",  # up to 3.14: CGIHTTPRequestHandler
    "tls_cert", "tls_key", "tls_password_file",  # 3.14 (offered on every Python)
    "content_type",  # 3.15: the handlers' default_content_type
    "header",  # 3.15: the handlers' extra_response_headers
}


def _parser():
    """http.server's parser on this Python, with the TLS options where it lacks them."""
    parser = _stdlib_parser()
    if "--tls-cert" not in parser._option_string_actions:
        _add_tls_options(parser)
    return parser


def _add_tls_options(parser):
    """Python 3.14's TLS options, with its help texts (offered on every Python)."""
    parser.add_argument("--tls-cert", metavar="PATH",
                        help="path to the TLS certificate chain file")
    parser.add_argument("--tls-key", metavar="PATH", help="path to the TLS key file")
    parser.add_argument("--tls-password-file", metavar="PATH",
                        help="path to the password file for the TLS key")


def _number(kind, low, inclusive, convert=float):
    """An argparse type: a finite ``convert`` number above ``low`` (or equal, ``inclusive``)."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind} value: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < low or (
                value == low and not inclusive):
            bound = f"at least {low:g}" if inclusive else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text}")
        return value

    parse.__name__ = kind  # argparse's "invalid <name> value" messages
    return parse


_SECONDS_OR_ZERO = _number("seconds", 0, inclusive=True)
_SECONDS = _number("seconds", 0, inclusive=False)
_COUNT = _number("count", 1, inclusive=True, convert=int)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _add_fastserver_options(parser):
    """fastserver's own options, in a group of their own after http.server's (named as
    gunicorn's where it has one: --workers, --graceful-timeout, --log-level)."""
    group = parser.add_argument_group("fastserver")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help="serve from N worker processes (default: 1)")
    group.add_argument("--proxy-protocol", action="store_true",
                       help="read each client's address from a PROXY protocol header (v1 or v2); "
                            "only behind a proxy you trust")
    group.add_argument("--graceful-timeout", type=_SECONDS_OR_ZERO, metavar="SECONDS",
                       help="on SIGTERM (or SIGHUP for a worker), how long the requests in "
                            "flight may take to finish (default: 10)")
    group.add_argument("--max-threads", type=_COUNT, metavar="N",
                       help="at most N requests at once in each process; the rest wait in the "
                            "backlog (default: no limit)")
    group.add_argument("--first-data-timeout", type=_SECONDS, metavar="SECONDS",
                       help="hold each connection without a thread until its first bytes; "
                            "close it if none come within SECONDS (default: off)")
    group.add_argument("--tls-handshake-timeout", type=_SECONDS, metavar="SECONDS",
                       help="how long each TLS handshake may take (default: 10)")
    group.add_argument("--proxy-allow-from", metavar="ADDRESSES",
                       help="with --proxy-protocol, the proxies trusted to send the header: "
                            "addresses or networks, comma-separated, or '*' for any "
                            "(default: 127.0.0.1,::1)")
    group.add_argument("--keep-alive-timeout", type=_SECONDS, metavar="SECONDS",
                       help="close a keep-alive connection (HTTP/1.1) idle for SECONDS between "
                            "requests, during which it holds no thread (default: 75)")
    group.add_argument("--log-level", choices=LOG_LEVELS, default=None, metavar="LEVEL",
                       help="level of the fastserver logger (the supervisor's and the "
                            f"server's own lines): {', '.join(LOG_LEVELS)} (default: info)")
    group.add_argument("--no-access-log", action="store_false", dest="access_log",
                       help="write no line per request (errors are still written)")
    group.add_argument("--version", action="version", version=f"fastserver {fastserver.VERSION}",
                       help="print fastserver's version and exit")
    return parser


def _fail(parser, message):
    """A runtime failure (bind, address): one line on stderr, as argparse's errors; status 1."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
    return 1


def _check_tls(parser, cert, key, password):
    """Load the certificate chain as the server will, naming the file at fault in a usage
    error (status 2): one that cannot be read, is no certificate or key, a wrong password, a key
    that does not match the certificate."""
    import ssl

    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            parser.error(f"cannot read {option} {path}: {e.strerror or e}")
    class Encrypted(Exception):
        pass

    def no_prompt():
        raise Encrypted

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, no_prompt if password is None else password)
    except Encrypted:
        return  # an encrypted key, no --tls-password-file: OpenSSL asks for it, as in http.server
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        files = f"--tls-cert {cert}" + (f" and --tls-key {key}" if key else "")
        if reason == "KEY_VALUES_MISMATCH":
            parser.error(f"the private key does not match the certificate ({files})")
        if password is not None:
            parser.error(f"cannot load the TLS certificate and key ({files}) with the password "
                         f"of --tls-password-file: a wrong password, or no PEM key ({reason})")
        parser.error(f"cannot load the TLS certificate and key ({files}): {reason}")
    except (OSError, ValueError, TypeError) as e:
        parser.error(f"cannot load the TLS certificate and key (--tls-cert {cert}): {e}")


def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    On top of http.server's options: ``--workers N``, ``--proxy-protocol``, the settings
    (``--graceful-timeout``, ``--max-threads``, ``--first-data-timeout``,
    ``--tls-handshake-timeout``), logging (``--log-level``, ``--no-access-log``) and
    ``--version``; and a socket passed by systemd's socket activation (or
    ``systemd-socket-activate``) is served instead of binding, over TLS too. The TLS options
    (``--tls-cert``, ``--tls-key``, ``--tls-password-file``) are Python 3.14's, on every Python.
    SIGTERM stops it gracefully (status 0); SIGINT as http.server's.
    Once the options are read, it calls :func:`fastserver.install`, as ``python -m http.server``
    on fastserver would.

    Errors are one line, without a traceback: a bad option or TLS file is a usage error (status
    2); an address that does not resolve or cannot be bound, status 1; workers that fail to
    boot, status 3 (fastserver.workers.BootError).
    """
    from fastserver._log import logger
    from fastserver.workers import max_workers

    parser = _parser()
    stdlib_dests = {action.dest for action in parser._actions}
    parser = _add_fastserver_options(parser)
    args = parser.parse_args(argv)
    for dest in sorted(stdlib_dests - _STDLIB_OPTIONS_HANDLED):
        # an option of a newer http.server: refused, not ignored
        if getattr(args, dest, None) != parser.get_default(dest):
            parser.error(f"fastserver.http does not implement this Python's http.server "
                         f"option {dest!r} yet")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if args.workers > max_workers():
        parser.error(f"--workers must be at most {max_workers()} (32 per CPU), "
                     f"not {args.workers}")
    if args.proxy_allow_from is not None:
        from fastserver._pipeline import check_allow_from

        try:
            check_allow_from(args.proxy_allow_from)
        except ValueError as e:
            parser.error(f"--proxy-allow-from: {e}")
    tls = {}
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key requires --tls-cert to be set")
    password = None
    if args.tls_password_file:
        if not args.tls_cert:
            parser.error("--tls-password-file requires --tls-cert to be set")
        try:
            with open(args.tls_password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as e:
            parser.error(f"Failed to read TLS password file: {e}")
    if args.tls_cert:
        _check_tls(parser, args.tls_cert, args.tls_key, password)
        tls = {"server_class": DualStackHTTPSServer, "tls_cert": args.tls_cert,
               "tls_key": args.tls_key, "tls_password": password}
    if args.log_level is not None:
        logger().setLevel(args.log_level.upper())
    handler = CGIHTTPRequestHandler if getattr(args, "cgi", False) else SimpleHTTPRequestHandler
    listen_socket = systemd_socket()
    fastserver.install()  # the command line is http.server's, on fastserver: the whole process
    try:
        return serve(handler_class=handler, port=args.port, bind=args.bind,
                     protocol=getattr(args, "protocol", "HTTP/1.0"), directory=args.directory,
                     workers=args.workers, proxy_protocol=args.proxy_protocol,
                     listen_socket=listen_socket, content_type=getattr(args, "content_type", None),
                     extra_response_headers=getattr(args, "header", None),
                     graceful_timeout=args.graceful_timeout,
                     max_threads=args.max_threads, first_data_timeout=args.first_data_timeout,
                     tls_handshake_timeout=args.tls_handshake_timeout,
                     access_log=args.access_log, proxy_allow_from=args.proxy_allow_from,
                     keep_alive_timeout=args.keep_alive_timeout, **tls)
    except socket.gaierror as e:
        return _fail(parser, f"cannot resolve {args.bind}: {e.strerror or e}")
    except _StartupError as e:
        host, port = e.address[:2]
        return _fail(parser, f"cannot listen on {host or 'all interfaces'} port {port}: "
                             f"{e.strerror}")


if __name__ == "__main__":
    sys.exit(main())
