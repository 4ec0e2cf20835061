/*
 * fastserver's paced client: many persistent connections to one TCP address, each sending one
 * request per period and idle in between, driven by one thread over non-blocking sockets and
 * epoll (Linux only).
 *
 * Modes:
 *   echo  a line of --size bytes, the same line read back
 *   http  "GET --path HTTP/1.1", a reply with Content-Length read to its end (status 200 wanted;
 *         a reply that says "Connection: close" closes the connection, and its next request
 *         opens a new one)
 *
 * The schedule: connection i (of N) sends its k-th request at start + k * period + i * period / N,
 * so that the requests are spread evenly over each period. The first period is the ramp's:
 * connection i opens at its first due time (within --ramp seconds), so that the connections open
 * spread over it (in small batches, never a burst that overflows the listen backlog) and each
 * sends its first request at once. The ramp ends at the first period boundary where every
 * connection has had a reply, or after --ramp-max periods (a server that cannot take them all).
 * Then come the measured periods (--periods); only requests due in them count.
 * A request due while the connection's previous one is still unanswered is not sent: it counts
 * as skipped. No request is sent after the measured periods; the unanswered ones then get
 * --grace seconds more and count as unanswered after that.
 *
 * Output, on stdout: {"ramped": N, "answered": A, "ramp_periods": R} once the ramp is over (N:
 * connections open then, A: those that have had a reply, R: the ramp's periods), then the
 * result as one JSON line: replies in the measured periods (requests), requests sent, skipped,
 * unanswered, errors, the most connections open at once, latency percentiles (microseconds) of
 * the measured replies, elapsed seconds of the measured part, the client's CPU time. Then it
 * waits (at most --linger seconds) for a line or EOF on stdin before it closes its connections,
 * so that whoever reads the result can take the server's figures with every connection still
 * open.
 *
 * It raises its RLIMIT_NOFILE soft limit to the hard limit, and exits with status 2 (and a
 * message) if that is too low for N connections.
 *
 * Built by `python -m fastserver.bench` with `cc -O2`; usage: see usage() below.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_ECHO, MODE_HTTP };
enum state { ST_CLOSED, ST_CONNECTING, ST_IDLE, ST_SENDING, ST_RECEIVING };

#define HEAD_MAX 4096  /* http: the most bytes of a reply's head kept */

struct conn {
    int fd;           /* -1 while closed */
    int state;
    int answered;     /* it has had a reply */
    int measured;     /* the request in flight counts */
    size_t sent;      /* bytes of the request sent */
    size_t got;       /* echo: bytes of the reply; http: bytes of the head kept */
    long body_left;   /* http: body bytes still to come, -1 while the head is incomplete */
    int close_after;  /* http: the reply said "Connection: close" */
    double started;
    char *head;       /* http: the reply's head so far (allocated on first use) */
};

static struct {
    enum mode mode;
    struct sockaddr_in addr;
    int conns;
    double period, ramp;
    int periods;
    long ramp_max;
    double grace, linger;
    size_t size;
    const char *path;
} opt;

static struct {
    long sent, replies, skipped, errors, connects, ramp_replies, closed_idle;
    int open, max_open, answered;
    uint32_t *lat;
    long lat_cap;
    char first_error[160];
} run;

static char *request;
static size_t request_len;
static char rbuf[65536];
static int epfd = -1;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --port P [--host 127.0.0.1] [--mode echo|http] [--conns 5000]\n"
            "          [--period 5] [--ramp PERIOD] [--ramp-max 3] [--periods 2] [--grace 2]\n"
            "          [--linger 10]\n"
            "          [--size 64] [--path /]\n",
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
    if (c->fd >= 0) {
        close(c->fd);
        run.open--;
    }
    c->fd = -1;
    c->state = ST_CLOSED;
}

static void fail(struct conn *c, const char *what, int err)
{
    note_error(what, err);
    close_conn(c);
}

static int open_conn(struct conn *c, int index)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note_error("socket", errno);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    run.connects++;
    if (++run.open > run.max_open)
        run.max_open = run.open;
    if (connect(fd, (struct sockaddr *)&opt.addr, sizeof opt.addr) == 0)
        c->state = ST_IDLE;
    else if (errno == EINPROGRESS)
        c->state = ST_CONNECTING;
    else {
        fail(c, "connect", errno);
        return -1;
    }
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = (uint32_t)index;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fail(c, "epoll_ctl", errno);
        return -1;
    }
    return 0;
}

static void record(struct conn *c, double t)
{
    if (!c->answered) {
        c->answered = 1;
        run.answered++;
    }
    if (!c->measured) {
        run.ramp_replies++;
        return;
    }
    double us = (t - c->started) * 1e6;
    if (run.replies < run.lat_cap)
        run.lat[run.replies] = us > 4e9 ? 4000000000u : (uint32_t)us;
    run.replies++;
}

/* http: the head is complete in c->head[0..end); read its status and framing. 0 if usable. */
static int parse_head(struct conn *c, size_t end)
{
    c->head[end - 1] = '\0';
    if (strncmp(c->head, "HTTP/1.1 200", 12) != 0 && strncmp(c->head, "HTTP/1.0 200", 12) != 0)
        return -1;
    char *cl = strcasestr(c->head, "\r\ncontent-length:");
    if (!cl)
        return -1;
    c->body_left = strtol(cl + 17, NULL, 10);
    char *conn = strcasestr(c->head, "\r\nconnection:");
    c->close_after = conn && strncasecmp(conn + 13 + strspn(conn + 13, " "), "close", 5) == 0;
    return 0;
}

/* Bytes of a reply came in; 1 once the reply is complete, 0 if more is due, -1 if it is wrong. */
static int take(struct conn *c, const char *data, size_t n)
{
    if (opt.mode == MODE_ECHO) {
        if (c->got + n > opt.size || memcmp(data, request + c->got, n))
            return -1;
        c->got += n;
        return c->got == opt.size;
    }
    while (n > 0) {
        if (c->body_left >= 0) {
            size_t used = (size_t)c->body_left < n ? (size_t)c->body_left : n;
            c->body_left -= (long)used;
            if (used < n)
                return -1;  /* more than the reply: not a request-reply protocol */
            return c->body_left == 0;
        }
        size_t room = HEAD_MAX - c->got;
        size_t copy = n < room ? n : room;
        memcpy(c->head + c->got, data, copy);
        size_t scan_from = c->got >= 3 ? c->got - 3 : 0;
        c->got += copy;
        char *endp = memmem(c->head + scan_from, c->got - scan_from, "\r\n\r\n", 4);
        if (!endp) {
            if (c->got == HEAD_MAX)
                return -1;
            return 0;
        }
        size_t end = (size_t)(endp - c->head) + 4;
        size_t extra = c->got - end;  /* body bytes already in the head buffer */
        if (parse_head(c, end) < 0)
            return -1;
        if ((long)extra > c->body_left)
            return -1;
        c->body_left -= (long)extra;
        data += copy;
        n -= copy;
        if (n == 0)
            return c->body_left == 0;
    }
    return 0;
}

/* Move c forward as far as it goes without blocking (ev: epoll flags, 0 when none). */
static void progress(struct conn *c, uint32_t ev)
{
    for (;;) {
        switch (c->state) {
        case ST_CLOSED:
            return;
        case ST_IDLE:
            /* the server closed an idle connection: its next request opens a new one */
            if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                run.closed_idle++;
                close_conn(c);
            }
            return;
        case ST_CONNECTING:
            if (ev & EPOLLERR) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                fail(c, "connect", err ? err : ECONNREFUSED);
                return;
            }
            if (!(ev & EPOLLOUT))
                return;  /* not connected yet */
            c->state = ST_SENDING;
            continue;
        case ST_SENDING: {
            ssize_t n = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
                    return;
                fail(c, "send", errno);
                return;
            }
            c->sent += (size_t)n;
            if (c->sent < request_len)
                continue;
            c->state = ST_RECEIVING;
            if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                return;
            continue;
        }
        case ST_RECEIVING: {
            ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                fail(c, "recv", errno);
                return;
            }
            if (n == 0) {
                fail(c, "server closed", ECONNRESET);
                return;
            }
            int done = take(c, rbuf, (size_t)n);
            if (done < 0) {
                fail(c, "wrong reply", EPROTO);
                return;
            }
            if (!done)
                continue;
            record(c, now());
            if (c->close_after)
                close_conn(c);
            else
                c->state = ST_IDLE;
            return;
        }
        }
    }
}

/* Connection i's request is due now: send it (opening the connection first if it is closed;
 * a connection opens only for a request, so a connecting one always has a request waiting). */
static void fire(struct conn *c, int index, int measured, double t)
{
    if (c->state == ST_CONNECTING || c->state == ST_SENDING || c->state == ST_RECEIVING) {
        if (measured)
            run.skipped++;  /* the previous request is still unanswered */
        return;
    }
    if (measured)
        run.sent++;
    c->sent = 0;
    c->got = 0;
    c->body_left = -1;
    c->close_after = 0;
    c->measured = measured;
    c->started = t;
    if (c->fd < 0 && open_conn(c, index) < 0)
        return;
    if (c->state == ST_IDLE) {
        c->state = ST_SENDING;
        progress(c, 0);
    }
}

static double parse_double(const char *s, const char *argv0)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0')
        usage(argv0);
    return v;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = -1;
    opt.mode = MODE_ECHO;
    opt.conns = 5000;
    opt.period = 5.0;
    opt.ramp = -1;
    opt.ramp_max = 3;
    opt.periods = 2;
    opt.grace = 2.0;
    opt.linger = 10.0;
    opt.size = 64;
    opt.path = "/";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage(argv[0]);
        const char *v = argv[++i];
        if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            port = (long)parse_double(v, argv[0]);
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "echo"))
                opt.mode = MODE_ECHO;
            else if (!strcmp(v, "http"))
                opt.mode = MODE_HTTP;
            else
                usage(argv[0]);
        } else if (!strcmp(a, "--conns"))
            opt.conns = (int)parse_double(v, argv[0]);
        else if (!strcmp(a, "--period"))
            opt.period = parse_double(v, argv[0]);
        else if (!strcmp(a, "--ramp"))
            opt.ramp = parse_double(v, argv[0]);
        else if (!strcmp(a, "--ramp-max"))
            opt.ramp_max = (long)parse_double(v, argv[0]);
        else if (!strcmp(a, "--periods"))
            opt.periods = (int)parse_double(v, argv[0]);
        else if (!strcmp(a, "--grace"))
            opt.grace = parse_double(v, argv[0]);
        else if (!strcmp(a, "--linger"))
            opt.linger = parse_double(v, argv[0]);
        else if (!strcmp(a, "--size"))
            opt.size = (size_t)parse_double(v, argv[0]);
        else if (!strcmp(a, "--path"))
            opt.path = v;
        else
            usage(argv[0]);
    }
    if (opt.ramp < 0)
        opt.ramp = opt.period;
    if (port <= 0 || port > 65535 || opt.conns < 1 || opt.conns > 60000 || opt.period <= 0 ||
        opt.periods < 1 || opt.periods > 1000 || opt.ramp_max < 1 || opt.ramp_max > 100 || opt.ramp > opt.period || opt.grace < 0 ||
        opt.linger < 0 || opt.size < 1 || opt.size > 4096 || opt.path[0] != '/')
        usage(argv[0]);
    memset(&opt.addr, 0, sizeof opt.addr);
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &opt.addr.sin_addr) != 1) {
        fprintf(stderr, "paced: not an IPv4 address: %s\n", host);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)opt.conns + 16) {
            fprintf(stderr, "paced: RLIMIT_NOFILE is %ld, too low for %d connections "
                    "(raise the hard limit: ulimit -Hn)\n", (long)rl.rlim_cur, opt.conns);
            return 2;
        }
    }

    if (opt.mode == MODE_ECHO) {
        request_len = opt.size;
        request = malloc(request_len);
        for (size_t i = 0; request && i < opt.size; i++)
            request[i] = (char)('a' + i % 26);
        if (request)
            request[opt.size - 1] = '\n';
    } else {
        request_len = strlen(opt.path) + 64;
        request = malloc(request_len);
        if (request)
            request_len = (size_t)snprintf(request, request_len,
                                           "GET %s HTTP/1.1\r\nHost: %s:%ld\r\n\r\n",
                                           opt.path, host, port);
    }
    struct conn *conns = calloc((size_t)opt.conns, sizeof *conns);
    run.lat_cap = (long)opt.conns * opt.periods;
    run.lat = malloc((size_t)run.lat_cap * sizeof *run.lat);
    if (!request || !conns || !run.lat) {
        fprintf(stderr, "paced: out of memory\n");
        return 1;
    }
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        if (opt.mode == MODE_HTTP && !(conns[i].head = malloc(HEAD_MAX))) {
            fprintf(stderr, "paced: out of memory\n");
            return 1;
        }
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("paced: epoll_create1");
        return 1;
    }
    struct epoll_event events[512];

    double start = now();
    /* The ramp: period 0 opens the connections; it ends at the first period boundary where every
     * connection has had a reply (or at --ramp-max periods); the measured periods follow. */
    long boundary = 1;          /* the next period boundary, while ramping */
    long first = -1;            /* the first measured period, once the ramp is over */
    double end = 0;             /* no request is due after it, once the ramp is over */
    long next = 0;  /* the next request of the schedule: connection next % N, period next / N */
    int ramped = 0;
    double ramp_step = opt.ramp / opt.conns, step = opt.period / opt.conns;
    double measured_start = 0, t = start, hard_end = 0;
    for (;;) {
        if (!ramped && t >= start + boundary * opt.period) {
            if (run.answered == opt.conns || boundary >= opt.ramp_max) {
                ramped = 1;
                first = boundary;
                measured_start = t;
                end = start + (double)(first + opt.periods) * opt.period;
                hard_end = end + opt.grace;
                printf("{\"ramped\": %d, \"answered\": %d, \"ramp_periods\": %ld}\n",
                       run.open, run.answered, first);
                fflush(stdout);
            } else {
                boundary++;
            }
        }
        long limit = ramped ? (first + opt.periods) * (long)opt.conns : boundary * (long)opt.conns;
        /* fire what is due */
        while (next < limit) {
            long k = next / opt.conns;
            int i = (int)(next % opt.conns);
            double due = k == 0 ? start + i * ramp_step : start + k * opt.period + i * step;
            if (due > t)
                break;
            fire(&conns[i], i, ramped && k >= first, t);
            next++;
        }
        if (ramped && t >= end) {
            int waiting = 0;
            for (int i = 0; i < opt.conns && !waiting; i++)
                waiting = conns[i].state == ST_CONNECTING || conns[i].state == ST_SENDING ||
                          conns[i].state == ST_RECEIVING;
            if (!waiting || t >= hard_end)
                break;
        }
        double wake = ramped ? (t < end ? end : hard_end) : start + boundary * opt.period;
        if (next < limit) {
            long k = next / opt.conns;
            int i = (int)(next % opt.conns);
            double due = k == 0 ? start + i * ramp_step : start + k * opt.period + i * step;
            if (due < wake)
                wake = due;
        }
        int wait_ms = (int)((wake - t) * 1000.0 + 0.999);
        if (wait_ms < 0)
            wait_ms = 0;
        if (wait_ms > 100)
            wait_ms = 100;
        int n = epoll_wait(epfd, events, 512, wait_ms);
        if (n < 0 && errno != EINTR) {
            perror("paced: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++)
            progress(&conns[events[k].data.u32], events[k].events);
        t = now();
    }
    double finished = now();
    long unanswered = 0;
    for (int i = 0; i < opt.conns; i++) {
        int s = conns[i].state;
        if ((s == ST_CONNECTING || s == ST_SENDING || s == ST_RECEIVING) && conns[i].measured)
            unanswered++;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    double cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;

    /* percentiles of the measured replies' latency (nearest rank) */
    long count = run.replies < run.lat_cap ? run.replies : run.lat_cap;
    double p[4] = {0, 0, 0, 0}, mean = 0;
    static const double q[3] = {0.50, 0.90, 0.99};
    if (count > 0) {
        uint32_t *lat = run.lat;
        /* counting sort on milliseconds would lose precision: sort the values (a few 10,000s) */
        for (long gap = count / 2; gap > 0; gap /= 2)  /* shell sort: no comparator needed */
            for (long a = gap; a < count; a++)
                for (long b = a; b >= gap && lat[b - gap] > lat[b]; b -= gap) {
                    uint32_t tmp = lat[b];
                    lat[b] = lat[b - gap];
                    lat[b - gap] = tmp;
                }
        double sum = 0;
        for (long a = 0; a < count; a++)
            sum += lat[a];
        for (int j = 0; j < 3; j++)
            p[j] = lat[(long)(q[j] * (double)(count - 1))];
        p[3] = lat[count - 1];
        mean = sum / (double)count;
    }
    double elapsed = (ramped ? finished - measured_start : 0.0);
    printf("{\"mode\": \"%s\", \"conns\": %d, \"requests\": %ld, \"sent\": %ld, "
           "\"skipped\": %ld, \"unanswered\": %ld, \"errors\": %ld, \"connects\": %ld, "
           "\"max_open\": %d, \"open\": %d, \"ramp_replies\": %ld, \"closed_idle\": %ld, \"elapsed_s\": %.6f, "
           "\"rps\": %.1f, \"lat_us\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, "
           "\"max\": %.0f, \"mean\": %.1f}, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, "
           "\"first_error\": \"%s\"}\n",
           opt.mode == MODE_ECHO ? "echo" : "http", opt.conns, run.replies, run.sent,
           run.skipped, unanswered, run.errors, run.connects, run.max_open, run.open,
           run.ramp_replies, run.closed_idle, elapsed, elapsed > 0 ? (double)run.replies / elapsed : 0.0,
           p[0], p[1], p[2], p[3], mean, cpu_user, cpu_sys, run.first_error);
    fflush(stdout);

    /* hold the connections open until told (a line or EOF on stdin), for at most --linger s */
    struct pollfd in = {.fd = 0, .events = POLLIN};
    if (opt.linger > 0 && poll(&in, 1, (int)(opt.linger * 1000)) > 0) {
        char line[64];
        if (read(0, line, sizeof line) < 0) {
            /* nothing to do: closing now either way */
        }
    }
    for (int i = 0; i < opt.conns; i++)
        close_conn(&conns[i]);
    return 0;
}
