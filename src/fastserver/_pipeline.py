"""The request pipeline: the one place that takes an accepted connection to its close.

The standard library spreads a connection's life over ``_handle_request_noblock()``,
``process_request()``, ``process_request_thread()`` and ForkingMixIn's child; fastserver adds the
PROXY header, the TLS handshake, first data and keep-alive parking in between. Each step is
written here once, and the server's methods of those names call it, so that every path (both
cores' loops, handle_request(), the thread pool, ForkingMixIn, the workers) runs the same steps
in the same order with the same arguments:

    verify_request ─ no ──────────────────────────────────────────────┐
        │ yes                                                          │
    [hold until first data]  (Parking: first_data_timeout, TLS steps)  │
        │                                                              │
    process_request ── in the loop: PROXY, TLS, finish ────────────────┤
        │           └─ in a thread / child (serve): PROXY, TLS, finish ┤
        │                                   └─ [keep-alive: park] ─────┤ (later, a thread)
        └ Exception: handle_error                                      │
                                                              shutdown_request

Errors are the stdlib's: an Exception from process_request() (or from a request run in its own
thread or child) goes to handle_error() and the request is shut down; any other BaseException
shuts it down and propagates. The compiled core's Dispatcher (``_dispatch.pyx``) is the twin of
:func:`dispatch` and :func:`process` for the hooks a subclass leaves alone; tests/test_dispatch.py
holds both, and the stdlib, to the same calls in the same order.

Keep-alive parking (:class:`KeepAlive`): for handlers whose request loop is
``http.server.BaseHTTPRequestHandler.handle()`` (http.server, xmlrpc.server and their users'
handlers that do not override ``handle()``), a request thread that has answered a request on a
persistent connection does not wait for the next one: it parks the connection, with its handler
instance, in the loop's poller and takes other work. When the next request (or EOF) arrives, a
request thread calls ``handle_one_request()`` on the same instance. The handler sees what the
stdlib's ``handle()`` would do: the same instance, rfile and wfile, ``setup()`` once,
``handle_one_request()`` per request, ``finish()`` once at the end; only the thread may change
between two requests (a ``threading.local`` set by one request is not seen by the next).
"""

import functools
import ipaddress
import logging
import sys
from time import monotonic

logger = logging.getLogger("fastserver")


def dispatch(server, request, client_address, parking=None):
    """An accepted connection: verify_request(), then process it (or hold it in ``parking``
    until it speaks), as the stdlib's _handle_request_noblock() does after get_request()."""
    if server.verify_request(request, client_address):
        try:
            if parking is not None and parking.first_data_timeout is not None:
                parking.hold(request, client_address)
            else:
                server.process_request(request, client_address)
        except Exception:
            server.handle_error(request, client_address)
            server.shutdown_request(request)
        except:  # noqa: E722 - a BaseException still releases the request
            server.shutdown_request(request)
            raise
    else:
        server.shutdown_request(request)


def process(server, request, client_address):
    """BaseServer.process_request(): the request in the calling thread (the loop's). Its errors
    go to the caller (dispatch() reports them)."""
    context = server._tls_context()
    if context is not None:
        server._process_tls_in_loop(request, client_address, context)
        return
    if server.proxy_protocol:
        client_address = proxied(server, request, client_address)
        if client_address is None:
            server.shutdown_request(request)
            return
    server.finish_request(request, client_address)
    server.shutdown_request(request)


def serve(server, request, client_address):
    """A connection's whole life in a thread or a child process of its own (ThreadingMixIn's
    process_request_thread, ForkingMixIn's child): its PROXY header, its TLS handshake, then
    :func:`handle`. A refused header or a failed handshake closes it without a handler and
    without handle_error(). True when the handler ran to its end without an error."""
    try:
        if server.proxy_protocol:
            proxied_address = proxied(server, request, client_address)
            if proxied_address is None:
                server.shutdown_request(request)
                return False
            client_address = proxied_address
        if server._tls_context() is not None:
            request, secured = server._start_tls(request)
            if not secured:
                server.shutdown_request(request)
                return False
    except Exception:
        server.handle_error(request, client_address)
        server.shutdown_request(request)
        return False
    except:  # noqa: E722 - a BaseException still releases the request
        server.shutdown_request(request)
        raise
    return handle(server, request, client_address)


def handle(server, request, client_address):
    """The handler on a connection that is ready for it (its PROXY header read, its TLS
    handshake done), in the calling thread: finish_request(), or a keep-alive connection's
    first requests; an Exception goes to handle_error(); then shutdown_request(), unless the
    connection was parked between two requests (it is closed where it ends). True when the
    handler ran to its end without an error."""
    parked = False
    try:
        keep_alive = server._keep_alive()
        if keep_alive is None:
            server.finish_request(request, client_address)
        else:
            parked = keep_alive.start(request, client_address)
        return True
    except Exception:
        server.handle_error(request, client_address)
        return False
    finally:
        if not parked:
            server.shutdown_request(request)


# --- the PROXY header -------------------------------------------------------------------------

def proxied(server, request, client_address):
    """The client's address from the connection's PROXY header (``server.proxied_address()``),
    or None when the connection must be closed unserved: it comes from an address that
    ``proxy_allow_from`` does not trust, or its header is missing, malformed or late. Either
    is an expected operational event (a health check that connects and closes, a client that
    reached the port directly), said in one log line with the peer and the reason, never a
    traceback, and never handle_error()."""
    if not allowed(server.proxy_allow_from, client_address):
        logger.warning("%s - PROXY header refused: the peer is not in proxy_allow_from",
                       _peer(client_address))
        return None
    from .proxy import ProxyError

    try:
        return server.proxied_address(request, client_address)
    except (ProxyError, OSError) as exc:  # TimeoutError is an OSError
        logger.warning("%s - PROXY header refused: %s", _peer(client_address),
                       _reason(exc))
        return None


def _peer(client_address):
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return repr(client_address) if client_address else "a local socket"


def _reason(exc):
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


ANY = "*"


@functools.lru_cache(maxsize=64)
def trusted_networks(allow_from):
    """``proxy_allow_from`` as ip_network objects (None for ``"*"``: any address). It is ``"*"``,
    a string of comma-separated addresses or networks, or an iterable of them (hashable here:
    a tuple or frozenset; :func:`allowed` converts). ValueError for an entry that is neither,
    TypeError for anything else."""
    if isinstance(allow_from, str):
        allow_from = tuple(part.strip() for part in allow_from.split(",") if part.strip())
    networks = []
    for entry in allow_from:
        if not isinstance(entry, str):
            raise TypeError(f"proxy_allow_from entries must be strings, "
                            f"not {type(entry).__name__}")
        if entry == ANY:
            return None
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"proxy_allow_from: {entry!r} is not an IP address or network, "
                             f"nor '*'") from None
    return tuple(networks)


def check_allow_from(allow_from):
    """Raise TypeError or ValueError for a ``proxy_allow_from`` that cannot be used."""
    if isinstance(allow_from, (str, bytes)) or not hasattr(allow_from, "__iter__"):
        if not isinstance(allow_from, str):
            raise TypeError(f"proxy_allow_from must be a string or an iterable of strings, "
                            f"not {type(allow_from).__name__}")
        return trusted_networks(allow_from)
    return trusted_networks(tuple(allow_from))


def allowed(allow_from, client_address):
    """Whether a connection from ``client_address`` may send a PROXY header: its IP address
    is in ``allow_from`` (an IPv4 client of a dual-stack socket counts as IPv4); a Unix
    socket's peer always may (its file's permissions say who can connect)."""
    if not isinstance(client_address, tuple):
        return True
    networks = check_allow_from(allow_from)
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(client_address[0].split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address in network for network in networks)


# --- keep-alive parking -------------------------------------------------------------------------

def _request_loop_base(handler_class):
    """http.server's BaseHTTPRequestHandler in ``handler_class``'s MRO when the class runs its
    ``handle()`` (whichever copy of http.server made it), else None."""
    for cls in getattr(handler_class, "__mro__", ()):
        if "handle" in vars(cls):
            known = (cls.__name__ == "BaseHTTPRequestHandler" and cls.__module__ == "http.server"
                     and "handle_one_request" in vars(cls))
            return cls if known else None
    return None


def _factory(request_handler_class):
    """(class, keyword arguments) that RequestHandlerClass(request, client_address, server)
    instantiates: the class itself, or a functools.partial of it with keywords only."""
    if isinstance(request_handler_class, functools.partial):
        if request_handler_class.args:
            return None, None
        return request_handler_class.func, request_handler_class.keywords
    return request_handler_class, {}


def keep_alive_for(server, request_threads):
    """The server's KeepAlive, or None where its connections cannot park between requests:
    ``keep_alive_parking`` off; no request threads of fastserver's (``request_threads``: the
    default ThreadingMixIn path, a ThreadPool); finish_request() overridden; a handler that is
    not http.server's request loop or does not speak HTTP/1.1."""
    from .servers import BaseServer

    if not server.keep_alive_parking or not request_threads:
        return None
    if ("finish_request" in vars(server)
            or type(server).finish_request is not BaseServer.finish_request):
        return None
    cls, keywords = _factory(server.RequestHandlerClass)
    if cls is None or not isinstance(cls, type) or type(cls).__call__ is not type.__call__:
        return None
    if _request_loop_base(cls) is None or getattr(cls, "protocol_version", "") < "HTTP/1.1":
        return None
    return KeepAlive(server, cls, keywords)


class KeepAlive:
    """One loop's keep-alive parking for ``server``'s handlers (``cls(..., **keywords)``).

    Read-only once made; the loop's LoopState holds it while the loop runs (``keep_alive``),
    beside the loop's Parking (``parking``), and request threads read both from there.
    """

    def __init__(self, server, cls, keywords):
        from . import _cores

        self.server = server
        self.cls = cls
        self.keywords = keywords
        self.timeout = server.keep_alive_timeout
        self.linger = server.keep_alive_linger
        self.wait_readable = _cores.active.wait_readable  # (fd, seconds) -> bool
        self.pool = server._thread_pool()
        self.daemon = server.daemon_threads

    def start(self, request, client_address):
        """Instantiate the handler on a new connection, as finish_request() would; True when its
        connection is parked after its first requests (its handler lives on), False when the
        handler is done (finish() has run; the caller shuts the request down)."""
        connection = Connection(self, request, client_address)
        return connection.start()

    def busy(self):
        """Whether a thread that lingers would keep others waiting: every thread is busy, or a
        parked connection waits for one."""
        state = self.server._loop_state()
        parking = state.parking
        return self.pool.full() or (parking is not None and bool(parking.ready))


def _has_bytes(sock, rfile):
    """Whether the next request has begun: bytes in ``rfile``'s buffer (a client that
    pipelines), in TLS's or in the kernel's. Never waits. (An EOF reads as nothing here: the
    poller reports it at once once the connection is parked.) The compiled core's reader only
    looks at its buffer, and frees it when it is empty (a parked connection keeps none): what
    the kernel holds, the poller reports as soon as the connection is parked."""
    release_buffer = getattr(rfile, "release_buffer", None)
    if release_buffer is not None:
        return not release_buffer()
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket: decrypted bytes not yet read
    if pending is not None and pending():
        return True
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(rfile.peek(1))  # what is buffered, else one recv() that cannot wait
    except BlockingIOError:
        return False
    except OSError as exc:
        ssl = sys.modules.get("ssl")
        if ssl is not None and isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
            return False
        return True  # the next read will say what went wrong, in the handler
    finally:
        sock.settimeout(timeout)


class Connection:
    """A keep-alive connection and its handler instance, from its first request to its close."""

    __slots__ = ("keep_alive", "request", "client_address", "handler", "idle", "prompt",
                 "parked_at")

    def __init__(self, keep_alive, request, client_address):
        self.keep_alive = keep_alive
        self.request = request
        self.client_address = client_address
        self.handler = None
        self.idle = False  # parked (or to be) after its last request
        # The client sent its last request within keep_alive_linger of the one before: a thread
        # lingers for its next one. A client that does not is parked at once from then on, until
        # it comes back within the linger time of being parked.
        self.prompt = True
        self.parked_at = 0.0

    def start(self):
        keep_alive = self.keep_alive
        cls = keep_alive.cls
        handler = self.handler = cls.__new__(cls)
        # The class's __init__ runs as the stdlib runs it (setup(), handle(), finish() in its
        # finally), with this instance's handle() serving the requests that come at once and
        # its finish() skipped when the connection is to park: finish() runs at the end.
        handler.handle = self._first_requests
        handler.finish = self._finish_unless_idle
        try:
            cls.__init__(handler, self.request, self.client_address, keep_alive.server,
                         **keep_alive.keywords)
        finally:
            vars(handler).pop("handle", None)
            vars(handler).pop("finish", None)
        return self.idle and self._park()

    def _first_requests(self):
        """BaseHTTPRequestHandler.handle(), up to the first wait for a request."""
        handler = self.handler
        handler.close_connection = True
        handler.handle_one_request()
        self.idle = self._serve_while_ready()

    def _finish_unless_idle(self):
        if not self.idle:
            type(self.handler).finish(self.handler)

    def _serve_while_ready(self):
        """Serve the requests that come without a wait; True when the connection stays open
        and idle (to park), False when the handler closes it."""
        handler = self.handler
        keep_alive = self.keep_alive
        while not handler.close_connection:
            ready = False
            if self.prompt and keep_alive.linger > 0 and not keep_alive.busy():
                # A client that sends its next request at once is served by this thread,
                # without the hand-off through the loop that parking costs.
                ready = self.prompt = keep_alive.wait_readable(handler.connection.fileno(),
                                                               keep_alive.linger)
            if not ready and not _has_bytes(handler.connection, handler.rfile):
                return True
            handler.handle_one_request()
        return False

    def _park(self):
        """Park the idle connection in the loop; False where no loop can take it (its loop has
        ended): the handler is finished here then."""
        from ._parking import Parked

        keep_alive = self.keep_alive
        parking = keep_alive.server._loop_state().parking
        timeout = keep_alive.timeout
        handler_timeout = self.handler.connection.gettimeout()
        if handler_timeout is not None and (timeout is None or handler_timeout < timeout):
            timeout = handler_timeout  # the handler's own timeout ends an idle connection too
        self.parked_at = now = monotonic()
        parked = Parked(self.request, self.client_address,
                        float("inf") if timeout is None else now + timeout,
                        self._resume, self._close, idle=True)
        if parking is not None and parking.park(parked):
            return True
        self.idle = False
        type(self.handler).finish(self.handler)
        return False

    def _resume(self):
        """The parked connection is readable (the loop's thread): serve it on a request
        thread."""
        keep_alive = self.keep_alive
        if not self.prompt and monotonic() - self.parked_at < keep_alive.linger:
            self.prompt = True  # it came back within the linger time: linger for it again
        keep_alive.pool.submit(self._serve_next, (), keep_alive.daemon)

    def _serve_next(self):
        """A request thread: the connection's next requests, until it parks again or ends; its
        errors go where process_request_thread() sends them."""
        server = self.keep_alive.server
        handler = self.handler
        parked = False
        try:
            try:
                handler.handle_one_request()
                self.idle = self._serve_while_ready()
            except BaseException:
                self.idle = False
                handler.finish()
                raise
            if self.idle:
                parked = self._park()
            else:
                handler.finish()
        except Exception:
            server.handle_error(self.request, self.client_address)
        finally:
            if not parked:
                server.shutdown_request(self.request)

    def _close(self):
        """The idle connection's deadline passed, or its loop ended: finish() and shut down."""
        server = self.keep_alive.server
        try:
            self.handler.finish()
        except Exception:
            pass  # the client is gone or going: nothing is left to deliver
        finally:
            server.shutdown_request(self.request)

