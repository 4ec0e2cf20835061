/* Request threads that accept their own connections (fastserver._acceptors): an epoll instance
   per waiting slot (a few, whatever the number of threads) on the shared listener, and a stop
   descriptor that wakes them all. Where the platform lacks them (compat.h: FS_HAVE_ACCEPTORS),
   every call fails with ENOSYS and fs_acceptors_supported is 0: the loop then hands connections
   to threads itself. */
#ifndef FASTSERVER_ACCEPTOR_H
#define FASTSERVER_ACCEPTOR_H

#include "compat.h"

extern const int fs_acceptors_supported;

/* An epoll instance for one waiting slot (one thread waits in it at a time): the listener
   (EPOLLEXCLUSIVE: one waiter woken per connection among all the slots' instances, of every
   process sharing the socket) and the stop descriptor (every one). */
int fs_acceptor_epoll(int listen_fd, int stop_fd);
/* Move this instance to the back of the listener's queue of waiters. The kernel wakes the
   first instance in that queue with a thread waiting, so without this one process that always
   has an idle thread would take every connection from the others sharing the socket. */
int fs_acceptor_requeue(int epfd, int listen_fd);
/* Wait up to timeout_ms for the listener or the stop descriptor: > 0 ready, 0 timed out. */
int fs_acceptor_wait(int epfd, int timeout_ms);

int fs_stop_open(void);      /* the stop descriptor (an eventfd, close-on-exec, non-blocking) */
int fs_stop_signal(int fd);  /* make it readable, for good */
/* Sleep up to timeout_ms unless the stop descriptor is (or becomes) readable. */
int fs_stop_wait(int fd, int timeout_ms);

#endif
