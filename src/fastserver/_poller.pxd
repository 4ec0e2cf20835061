# cython: language_level=3
# The C poller (csrc/poller.h), for the compiled modules.

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        unsigned short ss_family
    int shutdown(int fd, int how)
    enum: SHUT_WR

cdef extern from "poller.h" nogil:
    enum:
        FS_READABLE
        FS_WRITABLE
        FS_HANGUP

    ctypedef struct fs_poller:
        pass

    ctypedef struct fs_event:
        int fd
        unsigned events

    const char fs_poller_name[]

    fs_poller *fs_poller_new()
    void fs_poller_free(fs_poller *p)
    int fs_poller_add(fs_poller *p, int fd, unsigned events)
    int fs_poller_remove(fs_poller *p, int fd)
    int fs_poller_wait(fs_poller *p, fs_event *out, int max_events, int timeout_ms)
    int fs_wait_readable(int fd, int timeout_ms)
    int fs_wakeup_open(int *read_fd, int *write_fd)
    int fs_wakeup_signal(int write_fd)
    void fs_wakeup_drain(int read_fd)
    void fs_wakeup_close(int read_fd, int write_fd)
    int fs_accept(int listen_fd, sockaddr *addr, socklen_t *addr_len)
    int fs_set_nonblocking(int fd, int on, int *was_nonblocking)
