# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""How a compiled loop hands a connection on: the Dispatcher of one server's hooks.

``_core``'s loop and ``_acceptors``' request threads both accept with it, wrap the descriptor in
the server's socket class, and run the request through the hooks the API layer found
(``fastserver._seam``): the defaults here, without a Python call; the overrides where the
standard library calls them. The accept() errors it retries and the back-off after those it
cannot are ``fastserver._policy``'s, copied into C at import.
"""

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.string cimport memset, strlen
from posix.unistd cimport close

from fastserver.includes.csrc cimport fs_accept
from fastserver.includes.system cimport *

import socket as _socket

from fastserver import _policy, _seam

# The policy's tables, in C (fastserver._policy says what they mean), filled at import.
cdef int BACKOFF_MS[16]
cdef int BACKOFF_STEPS = 0
cdef int PEER_GONE[8]
cdef int PEER_GONE_COUNT = 0


cdef int load_policy() except -1:
    global BACKOFF_STEPS, PEER_GONE_COUNT
    for ms in _policy.BACKOFF_MS[:16]:
        BACKOFF_MS[BACKOFF_STEPS] = ms
        BACKOFF_STEPS += 1
    for err in sorted(_policy.PEER_GONE)[:8]:
        PEER_GONE[PEER_GONE_COUNT] = err
        PEER_GONE_COUNT += 1
    return 0


load_policy()


cdef int next_backoff_ms(int backoff_ms) noexcept nogil:
    """The delay after another failed accept(), given the last one (0: none yet): the policy's
    next step."""
    cdef int step
    for step in range(BACKOFF_STEPS):
        if BACKOFF_MS[step] > backoff_ms:
            return BACKOFF_MS[step]
    return BACKOFF_MS[BACKOFF_STEPS - 1]


cdef bint peer_gone(int err) noexcept nogil:
    """accept() failed for a connection the peer gave up while queued: take the next one."""
    cdef int i
    for i in range(PEER_GONE_COUNT):
        if PEER_GONE[i] == err:
            return True
    return False


cdef object _fsdecode = __import__("os").fsdecode
cdef object _socket_detach = __import__("_socket").socket.detach


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
    are declared in _dispatch.pxd: fastserver._acceptors serves requests through it too.)"""

    def __cinit__(self, server, hooks):
        self.server = server
        self.hooks = hooks
        self.handle_noblock = hooks.handle_noblock
        self.get_request = hooks.get_request
        self.verify_request = hooks.verify_request
        self.process_request = hooks.process_request
        self.finish_request = hooks.finish_request
        self.service_actions = hooks.service_actions
        self.keep_alive = hooks.keep_alive
        self.tcp_shutdown = hooks.shutdown_request is _seam.SHUTDOWN_TCP
        self.shutdown_request = None if self.tcp_shutdown else hooks.shutdown_request
        self.close_socket = hooks.close_request is _seam.CLOSE_SOCKET
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
            # what TCPServer.get_request() does: set TCP_NODELAY where the connection did not
            # inherit the value wanted from its listener (find_hooks() says which)
            self.nodelay = hooks.nodelay if self.family in (AF_INET, AF_INET6) else -1
            if self.family not in (AF_INET, AF_INET6, AF_UNIX):
                self.accept_in_c = False
                self.get_request = server.get_request

    cdef int handle_ready(self, state, int limit, accepting=None) except -1:
        """Handle up to ``limit`` ready connections, as _handle_request_noblock does each; stop
        early on shutdown() (``state``) or when ``accepting()`` says the server can take no
        more."""
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
            if handled and (state.shutdown_request
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
            if peer_gone(err):
                continue
            return None  # EAGAIN: drained; anything else: the next wakeup retries
        self.set_nodelay(fd)
        return self.wrap(fd), sockaddr_to_python(&addr, length)

    cdef void set_nodelay(self, int fd) noexcept nogil:
        """TCP_NODELAY on an accepted connection, as TCPServer.get_request() sets it."""
        if self.nodelay >= 0:
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &self.nodelay, sizeof(self.nodelay))

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
                if self.silent is not None:
                    self.silent.hold(request, client_address)
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

    def process_silent(self, request, client_address):
        """Process a connection held until it spoke (Parking), now readable."""
        self.process(request, client_address)

    def close_silent(self, request):
        """Close a held connection: shutdown_request(), as the server defines it."""
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
                # thread waiting for the GIL would take it, and this one would wait to finish.
                # socket.socket.detach() is this, in Python (a frame and a super() a request).
                request._closed = True
                fd = _socket_detach(request)
                if fd >= 0:
                    close(fd)
            else:
                request.close()
        elif self.close_request is not None:
            self.close_request(request)
        return 0
