"""BaseServer, TCPServer, UDPServer and the Unix servers: the standard library's API.

The classes keep every method, attribute and call order of ``socketserver``; the only thing they do
differently is hand their loops (``serve_forever`` and ``handle_request``) to the active core
(``fastserver._core``, or its pure twin ``fastserver._core_py``; see ``fastserver._cores``). What
a core sees of a server is the seam (``fastserver._seam``): the server's LoopState and the Hooks
that :func:`find_hooks` finds at the start of each loop.
"""

import os
import socket
import sys
import threading
import traceback
import weakref
from time import monotonic

from . import _cores, _pipeline, _seam, _tls, mixins
from .mixins import ThreadingMixIn

__all__ = ["BaseServer", "TCPServer", "UDPServer"]
if hasattr(socket, "AF_UNIX"):
    __all__ += ["UnixStreamServer", "UnixDatagramServer"]


_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Linux copies a listening socket's options, TCP_NODELAY among them, into each connection it
# accepts (elsewhere fastserver sets it on every connection).
_LISTENER_PASSES_NODELAY = sys.platform.startswith("linux")

# fastserver is a drop-in for the socketserver of the Python that runs it: a stdlib attribute is
# on fastserver's classes exactly where that Python's socketserver has it, with the same default
# and the same effect. The attributes that not every supported Python has, and the version that
# added each; the class bodies below and tests/test_servers.py read this table.
_STDLIB_ADDED = {
    "allow_reuse_port": (3, 11),  # TCPServer, UDPServer: SO_REUSEPORT in server_bind()
}


def _stdlib_has(name):
    """True when the running Python's socketserver has the attribute ``name``."""
    return sys.version_info >= _STDLIB_ADDED[name]


_REUSE_PORT = _stdlib_has("allow_reuse_port")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def _positive_seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value > 0:  # NaN too
        raise ValueError(f"{name} must be more than 0 seconds, not {value!r}")
    return value


def _seconds_or_zero(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:  # NaN too
        raise ValueError(f"{name} must be 0 seconds or more, not {value!r}")
    return value


def _check_settings(server):
    """Check fastserver's own settings before a loop starts; the number of workers."""
    workers = _positive_int("workers", server.workers)
    if workers > 1 and not hasattr(os, "fork"):
        raise ValueError("workers > 1 needs os.fork(), which this platform lacks")
    if getattr(server, "max_threads", None) is not None:
        _positive_int("max_threads", server.max_threads)
    if server.first_data_timeout is not None:
        _positive_seconds("first_data_timeout", server.first_data_timeout)
    if server.ssl_context is not None:
        _tls.check_context(server.ssl_context)
        if getattr(server, "socket_type", socket.SOCK_STREAM) != socket.SOCK_STREAM:
            raise ValueError("ssl_context needs a stream server (TCP or a Unix stream socket): "
                             "TLS over datagrams (DTLS) is not supported")
    if server._tls_context() is not None:
        _positive_seconds("tls_handshake_timeout", server.tls_handshake_timeout)
    if server.proxy_protocol:
        _pipeline.check_allow_from(server.proxy_allow_from)
    if server.keep_alive_timeout is not None:
        _positive_seconds("keep_alive_timeout", server.keep_alive_timeout)
    _seconds_or_zero("keep_alive_linger", server.keep_alive_linger)
    return workers


class BaseServer:
    """Base class for server classes.

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you do not use serve_forever()
    - fileno() -> int   # for selector

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - server_close()
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - service_actions()
    - handle_error()

    Methods for derived classes:

    - finish_request(request, client_address)

    Class variables that may be overridden by derived classes or instances:

    - timeout
    - address_family
    - socket_type
    - allow_reuse_address
    - allow_reuse_port (Python 3.11 and later, as in the standard library)

    Instance variables:

    - RequestHandlerClass
    - socket

    The loops run in the compiled core: a hook that a subclass (or an instance) overrides is called
    exactly where the standard library calls it; one that is not overridden runs without a Python
    call. Overrides are looked up once at the start of each ``serve_forever``/``handle_request``.
    """

    timeout = None
    # fastserver: worker processes (see fastserver.workers). With workers > 1, serve_forever()
    # forks that many copies of the loop over the same socket and supervises them.
    workers = 1
    graceful_timeout = 10.0  # seconds a stopping worker may take to finish its requests
    worker_id = None  # in a worker: its index, 0 to workers - 1
    # fastserver: read a PROXY protocol header (v1 or v2, see fastserver.proxy) from each connection
    # before its handler runs, and give the handler the client's address that it names.
    proxy_protocol = False
    proxy_timeout = 5.0  # seconds the header may take to arrive
    # the peers trusted to send it: addresses or networks (a list, or one comma-separated
    # string), or "*" for any; a connection from elsewhere is closed unserved (one log line)
    proxy_allow_from = ("127.0.0.1", "::1")
    # fastserver: hold each accepted stream connection in the loop, without a thread, until its
    # first bytes arrive; close it if none come within this many seconds (see fastserver._parking).
    # None (the default) processes connections at once, as the stdlib does.
    first_data_timeout = None
    # fastserver: TLS (see fastserver._tls). With an ssl.SSLContext for the server side, each
    # accepted stream connection is wrapped, and its handshake run off the loop, before its
    # handler runs; the handler's request is then the ssl.SSLSocket.
    ssl_context = None
    tls_handshake_timeout = 10.0  # seconds the whole handshake may take
    # fastserver: keep-alive parking (see fastserver._pipeline). Between two requests of a
    # persistent HTTP/1.1 connection served by http.server's request loop under ThreadingMixIn,
    # the connection waits in the loop's poller, without a thread; False turns it off.
    keep_alive_parking = True
    keep_alive_timeout = 75.0  # seconds a parked connection may stay idle (None: no limit)
    # seconds a request thread first waits for the next request itself: a client that sends it
    # at once is served without the hand-off through the loop (not while threads are short)
    keep_alive_linger = 0.005

    def __init__(self, server_address, RequestHandlerClass):
        """Constructor.  May be extended, do not override."""
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self.__is_shut_down = threading.Event()
        self.__state = _seam.LoopState()  # what the loops share with shutdown() and the workers
        self.__loop_thread = None  # the thread running serve_forever()'s loop
        # TLS connections held by the loop mid-handshake -> (deadline, their own timeout); the
        # loop's thread alone uses it
        self.__handshakes = weakref.WeakKeyDictionary()

    # The stdlib's private flag, kept for code that sets it to stop a loop: the state's now.
    __shutdown_request = property(
        lambda self: self.__state.shutdown_request,
        lambda self, value: setattr(self.__state, "shutdown_request", value))

    def _wake_loop(self):
        """Wake the running loop, if any, so that it looks at its state (a thread freed)."""
        self.__state.wake()

    def _loop_state(self):
        """The LoopState the server's loops share (fastserver._seam)."""
        return self.__state

    def _keep_alive(self):
        """The running loop's KeepAlive (fastserver._pipeline) while it can park connections,
        else None."""
        state = self.__state
        return state.keep_alive if state.parking is not None else None

    def server_activate(self):
        """Called by constructor to activate the server.  May be overridden."""

    def serve_forever(self, poll_interval=0.5):
        """Handle one request at a time until shutdown.

        Polls for shutdown every poll_interval seconds; ``shutdown()`` itself wakes the loop at
        once. service_actions() is called after each wait, as in the standard library.
        With ``workers`` > 1, runs that many worker processes instead and supervises them.
        """
        self.__is_shut_down.clear()
        state = self.__state
        try:
            supervise = self.worker_id is None and _check_settings(self) > 1
            with _cores.active.loops.Loop() as loop:
                state.loop = loop
                self.__loop_thread = threading.get_ident()
                try:
                    if supervise:
                        from .workers import Supervisor

                        Supervisor(self, state, loop, poll_interval).run()
                    else:
                        hooks = find_hooks(self)
                        state.keep_alive = hooks.keep_alive
                        loop.serve_forever(self, state, hooks, poll_interval)
                finally:
                    state.loop = None
                    state.keep_alive = None
                    self.__loop_thread = None
        finally:
            state.shutdown_request = False
            self.__is_shut_down.set()

    def shutdown(self):
        """Stop the serve_forever loop and wait until it has stopped.

        Must be called while serve_forever() is running in another thread, or it will deadlock.
        """
        self.__state.request_shutdown()
        self.__is_shut_down.wait()

    def service_actions(self):
        """Called by the serve_forever() loop.

        May be overridden by a subclass / Mixin to implement any code that needs to be run during
        the loop.
        """

    def handle_request(self):
        """Handle one request, possibly blocking.

        Respects self.timeout.
        """
        _check_settings(self)
        return _cores.active.loops.handle_request(self, find_hooks(self))

    def _handle_request_noblock(self):
        """Handle one request, without blocking.

        The loop calls this only after the socket is ready for reading; get_request() may still
        block if another process took the connection first.
        """
        state = self.__state
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            state.accept_error = exc.errno or 0
            return
        state.accept_error = 0
        _pipeline.dispatch(self, request, client_address, state.parking)

    def handle_timeout(self):
        """Called if no new request arrives within self.timeout.

        Overridden by ForkingMixIn.
        """

    def verify_request(self, request, client_address):
        """Verify the request.  May be overridden.

        Return True if we should proceed with this request.
        """
        return True

    def process_request(self, request, client_address):
        """Call finish_request.

        Overridden by ForkingMixIn and ThreadingMixIn.
        """
        _pipeline.process(self, request, client_address)

    def _tls_context(self):
        """The SSLContext each connection is wrapped with: ``ssl_context``, else that of a
        listener wrapped by hand (as Python 3.14's HTTPSServer does) whose connections
        get_request() accepts plain; None without TLS."""
        context = self.ssl_context
        if context is None and _is_default(self, "get_request", TCPServer.get_request):
            context = _tls.listener_context(getattr(self, "socket", None))
        return context

    def _start_tls(self, request):
        """TLS on a connection processed in its own thread or child process (after its PROXY
        header): ``(request, True)``, ``request`` the SSLSocket with its handshake complete, or
        ``(request, False)`` when the handshake failed or timed out (shutdown_request() closes
        ``request`` then, without a handler and without handle_error())."""
        tls = _tls.wrap(self._tls_context(), request, self.socket)
        if tls is None:
            return request, False
        try:
            _tls.handshake(tls, self.tls_handshake_timeout)
        except (OSError, ValueError):
            return tls, False
        return tls, True

    def _process_tls_in_loop(self, request, client_address, context):
        """process_request() with TLS, in the loop's thread: the loop holds each connection
        until it speaks (find_hooks() sets first_data_timeout), then every call runs the
        handshake as far as the client's bytes allow and parks the connection again, until the
        handshake is complete (the handler then runs) or fails or passes tls_handshake_timeout
        (the connection is closed). Outside a loop that holds connections (handle_request(),
        another thread) the handshake waits, up to tls_handshake_timeout."""
        state = self.__state
        pending = self.__handshakes.pop(request, None)
        if pending is None:  # a new connection: its PROXY header first, then the handshake
            if self.proxy_protocol:
                client_address = _pipeline.proxied(self, request, client_address)
                if client_address is None:
                    self.shutdown_request(request)
                    return
            tls = _tls.wrap(context, request, self.socket)
            if tls is None:
                self.shutdown_request(request)
                return
            request = tls
            pending = (monotonic() + self.tls_handshake_timeout, request.gettimeout())
        deadline, timeout = pending
        parking = state.parking if threading.get_ident() == self.__loop_thread else None
        try:
            if parking is None:
                request.settimeout(timeout)
                _tls.handshake(request, max(deadline - monotonic(), 0.0))
            else:
                request.setblocking(False)
                if _tls.step(request) == _tls.WAITING:
                    if monotonic() >= deadline:
                        raise TimeoutError("timed out in the TLS handshake")
                    self.__handshakes[request] = pending
                    parking.hold(request, client_address, deadline - monotonic())
                    return
                request.settimeout(timeout)
        except (OSError, ValueError):
            self.__handshakes.pop(request, None)
            self.shutdown_request(request)
            return
        _pipeline.handle(self, request, client_address)

    def proxied_address(self, request, client_address):
        """The client's address from the connection's PROXY header (fastserver, proxy_protocol).

        Called where the request is processed (its thread or child process) before
        finish_request(), for a peer that ``proxy_allow_from`` trusts. A missing, malformed or
        late header raises (ProxyError, TimeoutError, OSError): the connection is then closed,
        never served, and one line says why on the ``fastserver`` logger (not handle_error(): a
        health check that connects and closes is no error of the server's). A LOCAL or UNKNOWN
        header (a health check) keeps the connection's own peer address.
        """
        from .proxy import read_header

        header = read_header(request, timeout=self.proxy_timeout)
        return client_address if header.source is None else header.source

    def server_close(self):
        """Called to clean-up the server.  May be overridden."""

    def finish_request(self, request, client_address):
        """Finish one request by instantiating RequestHandlerClass."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""

    def handle_error(self, request, client_address):
        """Handle an error gracefully.  May be overridden.

        The default is to print a traceback and continue.
        """
        print("-" * 40, file=sys.stderr)
        print("Exception occurred during processing of request from", client_address,
              file=sys.stderr)
        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.server_close()


class TCPServer(BaseServer):
    """Base class for various socket-based server classes.

    Defaults to synchronous IP stream (i.e., TCP).

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass, bind_and_activate=True)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you don't use serve_forever()
    - fileno() -> int   # for selector

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - handle_error()

    Methods for derived classes:

    - finish_request(request, client_address)

    Class variables that may be overridden by derived classes or instances:

    - timeout
    - address_family
    - socket_type
    - request_queue_size (only for stream sockets)
    - allow_reuse_address
    - allow_reuse_port (Python 3.11 and later, as in the standard library)
    - tcp_nodelay (fastserver: TCP_NODELAY on accepted TCP connections, default True)

    Instance variables:

    - server_address
    - RequestHandlerClass
    - socket
    """

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = 5
    allow_reuse_address = False
    if _REUSE_PORT:
        allow_reuse_port = False
    # fastserver: TCP_NODELAY on accepted TCP connections, so that a reply written in two parts
    # (http.server: headers, then body) is not held back by Nagle's algorithm waiting for the
    # client's delayed ACK (~40 ms a request on keep-alive). False gives the stdlib's behaviour.
    # On Linux server_activate() sets it on the listener before listen(): every connection
    # inherits it, and none needs a setsockopt() of its own.
    tcp_nodelay = True
    _listener_nodelay = False  # server_activate() set TCP_NODELAY on the listener

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True, *,
                 ssl_context=None):
        """Constructor.  May be extended, do not override.

        ``ssl_context`` (fastserver): an ssl.SSLContext for the server side, to serve TLS (sets
        the ``ssl_context`` attribute; None keeps the class's).
        """
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        if ssl_context is not None:
            self.ssl_context = _tls.check_context(ssl_context)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except:  # noqa: E722 - close the socket whatever went wrong
                self.server_close()
                raise

    @classmethod
    def from_socket(cls, sock, RequestHandlerClass, **kwargs):
        """A server on ``sock``, a socket already bound (and listening, for a stream socket).

        For sockets inherited from a supervisor or passed by systemd's socket activation. The
        server owns the socket from then on: server_close() closes it. Extra keyword arguments go
        to the constructor (which neither binds nor activates).
        """
        if sock.type != cls.socket_type:
            raise ValueError(f"{cls.__name__} needs a socket of type {cls.socket_type!r}, "
                             f"not {sock.type!r}")
        server = cls(sock.getsockname(), RequestHandlerClass, bind_and_activate=False, **kwargs)
        server.socket.close()
        server.socket = sock
        if sock.family != server.address_family:
            server.address_family = sock.family
        server.server_address = sock.getsockname()
        return server

    def server_bind(self):
        """Called by constructor to bind the socket.  May be overridden."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # (3.10's socketserver has no allow_reuse_port: there, a subclass's is ignored too.)
        if _REUSE_PORT and self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        """Called by constructor to activate the server.  May be overridden."""
        if self.tcp_nodelay and _LISTENER_PASSES_NODELAY and self.socket.family in _TCP_FAMILIES:
            # before listen(): no connection can have been queued without it
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._listener_nodelay = True
            except OSError:
                pass  # then get_request() sets it on each connection
        self.socket.listen(self.request_queue_size)

    def server_close(self):
        """Called to clean-up the server.  May be overridden."""
        self.socket.close()

    def fileno(self):
        """Return socket file number.  Interface required by selector."""
        return self.socket.fileno()

    def get_request(self):
        """Get the request and client address from the socket.  May be overridden."""
        listener = self.socket
        if _tls.listener_context(listener) is not None:
            # a listener wrapped by hand: accept plain, the handshake runs off the loop
            request, client_address = _tls.accept_plain(listener)
        else:
            request, client_address = listener.accept()
        if request.family in _TCP_FAMILIES:
            wanted = bool(self.tcp_nodelay)
            if wanted != self._listener_nodelay:  # not what it inherited from the listener
                request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, wanted)
        return request, client_address

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        try:
            # Explicitly shut down: socket.close() merely releases the socket and waits for GC
            # to perform the actual close.
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # some platforms raise ENOTCONN here
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""
        request.close()


class UDPServer(TCPServer):
    """UDP server class."""

    allow_reuse_address = False
    if _REUSE_PORT:
        allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192

    def get_request(self):
        data, client_addr = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_addr

    def server_activate(self):
        # No need to call listen() for UDP.
        pass

    def shutdown_request(self, request):
        # No need to shutdown anything.
        self.close_request(request)

    def close_request(self, request):
        # No need to close anything.
        pass


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        address_family = socket.AF_UNIX


def _is_default(server, name, default):
    """True when ``server.<name>`` is fastserver's own ``default`` (not overridden anywhere)."""
    return name not in vars(server) and getattr(type(server), name, None) is default


def _hands_requests_off(server):
    """True when process_request() is ThreadingMixIn's or ForkingMixIn's, which hand each
    connection to a thread or a child process at once."""
    handing_off = [ThreadingMixIn.process_request]
    if hasattr(mixins, "ForkingMixIn"):
        handing_off.append(mixins.ForkingMixIn.process_request)
    return any(_is_default(server, "process_request", each) for each in handing_off)


def find_hooks(server):
    """The seam's Hooks for ``server``: which hooks the core must call, found now."""
    hooks = _seam.Hooks()

    def hook(name, *defaults):
        if any(_is_default(server, name, d) for d in defaults):
            return None
        return getattr(server, name)

    hooks.handle_noblock = hook("_handle_request_noblock", BaseServer._handle_request_noblock)
    hooks.get_request = hook("get_request", TCPServer.get_request)
    sock = getattr(server, "socket", None)
    hooks.accept = (hooks.get_request is None and type(sock) is socket.socket
                    and sock.type == socket.SOCK_STREAM)
    if hooks.get_request is None and not hooks.accept:
        hooks.get_request = server.get_request
    if hooks.accept:
        wanted = bool(getattr(server, "tcp_nodelay", False))
        if wanted != bool(getattr(server, "_listener_nodelay", False)):
            hooks.nodelay = int(wanted)
    hooks.verify_request = hook("verify_request", BaseServer.verify_request)
    hooks.process_request = hook("process_request", BaseServer.process_request)
    if hooks.process_request is None and server.proxy_protocol:
        hooks.process_request = server.process_request  # reads the header in Python
    tls = server._tls_context() is not None
    if hooks.process_request is None and tls:
        hooks.process_request = server.process_request  # wraps and handshakes in Python
    hooks.finish_request = hook("finish_request", BaseServer.finish_request)
    hooks.service_actions = hook("service_actions", BaseServer.service_actions)
    if getattr(server, "max_threads", None) is not None and hasattr(server, "_accepting"):
        hooks.accepting = server._accepting
    # Only a loop that does its own dispatch (not an overridden _handle_request_noblock)
    # of stream connections can hold them.
    if hooks.handle_noblock is None and getattr(sock, "type", None) == socket.SOCK_STREAM:
        hooks.first_data_timeout = server.first_data_timeout
        if tls and not _hands_requests_off(server):
            # The handshake runs in the loop, step by step as the client's bytes arrive: the
            # loop holds each connection until then (and no longer than the handshake may take).
            hooks.first_data_timeout = min(server.first_data_timeout or float("inf"),
                                           server.tls_handshake_timeout)
    # Keep-alive parking needs the loop's poller. Request threads that accept for themselves
    # park there too, and a parked connection that speaks again goes to the thread pool: two
    # groups of threads, so not under max_threads (the loop then hands out every connection).
    request_threads = (isinstance(server, ThreadingMixIn)
                       and _is_default(server, "process_request", ThreadingMixIn.process_request)
                       and _is_default(server, "process_request_thread",
                                       ThreadingMixIn.process_request_thread))
    if hooks.first_data_timeout is not None or (
            hooks.handle_noblock is None and getattr(sock, "type", None) == socket.SOCK_STREAM):
        hooks.keep_alive = _pipeline.keep_alive_for(server, request_threads)
    hooks.threads_accept = (
        (hooks.keep_alive is None or getattr(server, "max_threads", None) is None)
        and request_threads
        and hooks.accept and hooks.handle_noblock is None and hooks.verify_request is None
        and hooks.service_actions is None and not server.proxy_protocol and not tls
        and hooks.first_data_timeout is None)  # held connections are the loop's to hand out
    if _is_default(server, "shutdown_request", TCPServer.shutdown_request):
        hooks.shutdown_request = _seam.SHUTDOWN_TCP
    else:
        hooks.shutdown_request = hook("shutdown_request", BaseServer.shutdown_request,
                                      UDPServer.shutdown_request)
    if _is_default(server, "close_request", TCPServer.close_request):
        hooks.close_request = _seam.CLOSE_SOCKET
    else:
        hooks.close_request = hook("close_request", BaseServer.close_request,
                                   UDPServer.close_request)
    if hooks.threads_accept:
        hooks.thread_pool = server._thread_pool
    return hooks
