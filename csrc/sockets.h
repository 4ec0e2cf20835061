/* Descriptor flags and accept(), inline: the loop (_core), the dispatcher (_dispatch) and the
 * request threads (_acceptors) each compile them in, so that no C file is linked twice.
 *
 * Every function returns -1 and sets errno on failure; none blocks unless its descriptor does.
 */
#ifndef FASTSERVER_SOCKETS_H
#define FASTSERVER_SOCKETS_H

#include "compat.h"  /* first: it defines _GNU_SOURCE, for accept4 */

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

static inline int fs_set_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

/* Set or clear O_NONBLOCK; the previous state goes to *was_nonblocking when it is not NULL. */
static inline int fs_set_nonblocking(int fd, int on, int *was_nonblocking)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    if (was_nonblocking)
        *was_nonblocking = (flags & O_NONBLOCK) != 0;
    int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (wanted != flags && fcntl(fd, F_SETFL, wanted) < 0)
        return -1;
    return 0;
}

/* Accept one connection, close-on-exec and blocking (as Python expects of a new socket),
   without blocking where the listener is non-blocking. */
static inline int fs_accept(int listen_fd, struct sockaddr *addr, socklen_t *addr_len)
{
#if defined(FS_HAVE_ACCEPT4)
    return accept4(listen_fd, addr, addr_len, SOCK_CLOEXEC);
#else
    /* BSD hands the listener's O_NONBLOCK down to the new socket. */
    int fd = accept(listen_fd, addr, addr_len);
    if (fd >= 0 && (fs_set_cloexec(fd) < 0 || fs_set_nonblocking(fd, 0, NULL) < 0)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
#endif
}

#endif
