/*
 * fastserver's load generator: N concurrent client connections to one TCP address, driven by one
 * thread over non-blocking sockets (epoll on Linux, poll elsewhere).
 *
 * Modes:
 *   connect  connect, send the request, read the reply up to EOF (the server closes), close; repeat
 *   echo     persistent connections: send a line, read the same line back; repeat
 *
 * Bounds: at most --requests requests begin, and none begins after --duration seconds; those in
 * flight then are awaited for at most --grace seconds more (so that connections close cleanly,
 * without resetting a server in the middle of a reply), and abandoned after that. The result is
 * one JSON line on stdout: requests completed, errors, elapsed seconds (up to the last reply),
 * requests per second, latency percentiles (microseconds) and the generator's own CPU time.
 *
 * Built by `python -m fastserver.bench` with `cc -O2`; usage: see usage() below.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/epoll.h>
#define USE_EPOLL 1
#else
#include <poll.h>
#define USE_EPOLL 0
#endif

/* What a wakeup says about a connection (from epoll or poll flags). */
#define EV_IN 1
#define EV_OUT 2
#define EV_ERR 4
#define EV_RDHUP 8  /* the peer's FIN is in: everything it sent is readable now */

enum mode { MODE_CONNECT, MODE_ECHO };
enum state { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_RECEIVING };

struct conn {
    int fd;          /* -1 while closed */
    int state;
    size_t sent;     /* bytes of the request sent so far */
    size_t got;      /* bytes of the reply received so far */
    double started;  /* when the request began (connect mode: before connect) */
};

static struct {
    enum mode mode;
    struct sockaddr_in addr;
    int conns;
    long requests;
    double duration;
    double grace;
    size_t size;
    long expect;     /* connect mode: exact reply length wanted, -1 for "at least one byte" */
} opt;

static struct {
    long issued;     /* requests begun (successful or not) */
    long completed;  /* requests answered in full */
    long errors;     /* requests that failed: refused, reset, short or wrong reply */
    long connects;   /* connections opened */
    uint32_t *lat;   /* latency of each completed request, microseconds */
    int active;      /* connections with a request in flight */
    char first_error[160];
} run;

static char *payload;
static char rbuf[65536];
#if USE_EPOLL
static int epfd = -1;
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --port P [--host 127.0.0.1] [--mode connect|echo] [--conns 8]\n"
            "          [--requests 1000] [--duration 10] [--grace 1] [--size 64] [--expect N]\n",
            argv0);
    exit(2);
}

static void note_error(const char *what, int err)
{
    run.errors++;
    if (!run.first_error[0])
        snprintf(run.first_error, sizeof run.first_error, "%s: %s", what, strerror(err));
}

static void close_conn(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);  /* also leaves the epoll set */
    c->fd = -1;
    c->state = ST_IDLE;
}

/* Open a non-blocking connection for c; 0 on success (connected or in progress). */
static int open_conn(struct conn *c, int index)
{
#ifdef SOCK_NONBLOCK
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
#endif
    if (fd < 0) {
        note_error("socket", errno);
        return -1;
    }
    if (opt.mode == MODE_ECHO) {  /* a line per write; connect mode writes once */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    run.connects++;
    c->fd = fd;
    if (connect(fd, (struct sockaddr *)&opt.addr, sizeof opt.addr) == 0) {
        c->state = ST_SENDING;
    } else if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
    } else {
        note_error("connect", errno);
        close_conn(c);
        return -1;
    }
#if USE_EPOLL
    /* Edge-triggered for both directions: one registration for the connection's lifetime. */
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = (uint32_t)index;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        note_error("epoll_ctl", errno);
        close_conn(c);
        return -1;
    }
#else
    (void)index;
#endif
    return 0;
}

/* Begin the next request on c if the bounds allow it; otherwise close c. 1 if one began. */
static int begin_request(struct conn *c, int index, double t, double deadline)
{
    while (run.issued < opt.requests && t < deadline) {
        run.issued++;
        c->sent = 0;
        c->got = 0;
        c->started = t;
        if (c->fd < 0 && open_conn(c, index) < 0) {
            t = now();
            continue;  /* counted as an error; try again within the bounds */
        }
        if (c->state != ST_CONNECTING)
            c->state = ST_SENDING;
        return 1;
    }
    close_conn(c);
    return 0;
}

static void complete_request(struct conn *c, double t)
{
    double us = (t - c->started) * 1e6;
    run.lat[run.completed++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

/* A request failed: close the connection (the next request reconnects). */
static void fail_request(struct conn *c, const char *what, int err)
{
    note_error(what, err);
    close_conn(c);
}

/*
 * Move c forward as far as it goes without blocking, given what the last wakeup said about it
 * (ev: EV_* flags; 0 when nothing was waited for). Returns when it waits for the socket, or when it
 * has no request left (closed and no longer active). The syscalls are the fewest the protocol
 * needs: no read is tried before a wakeup says there is something to read.
 */
static void progress(struct conn *c, int index, int ev, double deadline)
{
    for (;;) {
        switch (c->state) {
        case ST_IDLE:
            return;
        case ST_CONNECTING:
            if (ev & EV_ERR) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                    err = errno;
                fail_request(c, "connect", err ? err : ECONNREFUSED);
                break;  /* to the "next request" step below */
            }
            if (!(ev & EV_OUT))
                return;  /* not connected yet */
            c->state = ST_SENDING;
            continue;
        case ST_SENDING: {
            ssize_t n = send(c->fd, payload + c->sent, opt.size - c->sent, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
                    return;
                fail_request(c, "send", errno);
                break;
            }
            c->sent += (size_t)n;
            if (c->sent < opt.size)
                continue;
            c->state = ST_RECEIVING;
            if (!(ev & (EV_IN | EV_ERR)))
                return;  /* the reply cannot be in yet: wait for the wakeup that says it is */
            continue;
        }
        case ST_RECEIVING: {
            ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                fail_request(c, "recv", errno);
                break;
            }
            if (opt.mode == MODE_CONNECT) {
                c->got += (size_t)n;
                /* The reply ends at EOF: a read of 0, or a short read after the FIN came in. */
                if (n > 0 && !((ev & EV_RDHUP) && (size_t)n < sizeof rbuf))
                    continue;
                double t = now();
                if (c->got == 0 || (opt.expect >= 0 && c->got != (size_t)opt.expect)) {
                    fail_request(c, "reply length", EPROTO);
                } else {
                    complete_request(c, t);
                    close_conn(c);
                }
                break;
            }
            /* echo: the reply is the line sent, byte for byte */
            if (n == 0) {
                fail_request(c, "echo: server closed", ECONNRESET);
                break;
            }
            if (c->got + (size_t)n > opt.size || memcmp(rbuf, payload + c->got, (size_t)n)) {
                fail_request(c, "echo: wrong reply", EPROTO);
                break;
            }
            c->got += (size_t)n;
            if (c->got < opt.size)
                continue;
            complete_request(c, now());
            c->state = ST_IDLE;
            break;
        }
        }
        /* The request is over (done or failed): begin the next one on this slot, or retire it. */
        if (!begin_request(c, index, now(), deadline)) {
            run.active--;
            return;
        }
        ev = 0;
    }
}

static long parse_long(const char *s, const char *argv0)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0')
        usage(argv0);
    return v;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = -1;
    opt.mode = MODE_ECHO;
    opt.conns = 8;
    opt.requests = 1000;
    opt.duration = 10.0;
    opt.grace = 1.0;
    opt.size = 64;
    opt.expect = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage(argv[0]);
        const char *v = argv[++i];
        if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            port = parse_long(v, argv[0]);
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "connect"))
                opt.mode = MODE_CONNECT;
            else if (!strcmp(v, "echo"))
                opt.mode = MODE_ECHO;
            else
                usage(argv[0]);
        } else if (!strcmp(a, "--conns"))
            opt.conns = (int)parse_long(v, argv[0]);
        else if (!strcmp(a, "--requests"))
            opt.requests = parse_long(v, argv[0]);
        else if (!strcmp(a, "--duration"))
            opt.duration = atof(v);
        else if (!strcmp(a, "--grace"))
            opt.grace = atof(v);
        else if (!strcmp(a, "--size"))
            opt.size = (size_t)parse_long(v, argv[0]);
        else if (!strcmp(a, "--expect"))
            opt.expect = parse_long(v, argv[0]);
        else
            usage(argv[0]);
    }
    if (port <= 0 || port > 65535 || opt.conns < 1 || opt.conns > 60000 || opt.requests < 1 ||
        opt.duration <= 0 || opt.grace < 0 || opt.size < 1 || opt.size > sizeof rbuf)
        usage(argv[0]);
    memset(&opt.addr, 0, sizeof opt.addr);
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &opt.addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: not an IPv4 address: %s\n", host);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* The request: printable bytes ending in a newline (a line for the echo mode). */
    payload = malloc(opt.size);
    run.lat = malloc((size_t)opt.requests * sizeof *run.lat);  /* pages are touched as used */
    struct conn *conns = calloc((size_t)opt.conns, sizeof *conns);
    if (!payload || !run.lat || !conns) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < opt.size; i++)
        payload[i] = (char)('a' + i % 26);
    payload[opt.size - 1] = '\n';

#if USE_EPOLL
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("loadgen: epoll_create1");
        return 1;
    }
    int maxev = opt.conns < 1024 ? opt.conns : 1024;
    struct epoll_event *events = calloc((size_t)maxev, sizeof *events);
#else
    struct pollfd *pfds = calloc((size_t)opt.conns, sizeof *pfds);
    int *slot = calloc((size_t)opt.conns, sizeof *slot);
#endif

    double start = now();
    double deadline = start + opt.duration;  /* no request begins after it */
    double hard_deadline = deadline + opt.grace;  /* none is awaited after it */
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        if (begin_request(&conns[i], i, start, deadline)) {
            run.active++;
            progress(&conns[i], i, 0, deadline);
        }
    }

    double t = now();
    while (run.active > 0 && t < hard_deadline) {
        int wait_ms = (int)((hard_deadline - t) * 1000) + 1;
        if (wait_ms > 100)
            wait_ms = 100;
#if USE_EPOLL
        int n = epoll_wait(epfd, events, maxev, wait_ms);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            uint32_t e = events[k].events;
            int ev = ((e & (EPOLLIN | EPOLLHUP)) ? EV_IN : 0) | ((e & EPOLLOUT) ? EV_OUT : 0) |
                     ((e & EPOLLERR) ? EV_ERR : 0) | ((e & EPOLLRDHUP) ? EV_RDHUP : 0);
            progress(&conns[i], i, ev, deadline);
        }
#else
        int m = 0;
        for (int i = 0; i < opt.conns; i++) {
            struct conn *c = &conns[i];
            if (c->fd < 0)
                continue;
            pfds[m].fd = c->fd;
            pfds[m].events = c->state == ST_RECEIVING ? POLLIN : POLLOUT;
            pfds[m].revents = 0;
            slot[m++] = i;
        }
        int n = poll(pfds, (nfds_t)m, wait_ms);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: poll");
            return 1;
        }
        for (int k = 0; n > 0 && k < m; k++) {
            if (!pfds[k].revents)
                continue;
            short e = pfds[k].revents;
            int ev = ((e & (POLLIN | POLLHUP)) ? EV_IN : 0) | ((e & POLLOUT) ? EV_OUT : 0) |
                     ((e & POLLERR) ? EV_ERR : 0);
            progress(&conns[slot[k]], slot[k], ev, deadline);
        }
#endif
        t = now();
    }
    double end = now();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    double cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    long abandoned = 0;
    for (int i = 0; i < opt.conns; i++) {
        if (conns[i].state != ST_IDLE)
            abandoned++;
        close_conn(&conns[i]);
    }

    /* Latency percentiles by counting sort over a capped range, exact below the cap. */
    double elapsed = end - start;
    double p[5] = {0, 0, 0, 0, 0}, mean = 0;
    static const double q[4] = {0.50, 0.90, 0.99, 0.999};
    if (run.completed > 0) {
        uint32_t maxlat = 0;
        double sum = 0;
        for (long i = 0; i < run.completed; i++) {
            if (run.lat[i] > maxlat)
                maxlat = run.lat[i];
            sum += run.lat[i];
        }
        uint32_t cap = maxlat < 10000000u ? maxlat : 10000000u;  /* 10 s */
        long *hist = calloc((size_t)cap + 1, sizeof *hist);
        if (!hist) {
            fprintf(stderr, "loadgen: out of memory\n");
            return 1;
        }
        for (long i = 0; i < run.completed; i++)
            hist[run.lat[i] < cap ? run.lat[i] : cap]++;
        for (int j = 0; j < 4; j++) {
            long rank = (long)(q[j] * (double)(run.completed - 1)), seen = 0;
            for (uint32_t v = 0; v <= cap; v++) {
                seen += hist[v];
                if (seen > rank) {
                    p[j] = v;
                    break;
                }
            }
        }
        p[4] = maxlat;
        mean = sum / (double)run.completed;
        free(hist);
    }
    printf("{\"mode\": \"%s\", \"conns\": %d, \"requests\": %ld, \"errors\": %ld, "
           "\"abandoned\": %ld, \"connects\": %ld, \"elapsed_s\": %.6f, \"rps\": %.1f, "
           "\"lat_us\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"p999\": %.0f, "
           "\"max\": %.0f, \"mean\": %.1f}, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, "
           "\"first_error\": \"%s\"}\n",
           opt.mode == MODE_CONNECT ? "connect" : "echo", opt.conns, run.completed, run.errors,
           abandoned, run.connects, elapsed, elapsed > 0 ? (double)run.completed / elapsed : 0.0,
           p[0], p[1], p[2], p[3], p[4], mean, cpu_user, cpu_sys, run.first_error);
    return 0;
}
