# cython: language_level=3
# The Dispatcher, for the loop (fastserver._core) and the request threads (fastserver._acceptors).

from fastserver.includes.system cimport sockaddr_storage, socklen_t


cdef object sockaddr_to_python(sockaddr_storage *addr, socklen_t length)

cdef int next_backoff_ms(int backoff_ms) noexcept nogil
cdef bint peer_gone(int err) noexcept nogil


cdef class Dispatcher:
    # Threads: set once in __cinit__ and read-only afterwards (the request threads of
    # _acceptors share it), but accept_error and silent, which the loop's thread alone uses.
    cdef object server
    cdef object hooks
    cdef bint accept_in_c
    cdef int listen_fd, family, type_, proto
    cdef object socket_class
    cdef object get_request, handle_noblock, verify_request, process_request
    cdef object finish_request, shutdown_request, close_request, service_actions
    cdef bint tcp_shutdown, close_socket
    cdef int nodelay  # TCP_NODELAY to set on each connection (0 or 1), or -1: none
    cdef int accept_error  # errno of the last failed accept (0 after a success)
    cdef object silent  # the loop's Parking where it holds new connections (first_data_timeout)
    cdef object keep_alive  # hooks.keep_alive: the request threads' keep-alive parking, or None

    cdef int handle_ready(self, state, int limit, accepting=*) except -1
    cdef object next_request(self)
    cdef object accept(self)
    cdef void set_nodelay(self, int fd) noexcept nogil
    cdef object wrap(self, int fd)
    cdef int dispatch(self, request, client_address) except -1
    cdef int process(self, request, client_address) except -1
    cdef int finish(self, request, client_address) except -1
    cdef int end_request(self, request) except -1
