# cython: language_level=3, embedsignature=True
"""The compiled core: serve_forever() and handle_request() over the C poller.

The loop waits without the GIL on the listening socket and a wakeup descriptor, accepts with
accept4() (close-on-exec) in batches with the GIL held on a listener it made non-blocking, and
dispatches each connection as ``BaseServer._handle_request_noblock`` would. The hooks a server
overrides are found once per loop (``servers.Hooks``) and called exactly where the standard
library calls them; the defaults run here without a Python call.
"""

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport (ECONNABORTED, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, EPROTO,
                         errno)
from libc.string cimport memset, strerror, strlen
from libc.math cimport ceil
from posix.unistd cimport close

from fastserver._poller cimport *

import socket as _socket
from time import monotonic

from fastserver._parked import ParkedConnections

POLLER = fs_poller_name.decode()

cdef extern from "<netinet/in.h>" nogil:
    enum: AF_INET, AF_INET6, AF_UNIX
    ctypedef unsigned short in_port_t
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        in_port_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        in_port_t sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)

cdef extern from "<netinet/tcp.h>" nogil:
    enum: IPPROTO_TCP, TCP_NODELAY

cdef extern from "<sys/socket.h>" nogil:
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        char sun_path[1]

cdef extern from *:
    """
    #include <stddef.h>
    #include <sys/un.h>
    #define FS_SUN_PATH_OFFSET offsetof(struct sockaddr_un, sun_path)
    """
    size_t FS_SUN_PATH_OFFSET

# Connections accepted per readiness before the loop looks at its wakeup descriptor again.
cdef int ACCEPT_BATCH = 32
cdef int EVENTS_MAX = 64
# Out of descriptors or memory, accept() fails at once for as long as it lasts: instead of spinning
# (the stdlib's loop does), leave the client queued and retry after a delay that doubles from
# BACKOFF_MIN_MS to BACKOFF_MAX_MS. Same policy as _pure.
cdef int BACKOFF_MIN_MS = 1
cdef int BACKOFF_MAX_MS = 50


cdef int next_backoff_ms(int backoff_ms) noexcept nogil:
    """The delay after another failed accept(), given the last one (0: none yet)."""
    return min(max(2 * backoff_ms, BACKOFF_MIN_MS), BACKOFF_MAX_MS)


cdef inline bint out_of_resources(int err) noexcept:
    return err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM
cdef object _fsdecode = __import__("os").fsdecode

cdef object _Hooks = None


cdef object _acceptors = None
cdef object _thread_pool = None


cdef object acceptors():
    global _acceptors
    if _acceptors is None:
        from fastserver import _acceptors as module
        _acceptors = module
    return _acceptors


cdef object thread_pool(server):
    global _thread_pool
    if _thread_pool is None:
        from fastserver.mixins import thread_pool as function
        _thread_pool = function
    return _thread_pool(server)


cdef object hooks_for(server):
    global _Hooks
    if _Hooks is None:
        from fastserver.servers import Hooks
        _Hooks = Hooks
    return _Hooks(server)


cdef int raise_oserror(int err) except -1:
    """Raise the OSError subclass the socket module would raise for ``err``."""
    raise OSError(err, strerror(err).decode())


cdef int raise_errno() except -1:
    return raise_oserror(errno)


cdef int timeout_ms(object seconds) except? -2:
    """poll_interval in seconds -> milliseconds for the poller, rounded up (None: -1, forever)."""
    if seconds is None:
        return -1
    cdef double s = seconds
    if s <= 0:
        return 0
    if s > 2000000.0:
        return 2000000000
    return <int>ceil(s * 1000.0)


cdef object sockaddr_to_python(sockaddr_storage *addr, socklen_t length):
    """The client address as the socket module gives it for this family."""
    cdef char host[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    cdef sockaddr_un *un
    cdef size_t path_length
    if addr.ss_family == AF_INET:
        v4 = <sockaddr_in *>addr
        inet_ntop(AF_INET, &v4.sin_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v4.sin_port))
    if addr.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    if addr.ss_family == AF_UNIX:
        un = <sockaddr_un *>addr
        path_length = length - FS_SUN_PATH_OFFSET if length > FS_SUN_PATH_OFFSET else 0
        if path_length > 0 and un.sun_path[0] == 0:  # Linux's abstract namespace
            return (<char *>un.sun_path)[:path_length]
        return _fsdecode((<char *>un.sun_path)[:strlen(un.sun_path)])
    return None


cdef class Dispatcher:
    """One server's hooks, resolved; handles the connections that are ready. (Its attributes
    are declared in _core.pxd: fastserver._acceptors serves requests through it too.)"""

    def __cinit__(self, server):
        self.server = server
        hooks = hooks_for(server)
        self.hooks = hooks
        self.handle_noblock = hooks.handle_noblock
        self.get_request = hooks.get_request
        self.verify_request = hooks.verify_request
        self.process_request = hooks.process_request
        self.finish_request = hooks.finish_request
        self.service_actions = hooks.service_actions
        self.tcp_shutdown = hooks.shutdown_request == hooks.SHUTDOWN_TCP
        self.shutdown_request = None if self.tcp_shutdown else hooks.shutdown_request
        self.close_socket = hooks.close_request == hooks.CLOSE_SOCKET
        self.close_request = None if self.close_socket else hooks.close_request
        self.listen_fd = server.fileno()
        if self.listen_fd < 0:
            raise ValueError(f"Invalid file descriptor: {self.listen_fd}")
        self.accept_in_c = hooks.accept and self.handle_noblock is None
        if self.accept_in_c:
            sock = server.socket
            self.family = sock.family
            self.type_ = sock.type
            self.proto = sock.proto
            self.socket_class = type(sock)
            self.nodelay = bool(server.tcp_nodelay) and self.family in (AF_INET, AF_INET6)
            if self.family not in (AF_INET, AF_INET6, AF_UNIX):
                self.accept_in_c = False
                self.get_request = server.get_request

    cdef int handle_ready(self, int limit, accepting=None) except -1:
        """Handle up to ``limit`` ready connections, as _handle_request_noblock does each; stop
        early on shutdown() or when ``accepting()`` says the server can take no more."""
        cdef int handled = 0
        if not self.accept_in_c:
            if self.handle_noblock is not None:
                self.handle_noblock()  # (handle_one() returns its value instead)
            else:
                request = self.next_request()
                if request is not None:
                    self.dispatch(request[0], request[1])
            return 1
        while handled < limit:
            if handled and (self.server._BaseServer__shutdown_request
                            or (accepting is not None and not accepting())):
                break
            request = self.accept()
            if request is None:
                break
            handled += 1
            self.dispatch(request[0], request[1])
        return handled

    cdef object next_request(self):
        try:
            request = self.get_request()
        except OSError as exc:
            self.accept_error = exc.errno or 0
            return None
        self.accept_error = 0
        return request

    cdef object accept(self):
        """(socket, address) for the next connection, or None when there is none (or it failed:
        get_request's OSError is ignored in the stdlib's loop too)."""
        cdef sockaddr_storage addr
        cdef socklen_t length
        cdef int fd, err
        while True:
            length = sizeof(addr)
            memset(&addr, 0, sizeof(addr))
            fd = fs_accept(self.listen_fd, <sockaddr *>&addr, &length)
            if fd >= 0:
                self.accept_error = 0
                break
            err = self.accept_error = errno
            if err == EINTR:
                PyErr_CheckSignals()
                continue
            if err == ECONNABORTED or err == EPROTO:
                continue  # the peer gave up while queued: try the next one
            return None  # EAGAIN: drained; anything else: the next wakeup retries
        self.set_nodelay(fd)
        return self.wrap(fd), sockaddr_to_python(&addr, length)

    cdef void set_nodelay(self, int fd) noexcept nogil:
        """TCP_NODELAY on an accepted connection, as TCPServer.get_request() sets it."""
        cdef int one = 1
        if self.nodelay:
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))

    cdef object wrap(self, int fd):
        """The socket object for an accepted descriptor (closed if that fails)."""
        try:
            return self.socket_class(self.family, self.type_, self.proto, fd)
        except BaseException:
            close(fd)
            raise

    cdef int dispatch(self, request, client_address) except -1:
        if self.verify_request is None or self.verify_request(request, client_address):
            try:
                if self.parked is not None:
                    self.parked.park(request, client_address)
                else:
                    self.process(request, client_address)
            except Exception:
                self.server.handle_error(request, client_address)
                self.end_request(request)
            except BaseException:
                self.end_request(request)
                raise
        else:
            self.end_request(request)
        return 0

    def process_parked(self, request, client_address):
        """Process a parked connection, now readable."""
        self.process(request, client_address)

    def close_parked(self, request):
        """Close a parked connection: shutdown_request(), as the server defines it."""
        self.end_request(request)

    cdef int process(self, request, client_address) except -1:
        if self.process_request is not None:
            self.process_request(request, client_address)
            return 0
        self.finish(request, client_address)
        self.end_request(request)
        return 0

    cdef int finish(self, request, client_address) except -1:
        """finish_request(): the handler, instantiated here where it is not overridden."""
        if self.finish_request is not None:
            self.finish_request(request, client_address)
        else:
            self.server.RequestHandlerClass(request, client_address, self.server)
        return 0

    cdef int end_request(self, request) except -1:
        """shutdown_request(): shutdown(SHUT_WR) where it is TCPServer's, then close_request()."""
        cdef int fd
        if self.shutdown_request is not None:
            self.shutdown_request(request)
            return 0
        if self.tcp_shutdown:
            if type(request) is _socket.socket:
                fd = request.fileno()
                if fd >= 0:
                    shutdown(fd, SHUT_WR)  # errors (ENOTCONN: the peer left) are ignored
            else:
                try:
                    request.shutdown(_socket.SHUT_WR)
                except OSError:
                    pass
        if self.close_socket:
            if type(request) is _socket.socket and request._io_refs <= 0:
                # what close() does, but without releasing the GIL around close(2): another
                # thread waiting for the GIL would take it, and this one would wait to finish
                fd = request.detach()
                if fd >= 0:
                    close(fd)
            else:
                request.close()
        elif self.close_request is not None:
            self.close_request(request)
        return 0


cdef class Loop:
    """One serve_forever() run: the poller, the wakeup descriptor, and the loop itself."""

    cdef fs_poller *poller
    cdef int wake_r, wake_w
    cdef bint closed

    def __cinit__(self):
        self.wake_r = self.wake_w = -1
        self.poller = fs_poller_new()
        if self.poller == NULL:
            raise_errno()
        if (fs_wakeup_open(&self.wake_r, &self.wake_w) < 0
                or fs_poller_add(self.poller, self.wake_r, FS_READABLE) < 0):
            err = errno
            self.close()
            raise_oserror(err)

    def __dealloc__(self):
        self.close()

    def close(self):
        """Free the poller and the wakeup descriptor; wake() does nothing afterwards."""
        if self.closed:
            return
        self.closed = True
        fs_wakeup_close(self.wake_r, self.wake_w)
        fs_poller_free(self.poller)
        self.poller = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wake(self):
        """End the current wait at once (shutdown() calls it). Runs with the GIL, as close()."""
        if not self.closed and fs_wakeup_signal(self.wake_w) < 0:
            raise_errno()

    def sleep(self, seconds):
        """Wait until wake() or for ``seconds`` (the workers' supervisor waits so)."""
        cdef fs_event events[1]
        cdef int n = self.wait(events, 1, timeout_ms(seconds))
        if n > 0:
            fs_wakeup_drain(self.wake_r)

    def watch(self, int fd):
        """Add ``fd`` to the poller, for readability (a parked connection)."""
        if fs_poller_add(self.poller, fd, FS_READABLE) < 0:
            raise_errno()

    def unwatch(self, int fd):
        fs_poller_remove(self.poller, fd)

    def serve_forever(self, server, poll_interval):
        """The standard library's serve_forever loop, waiting in C and woken by wake()."""
        if self.closed:
            raise ValueError("serve_forever() on a closed Loop")
        cdef Dispatcher dispatcher = Dispatcher(server)
        cdef int listen_fd = dispatcher.listen_fd
        cdef int was_nonblocking = 0
        cdef int ms = timeout_ms(poll_interval)
        if dispatcher.accept_in_c and dispatcher.hooks.threads_accept and acceptors().SUPPORTED:
            return self.serve_with_acceptors(server, dispatcher, ms)
        if fs_poller_add(self.poller, listen_fd, FS_READABLE) < 0:
            raise_errno()
        if dispatcher.accept_in_c and fs_set_nonblocking(listen_fd, 1, &was_nonblocking) < 0:
            fs_poller_remove(self.poller, listen_fd)
            raise_errno()
        if dispatcher.hooks.first_data_timeout is not None:
            dispatcher.parked = ParkedConnections(
                dispatcher.hooks.first_data_timeout, self.watch, self.unwatch,
                dispatcher.process_parked, server.handle_error, dispatcher.close_parked)
        try:
            self.run(server, dispatcher, ms)
        finally:
            try:
                if dispatcher.parked is not None:
                    dispatcher.parked.close_all(dispatcher.hooks.accepting)
            finally:
                if dispatcher.accept_in_c and not was_nonblocking:
                    fs_set_nonblocking(listen_fd, 0, NULL)
                fs_poller_remove(self.poller, listen_fd)

    cdef int run(self, server, Dispatcher dispatcher, int ms) except -1:
        cdef fs_event events[64]
        cdef int n, i, wait_ms, due_ms, backoff_ms = 0
        cdef bint listener_ready, armed = True, wanted, paused = False
        accepting = dispatcher.hooks.accepting
        parked = dispatcher.parked
        while not server._BaseServer__shutdown_request:
            # The listener is polled unless accepting is paused or no thread is free (with
            # parking: while a readable connection waits for one).
            if parked is None:
                wanted = not paused and (accepting is None or accepting())
            else:
                wanted = not paused and not parked.ready
            if wanted != armed:
                if wanted:
                    if fs_poller_add(self.poller, dispatcher.listen_fd, FS_READABLE) < 0:
                        raise_errno()
                else:
                    fs_poller_remove(self.poller, dispatcher.listen_fd)
                armed = wanted
            wait_ms = backoff_ms if paused and not 0 <= ms < backoff_ms else ms
            if parked is not None:
                due = parked.next_timeout()
                if due is not None:
                    due_ms = timeout_ms(due)
                    if wait_ms < 0 or due_ms < wait_ms:
                        wait_ms = due_ms
            n = self.wait(events, EVENTS_MAX, wait_ms)
            if server._BaseServer__shutdown_request:
                break
            listener_ready = False
            for i in range(n):
                if events[i].fd == self.wake_r:
                    fs_wakeup_drain(self.wake_r)
                elif events[i].fd == dispatcher.listen_fd:
                    listener_ready = True
                else:
                    parked.readable(events[i].fd)
            if parked is not None:
                parked.expire()
                parked.dispatch(accepting)
            if paused:
                paused = False  # over (a wakeup, e.g. a freed thread, ends it early)
            elif listener_ready:
                # service_actions() (ForkingMixIn: reaping, max_children) runs between requests
                # in the stdlib: a server that overrides it gets one request per wakeup.
                dispatcher.handle_ready(
                    ACCEPT_BATCH if dispatcher.service_actions is None else 1,
                    accepting if parked is None else None)
                if out_of_resources(dispatcher.accept_error):
                    backoff_ms = next_backoff_ms(backoff_ms)
                    paused = True
                else:
                    backoff_ms = 0
            if dispatcher.service_actions is not None:
                dispatcher.service_actions()
        if not armed:  # serve_forever() removes it
            fs_poller_add(self.poller, dispatcher.listen_fd, FS_READABLE)
        return 0

    cdef int serve_with_acceptors(self, server, Dispatcher dispatcher, int ms) except -1:
        """ThreadingMixIn's default path: the request threads accept the connections themselves
        (see fastserver._acceptors) and this thread only waits for shutdown()."""
        cdef fs_event events[1]
        cdef int was_nonblocking = 0
        cdef int listen_fd = dispatcher.listen_fd
        if fs_set_nonblocking(listen_fd, 1, &was_nonblocking) < 0:
            raise_errno()
        try:
            threads = acceptors().Acceptors(server, dispatcher)
            thread_pool(server).adopt(threads)
            try:
                threads.start()
                while not server._BaseServer__shutdown_request:
                    if self.wait(events, 1, ms) > 0:  # the wakeup descriptor: all it waits on
                        fs_wakeup_drain(self.wake_r)
            finally:
                threads.stop()
        finally:
            if not was_nonblocking:
                fs_set_nonblocking(listen_fd, 0, NULL)
        return 0

    cdef int wait(self, fs_event *events, int capacity, int ms) except -1:
        """Wait without the GIL; a signal runs its Python handler (which may raise) and the wait
        goes on for what is left of the timeout, as PEP 475 asks."""
        cdef int n, err
        deadline = monotonic() + ms / 1000.0 if ms > 0 else None
        while True:
            with nogil:
                n = fs_poller_wait(self.poller, events, capacity, ms)
                err = errno
            if n >= 0:
                # A signal that another thread took (no EINTR here), or that came while this
                # thread ran C code, has its handler run now, as the interpreter would run it at
                # its next bytecode: within poll_interval (a no-op outside the main thread).
                PyErr_CheckSignals()
                return n
            if err != EINTR:
                raise_oserror(err)
            PyErr_CheckSignals()
            if deadline is not None:
                ms = timeout_ms(max(deadline - monotonic(), 0.0))


def handle_request(server):
    """The standard library's handle_request(): wait up to the timeout, then handle one request."""
    timeout = server.socket.gettimeout()
    if timeout is None:
        timeout = server.timeout
    elif server.timeout is not None:
        timeout = min(timeout, server.timeout)
    deadline = None if timeout is None else monotonic() + timeout
    cdef Dispatcher dispatcher = Dispatcher(server)
    while True:
        if wait_readable(dispatcher.listen_fd, timeout_ms(timeout)):
            return handle_one(dispatcher)
        if deadline is not None:
            timeout = deadline - monotonic()
            if timeout < 0:
                return server.handle_timeout()


cdef object handle_one(Dispatcher dispatcher):
    cdef int was_nonblocking = 0
    if dispatcher.handle_noblock is not None:
        return dispatcher.handle_noblock()  # handle_request() returns what it returns
    if not dispatcher.accept_in_c:
        dispatcher.handle_ready(1)
        return None
    if fs_set_nonblocking(dispatcher.listen_fd, 1, &was_nonblocking) < 0:
        raise_errno()
    try:
        request = dispatcher.accept()
    finally:
        if not was_nonblocking:
            fs_set_nonblocking(dispatcher.listen_fd, 0, NULL)
    if request is not None:
        dispatcher.dispatch(request[0], request[1])
    return None


cdef bint wait_readable(int fd, int ms) except -1:
    """Wait without the GIL; after a signal (its Python handler may raise) say not ready, so
    that the caller waits again for what is left of its timeout."""
    cdef int ready, err
    with nogil:
        ready = fs_wait_readable(fd, ms)
        err = errno
    if ready >= 0:
        return ready
    if err != EINTR:
        raise_oserror(err)
    PyErr_CheckSignals()
    return False
