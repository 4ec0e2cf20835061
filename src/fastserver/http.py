"""``python -m fastserver.http``: the standard library's ``python -m http.server``, on fastserver.

The command line is the one ``http.server`` has on the running Python (the same options, defaults,
help texts and output, dual-stack binding included); only the loop underneath is fastserver's::

    python -m fastserver.http [--bind ADDRESS] [--directory DIR] [--protocol VERSION] [--cgi] [port]

Importing this module calls :func:`fastserver.install` first, so the ``http.server`` classes it
uses (and re-exports: ``HTTPServer``, ``ThreadingHTTPServer``, ``SimpleHTTPRequestHandler``, ...)
are built on fastserver. :func:`main` runs the command line; :func:`serve` runs a server as the
command line does.
"""

import argparse
import contextlib
import importlib.util
import os
import socket
import sys

import fastserver

fastserver.install()

import http.server as _http_server  # noqa: E402  (must come after install())


def _http_server_on_fastserver():
    """``http.server`` with its classes built on fastserver.

    Where ``http.server`` was imported (on the standard socketserver) before this module, a
    private copy of it is loaded instead; ``sys.modules`` is left alone.
    """
    if _http_server.socketserver is fastserver:
        return _http_server
    spec = importlib.util.find_spec("http.server")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


server = _http_server_on_fastserver()

HTTPServer = server.HTTPServer
ThreadingHTTPServer = server.ThreadingHTTPServer
BaseHTTPRequestHandler = server.BaseHTTPRequestHandler
SimpleHTTPRequestHandler = server.SimpleHTTPRequestHandler
CGIHTTPRequestHandler = getattr(server, "CGIHTTPRequestHandler", None)  # gone in Python 3.15
ThreadingHTTPSServer = getattr(server, "ThreadingHTTPSServer", None)  # new in Python 3.14

# What http.server's command line offers on this Python.
_HAS_PROTOCOL_OPTION = sys.version_info >= (3, 11)
_HAS_TLS_OPTIONS = ThreadingHTTPSServer is not None
_HAS_CGI_OPTION = CGIHTTPRequestHandler is not None


class DualStackMixIn:
    """What the command line's servers add: IPv4 clients on an IPv6 socket, and a directory.

    ``directory`` is the directory the handlers serve (None: the current directory at each
    request, as the handlers do by themselves).
    """

    directory = None

    def server_bind(self):
        # Accept IPv4 too on an IPv6 socket whatever the system default; not an IPv6 socket: no-op.
        with contextlib.suppress(Exception):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return super().server_bind()

    def finish_request(self, request, client_address):
        self.RequestHandlerClass(request, client_address, self, directory=self.directory)


class DualStackServer(DualStackMixIn, ThreadingHTTPServer):
    """The command line's HTTP server: ``ThreadingHTTPServer`` on fastserver, dual-stack."""


if _HAS_TLS_OPTIONS:

    class DualStackHTTPSServer(DualStackMixIn, ThreadingHTTPSServer):
        """The command line's HTTPS server (Python 3.14+): dual-stack ``ThreadingHTTPSServer``."""


def _best_family(host, port):
    """(family, address) of the first address getaddrinfo() gives for a passive stream socket."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    return family, address


def serve(handler_class=SimpleHTTPRequestHandler, server_class=DualStackServer,
          protocol="HTTP/1.0", port=8000, bind=None, directory=None,
          tls_cert=None, tls_key=None, tls_password=None):
    """Serve until interrupted, as ``python -m http.server`` does; return 0 after Ctrl-C.

    The address family is the one ``bind`` resolves to first (all interfaces when None); the
    handlers speak ``protocol`` and serve ``directory``. With ``tls_cert`` (Python 3.14+), the
    server class is given ``certfile``, ``keyfile`` and ``password``.
    """
    family, address = _best_family(bind, port)
    handler = type(handler_class.__name__, (handler_class,), {
        "protocol_version": protocol,
        "__module__": handler_class.__module__,
        "__qualname__": handler_class.__qualname__,
    })
    cls = type(server_class.__name__, (server_class,), {
        "address_family": family,
        "directory": directory,
        "__module__": server_class.__module__,
        "__qualname__": server_class.__qualname__,
    })
    if tls_cert:
        httpd = cls(address, handler, certfile=tls_cert, keyfile=tls_key, password=tls_password)
    else:
        httpd = cls(address, handler)
    with httpd:
        host, port = httpd.socket.getsockname()[:2]
        url_host = f"[{host}]" if ":" in host else host
        scheme = "HTTPS" if tls_cert else "HTTP"
        print(f"Serving {scheme} on {host} port {port} ({scheme.lower()}://{url_host}:{port}/) ...",
              flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("\nKeyboard interrupt received, exiting.", flush=True)
    return 0


def _parser():
    options = {"color": True} if sys.version_info >= (3, 14) else {}
    parser = argparse.ArgumentParser(**options)
    if not _HAS_PROTOCOL_OPTION:  # Python 3.10: long option first, older help texts
        if _HAS_CGI_OPTION:
            parser.add_argument("--cgi", action="store_true", help="run as CGI server")
        parser.add_argument("--bind", "-b", metavar="ADDRESS",
                            help="specify alternate bind address (default: all interfaces)")
        parser.add_argument("--directory", "-d", default=os.getcwd(),
                            help="specify alternate directory (default: current directory)")
        parser.add_argument("port", action="store", default=8000, type=int, nargs="?",
                            help="specify alternate port (default: 8000)")
        return parser
    if _HAS_CGI_OPTION:
        parser.add_argument("--cgi", action="store_true", help="run as CGI server")
    parser.add_argument("-b", "--bind", metavar="ADDRESS",
                        help="bind to this address (default: all interfaces)")
    parser.add_argument("-d", "--directory", default=os.getcwd(),
                        help="serve this directory (default: current directory)")
    parser.add_argument("-p", "--protocol", metavar="VERSION", default="HTTP/1.0",
                        help="conform to this HTTP version (default: %(default)s)")
    if _HAS_TLS_OPTIONS:
        parser.add_argument("--tls-cert", metavar="PATH",
                            help="path to the TLS certificate chain file")
        parser.add_argument("--tls-key", metavar="PATH", help="path to the TLS key file")
        parser.add_argument("--tls-password-file", metavar="PATH",
                            help="path to the password file for the TLS key")
    parser.add_argument("port", default=8000, type=int, nargs="?",
                        help="bind to this port (default: %(default)s)")
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    tls = {}
    if _HAS_TLS_OPTIONS:
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
            tls = {"server_class": DualStackHTTPSServer, "tls_cert": args.tls_cert,
                   "tls_key": args.tls_key, "tls_password": password}
    handler = CGIHTTPRequestHandler if getattr(args, "cgi", False) else SimpleHTTPRequestHandler
    return serve(handler_class=handler, port=args.port, bind=args.bind,
                 protocol=getattr(args, "protocol", "HTTP/1.0"), directory=args.directory, **tls)


if __name__ == "__main__":
    sys.exit(main())
