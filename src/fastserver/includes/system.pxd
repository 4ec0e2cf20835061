# cython: language_level=3
# The system's C interfaces that the compiled modules use: sockets, addresses, poll, the clock.
# Declared once here (uvloop's includes/ in spirit); csrc.pxd declares fastserver's own C.

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        unsigned short ss_family
    enum: AF_INET, AF_INET6, AF_UNIX
    enum: SHUT_WR
    enum: MSG_DONTWAIT
    int shutdown(int fd, int how)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
    ssize_t recv(int fd, void *buf, size_t length, int flags)
    ssize_t send(int fd, const void *buf, size_t length, int flags)

cdef extern from "<netinet/in.h>" nogil:
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

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    ctypedef unsigned long nfds_t
    enum: POLLIN, POLLOUT
    int poll(pollfd *fds, nfds_t nfds, int timeout)

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK  # (an int, not an enum: it may equal EAGAIN, and a switch would clash)
