#include "acceptor.h"

#include <errno.h>

#if defined(FS_HAVE_ACCEPTORS)

#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#ifndef EPOLLEXCLUSIVE
#  define EPOLLEXCLUSIVE (1u << 28)
#endif

const int fs_acceptors_supported = 1;

int fs_acceptor_epoll(int listen_fd, int stop_fd)
{
    struct epoll_event event;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -1;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | EPOLLEXCLUSIVE;
    event.data.fd = listen_fd;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &event) == 0) {
        event.events = EPOLLIN;
        event.data.fd = stop_fd;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, stop_fd, &event) == 0)
            return epfd;
    }
    int saved = errno;
    close(epfd);
    errno = saved;
    return -1;
}

int fs_acceptor_requeue(int epfd, int listen_fd)
{
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | EPOLLEXCLUSIVE;
    event.data.fd = listen_fd;
    if (epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) < 0)
        return -1;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &event);
}

int fs_acceptor_wait(int epfd, int timeout_ms)
{
    struct epoll_event events[2];
    return epoll_wait(epfd, events, 2, timeout_ms);
}

int fs_stop_open(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int fs_stop_signal(int fd) { return eventfd_write(fd, 1); }

int fs_stop_wait(int fd, int timeout_ms)
{
    struct pollfd entry = {fd, POLLIN, 0};
    return poll(&entry, 1, timeout_ms);
}

#else

const int fs_acceptors_supported = 0;

int fs_acceptor_epoll(int listen_fd, int stop_fd)
{
    (void)listen_fd;
    (void)stop_fd;
    errno = ENOSYS;
    return -1;
}

int fs_acceptor_requeue(int epfd, int listen_fd)
{
    (void)epfd;
    (void)listen_fd;
    errno = ENOSYS;
    return -1;
}

int fs_acceptor_wait(int epfd, int timeout_ms)
{
    (void)epfd;
    (void)timeout_ms;
    errno = ENOSYS;
    return -1;
}

int fs_stop_open(void) { errno = ENOSYS; return -1; }

int fs_stop_signal(int fd) { (void)fd; errno = ENOSYS; return -1; }

int fs_stop_wait(int fd, int timeout_ms)
{
    (void)fd;
    (void)timeout_ms;
    errno = ENOSYS;
    return -1;
}

#endif
