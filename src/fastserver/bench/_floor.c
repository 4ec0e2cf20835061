/*
 * The floor: what the benchmark's socket loads cost a server written in C, with no interpreter.
 *
 * Two designs, each the cheapest of its kind, so that fastserver's figures can be read against
 * what its contract allows rather than against the standard library alone:
 *
 *   threads  a thread per connection, blocking syscalls: the shape socketserver's contract
 *            imposes (each request's handler runs in a thread of its own and may block). Idle
 *            threads wait in accept() themselves (the kernel wakes one per connection); a thread
 *            that takes a connection while no other waits starts one first, as fastserver's
 *            request threads do. For the single-threaded server kind, one thread.
 *   loop     one thread and epoll over non-blocking sockets: the shape of an event loop (uvloop's
 *            protocols), which handler code written for socketserver cannot run on. Linux only.
 *
 * The handlers do what the benchmark's Python handlers do: "oneshot" reads once (up to 1024
 * bytes), sends that back, shuts the write side down and closes; "echo" sends back whatever
 * arrives until EOF.
 *
 * It speaks the benchmark's server protocol (see server_script.py beside this file): one JSON
 * line with the port, then on stdin "cpu" is answered with "<user s> <system s> <voluntary
 * switches> <involuntary switches>" from getrusage(RUSAGE_SELF), and "quit" or EOF ends the
 * process.
 * Listens on 127.0.0.1 only.
 *
 * Built by `python -m fastserver.bench` with `cc -O2 -pthread`.
 * Usage: floor threading-oneshot|threading-echo|single-oneshot threads|loop
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef __linux__
#include <fcntl.h>
#include <sys/epoll.h>
#define HAVE_LOOP 1
#else
#define HAVE_LOOP 0
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

enum { ONESHOT_SIZE = 1024, ECHO_SIZE = 8192, BACKLOG = 1024 };

static int listen_fd;
static int echo;          /* the echo handler, else oneshot */
static int spawn_more;    /* threads: start a thread when the last waiting one takes a connection */
static int waiting;       /* threads: how many wait in accept() (atomic) */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int send_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t sent = send(fd, data, length, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += sent;
        length -= (size_t)sent;
    }
    return 0;
}

/* --- threads ---------------------------------------------------------------------------------- */

static void serve_blocking(int fd)
{
    char buf[ECHO_SIZE];
    ssize_t got;
    if (echo) {
        while ((got = recv(fd, buf, sizeof buf, 0)) > 0)
            if (send_all(fd, buf, (size_t)got) < 0)
                break;
    } else {
        got = recv(fd, buf, ONESHOT_SIZE, 0);
        if (got > 0)
            send_all(fd, buf, (size_t)got);
        shutdown(fd, SHUT_WR);
    }
    close(fd);
}

static void start_thread(void);

static void *request_thread(void *unused)
{
    (void)unused;
    for (;;) {
        __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST);
        int fd = accept(listen_fd, NULL, NULL);
        int others = __atomic_sub_fetch(&waiting, 1, __ATOMIC_SEQ_CST);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                usleep(10000);
                continue;
            }
            die("accept");
        }
        if (spawn_more && others == 0)
            start_thread();  /* so that the next connection never waits for this request */
        serve_blocking(fd);
    }
    return NULL;
}

static void start_thread(void)
{
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&thread, &attr, request_thread, NULL) != 0)
        die("pthread_create");
    pthread_attr_destroy(&attr);
}

/* --- loop ------------------------------------------------------------------------------------- */

#if HAVE_LOOP
static void *loop_thread(void *unused)
{
    struct epoll_event events[64], event = {.events = EPOLLIN, .data.fd = listen_fd};
    char buf[ECHO_SIZE];
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    (void)unused;
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &event) < 0)
        die("epoll");
    for (;;) {
        int ready = epoll_wait(epfd, events, 64, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                int conn;
                while ((conn = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event added = {.events = EPOLLIN, .data.fd = conn};
                    if (epoll_ctl(epfd, EPOLL_CTL_ADD, conn, &added) < 0)
                        close(conn);
                }
                continue;
            }
            ssize_t got = recv(fd, buf, echo ? sizeof buf : ONESHOT_SIZE, 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            /* A reply that the socket does not take at once is not waited for: the loads'
               replies are small, and one that fails closes the connection (the load generator
               counts an error, so it would show). */
            if (got > 0 && send(fd, buf, (size_t)got, MSG_NOSIGNAL) != got)
                got = -1;
            if (got <= 0 || !echo) {
                if (got > 0)
                    shutdown(fd, SHUT_WR);
                close(fd);  /* which takes it out of the epoll set */
            }
        }
    }
    return NULL;
}
#endif

/* --- the benchmark's protocol ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    socklen_t length = sizeof addr;
    char line[64];
    int one = 1, loop;
    if (argc != 3 || (strcmp(argv[2], "threads") && strcmp(argv[2], "loop"))
        || (strcmp(argv[1], "threading-oneshot") && strcmp(argv[1], "threading-echo")
            && strcmp(argv[1], "single-oneshot"))) {
        fprintf(stderr, "usage: %s threading-oneshot|threading-echo|single-oneshot threads|loop\n",
                argv[0]);
        return 2;
    }
    loop = !strcmp(argv[2], "loop");
    if (loop && !HAVE_LOOP) {
        fprintf(stderr, "%s: the loop design needs epoll (Linux)\n", argv[0]);
        return 2;
    }
    echo = strstr(argv[1], "echo") != NULL;
    spawn_more = !strncmp(argv[1], "threading", 9);
    signal(SIGPIPE, SIG_IGN);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0)
        die("socket");
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listen_fd, BACKLOG) < 0
        || getsockname(listen_fd, (struct sockaddr *)&addr, &length) < 0)
        die("listen");

    if (loop) {
#if HAVE_LOOP
        pthread_t thread;
        fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
        if (pthread_create(&thread, NULL, loop_thread, NULL) != 0)
            die("pthread_create");
#endif
    } else {
        start_thread();
    }
    printf("{\"port\": %d, \"implementation\": \"C, %s\", \"streams\": null}\n",
           ntohs(addr.sin_port), loop ? "one epoll thread" : "a thread per connection");
    fflush(stdout);

    while (fgets(line, sizeof line, stdin)) {
        if (!strcmp(line, "cpu\n")) {
            struct rusage usage;
            getrusage(RUSAGE_SELF, &usage);
            printf("%.6f %.6f %ld %ld\n",
                   usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6,
                   usage.ru_stime.tv_sec + usage.ru_stime.tv_usec * 1e-6,
                   usage.ru_nvcsw, usage.ru_nivcsw);
            fflush(stdout);
        } else if (!strcmp(line, "quit\n")) {
            break;
        }
    }
    return 0;  /* exit() ends the threads and closes every connection */
}
