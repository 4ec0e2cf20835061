/* The poller: epoll, kqueue or poll(2) behind one small API, plus the wakeup descriptor.
 *
 * Every function returns -1 and sets errno on failure. None of them blocks except
 * fs_poller_wait(), which the caller runs without the GIL.
 */
#ifndef FASTSERVER_POLLER_H
#define FASTSERVER_POLLER_H

#define FS_READABLE 1u
#define FS_WRITABLE 2u
#define FS_HANGUP   4u

typedef struct fs_poller fs_poller;

typedef struct {
    int fd;
    unsigned events;
} fs_event;

extern const char fs_poller_name[];

fs_poller *fs_poller_new(void);
void fs_poller_free(fs_poller *p);
int fs_poller_add(fs_poller *p, int fd, unsigned events);
int fs_poller_remove(fs_poller *p, int fd);
/* Wait up to timeout_ms (-1: forever) for events; returns how many were stored in out. */
int fs_poller_wait(fs_poller *p, fs_event *out, int max_events, int timeout_ms);

/* Wait for one descriptor to become readable: 1 ready, 0 timed out. */
int fs_wait_readable(int fd, int timeout_ms);

/* The wakeup descriptor: an eventfd (read end == write end) or a non-blocking pipe. */
int fs_wakeup_open(int *read_fd, int *write_fd);
int fs_wakeup_signal(int write_fd);
void fs_wakeup_drain(int read_fd);
void fs_wakeup_close(int read_fd, int write_fd);

#endif
