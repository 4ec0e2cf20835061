# cython: language_level=3
# fastserver's own C (csrc/), for the compiled modules: each header declared once, here.

from fastserver.includes.system cimport sockaddr, socklen_t

cdef extern from "compat.h" nogil:
    int FS_SEND_FLAGS  # for every send(): MSG_NOSIGNAL where there is one
    void FS_CPU_RELAX()  # a pause in a spin-wait loop
    # Relaxed atomics for flags read without a lock (a bint is an int in C).
    int fs_load_int(const int *flag)
    void fs_store_int(int *flag, int value)
    long fs_load_long(const long *value)
    void fs_store_long(long *target, long value)

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

cdef extern from "turn.h" nogil:
    struct fs_turn_stats:
        unsigned long long taken, waited, stolen
    void fs_turn_enroll(int enrolled, long patience_us)
    void fs_turn_give()
    void fs_turn_take()
    int fs_turn_wanted()
    void fs_turn_counts(fs_turn_stats *stats)

cdef extern from "sockets.h" nogil:
    # (inline: compiled into each module that uses them)
    int fs_accept(int listen_fd, sockaddr *addr, socklen_t *addr_len)
    int fs_set_nonblocking(int fd, int on, int *was_nonblocking)

cdef extern from "acceptor.h" nogil:
    const int fs_acceptors_supported
    int fs_acceptor_epoll(int listen_fd, int stop_fd)
    int fs_acceptor_wait(int epfd, int timeout_ms)
    int fs_acceptor_requeue(int epfd, int listen_fd)
    int fs_stop_open()
    int fs_stop_signal(int fd)
    int fs_stop_wait(int fd, int timeout_ms)
