/* The poller behind fastserver's loop: one API, three backends (see poller.h). */
#include "compat.h"
#include "poller.h"
#include "sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(FS_HAVE_EPOLL)
#  include <sys/epoll.h>
#elif defined(FS_HAVE_KQUEUE)
#  include <sys/types.h>
#  include <sys/event.h>
#  include <sys/time.h>
#endif
#if defined(FS_HAVE_EVENTFD)
#  include <sys/eventfd.h>
#endif

const char fs_poller_name[] = FS_POLLER_NAME;

/* At most this many events come back from one wait; the loop calls again for more. */
#define FS_BATCH 64

#if defined(FS_HAVE_EPOLL)

struct fs_poller {
    int epfd;
    struct epoll_event events[FS_BATCH];
};

fs_poller *fs_poller_new(void)
{
    fs_poller *p = calloc(1, sizeof *p);
    if (p == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        int saved = errno;
        free(p);
        errno = saved;
        return NULL;
    }
    return p;
}

void fs_poller_free(fs_poller *p)
{
    if (p != NULL) {
        close(p->epfd);
        free(p);
    }
}

int fs_poller_add(fs_poller *p, int fd, unsigned events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = ((events & FS_READABLE) ? EPOLLIN : 0) | ((events & FS_WRITABLE) ? EPOLLOUT : 0);
    ev.data.fd = fd;
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int fs_poller_remove(fs_poller *p, int fd)
{
    struct epoll_event ev;  /* ignored, but kernels before 2.6.9 want it non-NULL */
    memset(&ev, 0, sizeof ev);
    return epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev);
}

int fs_poller_wait(fs_poller *p, fs_event *out, int max_events, int timeout_ms)
{
    if (max_events > FS_BATCH)
        max_events = FS_BATCH;
    int n = epoll_wait(p->epfd, p->events, max_events, timeout_ms);
    for (int i = 0; i < n; i++) {
        unsigned e = p->events[i].events;
        out[i].fd = p->events[i].data.fd;
        out[i].events = ((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? FS_READABLE : 0) |
                        ((e & EPOLLOUT) ? FS_WRITABLE : 0) |
                        ((e & (EPOLLHUP | EPOLLERR)) ? FS_HANGUP : 0);
    }
    return n;
}

#elif defined(FS_HAVE_KQUEUE)

struct fs_poller {
    int kq;
    struct kevent events[FS_BATCH];
};

fs_poller *fs_poller_new(void)
{
    fs_poller *p = calloc(1, sizeof *p);
    if (p == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    p->kq = kqueue();
    if (p->kq < 0 || fs_set_cloexec(p->kq) < 0) {
        int saved = errno;
        if (p->kq >= 0)
            close(p->kq);
        free(p);
        errno = saved;
        return NULL;
    }
    return p;
}

void fs_poller_free(fs_poller *p)
{
    if (p != NULL) {
        close(p->kq);
        free(p);
    }
}

static int kq_change(fs_poller *p, int fd, unsigned events, int flags)
{
    struct kevent changes[2];
    int n = 0;
    if (events & FS_READABLE)
        EV_SET(&changes[n++], fd, EVFILT_READ, flags, 0, 0, NULL);
    if (events & FS_WRITABLE)
        EV_SET(&changes[n++], fd, EVFILT_WRITE, flags, 0, 0, NULL);
    return kevent(p->kq, changes, n, NULL, 0, NULL) < 0 ? -1 : 0;
}

int fs_poller_add(fs_poller *p, int fd, unsigned events)
{
    return kq_change(p, fd, events, EV_ADD);
}

int fs_poller_remove(fs_poller *p, int fd)
{
    /* Either filter may be absent; removing the read filter is what the loop relies on. */
    kq_change(p, fd, FS_WRITABLE, EV_DELETE);
    return kq_change(p, fd, FS_READABLE, EV_DELETE);
}

int fs_poller_wait(fs_poller *p, fs_event *out, int max_events, int timeout_ms)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (max_events > FS_BATCH)
        max_events = FS_BATCH;
    int n = kevent(p->kq, NULL, 0, p->events, max_events, tsp);
    for (int i = 0; i < n; i++) {
        struct kevent *ev = &p->events[i];
        out[i].fd = (int)ev->ident;
        out[i].events = (ev->filter == EVFILT_READ ? FS_READABLE : 0) |
                        (ev->filter == EVFILT_WRITE ? FS_WRITABLE : 0) |
                        ((ev->flags & (EV_EOF | EV_ERROR)) ? FS_HANGUP : 0);
    }
    return n;
}

#else /* poll(2) */

struct fs_poller {
    struct pollfd *fds;
    int count, capacity;
};

fs_poller *fs_poller_new(void)
{
    fs_poller *p = calloc(1, sizeof *p);
    if (p == NULL)
        errno = ENOMEM;
    return p;
}

void fs_poller_free(fs_poller *p)
{
    if (p != NULL) {
        free(p->fds);
        free(p);
    }
}

int fs_poller_add(fs_poller *p, int fd, unsigned events)
{
    for (int i = 0; i < p->count; i++) {
        if (p->fds[i].fd == fd) {
            errno = EEXIST;
            return -1;
        }
    }
    if (p->count == p->capacity) {
        int capacity = p->capacity ? p->capacity * 2 : 8;
        struct pollfd *fds = realloc(p->fds, (size_t)capacity * sizeof *fds);
        if (fds == NULL) {
            errno = ENOMEM;
            return -1;
        }
        p->fds = fds;
        p->capacity = capacity;
    }
    struct pollfd *slot = &p->fds[p->count++];
    slot->fd = fd;
    slot->events = (short)(((events & FS_READABLE) ? POLLIN : 0) |
                           ((events & FS_WRITABLE) ? POLLOUT : 0));
    slot->revents = 0;
    return 0;
}

int fs_poller_remove(fs_poller *p, int fd)
{
    for (int i = 0; i < p->count; i++) {
        if (p->fds[i].fd == fd) {
            p->fds[i] = p->fds[--p->count];
            return 0;
        }
    }
    errno = ENOENT;
    return -1;
}

int fs_poller_wait(fs_poller *p, fs_event *out, int max_events, int timeout_ms)
{
    int ready = poll(p->fds, (nfds_t)p->count, timeout_ms);
    int n = 0;
    for (int i = 0; i < p->count && n < ready && n < max_events; i++) {
        short e = p->fds[i].revents;
        if (e == 0)
            continue;
        out[n].fd = p->fds[i].fd;
        out[n].events = ((e & (POLLIN | POLLERR | POLLHUP)) ? FS_READABLE : 0) |
                        ((e & POLLOUT) ? FS_WRITABLE : 0) |
                        ((e & (POLLERR | POLLHUP | POLLNVAL)) ? FS_HANGUP : 0);
        n++;
    }
    return ready < 0 ? -1 : n;
}

#endif

int fs_wait_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int n = poll(&pfd, 1, timeout_ms);
    return n < 0 ? -1 : (n > 0);
}

int fs_wakeup_open(int *read_fd, int *write_fd)
{
#if defined(FS_HAVE_EVENTFD)
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -1;
    *read_fd = *write_fd = fd;
    return 0;
#else
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        if (fs_set_cloexec(fds[i]) < 0 || fs_set_nonblocking(fds[i], 1, NULL) < 0) {
            int saved = errno;
            close(fds[0]);
            close(fds[1]);
            errno = saved;
            return -1;
        }
    }
    *read_fd = fds[0];
    *write_fd = fds[1];
    return 0;
#endif
}

int fs_wakeup_signal(int write_fd)
{
#if defined(FS_HAVE_EVENTFD)
    eventfd_t one = 1;
    ssize_t n = write(write_fd, &one, sizeof one);
#else
    char one = 1;
    ssize_t n = write(write_fd, &one, 1);
#endif
    /* A full pipe or a saturated counter means a wakeup is already pending. */
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return -1;
    return 0;
}

void fs_wakeup_drain(int read_fd)
{
    char buf[256];
    while (read(read_fd, buf, sizeof buf) > 0) {
#if defined(FS_HAVE_EVENTFD)
        break;  /* one read resets an eventfd's counter */
#endif
    }
}

void fs_wakeup_close(int read_fd, int write_fd)
{
    if (read_fd >= 0)
        close(read_fd);
    if (write_fd >= 0 && write_fd != read_fd)
        close(write_fd);
}
