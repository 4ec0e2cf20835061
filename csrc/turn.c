/* The turn: among a process's request threads, one at a time runs Python, and it hands over
   only where it would sleep anyway.

   Every syscall that releases the GIL (an fstat(), a read() of a file, a send()) lets another
   runnable request thread take the GIL, and the first one must then wait to get it back: eight
   busy http.server threads change hands some 25 times per request, each change a futex call and
   a context switch. A thread that holds the turn keeps the GIL across those short syscalls,
   because the others wait for the turn (without the GIL), not for the GIL. It gives the turn up
   when it waits for its connection (fastserver._stream) and when its request ends.

   Only a thread whose last runs (from the end of one wait to the start of the next) were long
   takes the turn: a short run has few GIL releases to lose, and waiting for the turn would add a
   sleep and a wakeup to it (an echo handler's message).

   A holder that blocks elsewhere (sleep(), a lock held by another request, a database) must not
   stall the others: a waiter takes the turn anyway after ``patience`` (the interpreter's switch
   interval, how long a thread may keep the GIL from the others), and the old holder finds at
   its next wait that the turn is no longer its own; one that kept it that long itself takes
   no turn for a while. Threads that are not enrolled never wait. */
#include "compat.h"  /* first: _GNU_SOURCE, the atomics */
#include "turn.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

/* A run that used more CPU than this takes the turn for the next run: the cost of waiting for
   it (a sleep and a wakeup, some 10 µs) against a GIL hand-off at every syscall for the rest of
   the run. CPU time, not wall time: a handler that blocks (a sleep(), a slow client read through
   the socket itself) runs little Python, and must not hold the turn while it blocks. */
#define HEAVY_RUN_NS 50000LL

/* A thread takes the turn after this many heavy runs in a row, not after one: a run's CPU time
   also counts work that is not its own (an interrupt served in its time, the kernel's side of a
   send, a garbage collection), and an echo handler's run of some 5 µs measured over 50 µs in
   about 1 of 200 runs here, more on a busy machine, and then took turns. A handler whose runs are
   heavy (http.server's) is heavy on every run: it waits one run longer for its first turn. */
#define HEAVY_RUNS 2

/* A thread that lost the turn to a waiter (it held it past the patience: blocked elsewhere, or a
   very long run) takes no turn for this many runs: a handler that habitually waits for something
   else (a request to its own process, a database) would otherwise stall the others each time. */
#define STOLEN_PENALTY_RUNS 64

static pthread_mutex_t turn_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_cond;
static pthread_once_t turn_once = PTHREAD_ONCE_INIT;
static clockid_t turn_clock = CLOCK_REALTIME;  /* the condition variable's */
static unsigned long long turn_holder;  /* the holder's ticket, 0 when free */
static unsigned long long turn_tickets;
static long long turn_since;  /* when the holder took it (turn_clock) */
static unsigned long long turn_overdue;  /* the last ticket taken from a holder that kept it */
static int turn_waiters;
static long turn_patience_us = 5000;  /* any enrolling thread sets it: an atomic */
static struct fs_turn_stats turn_counts;

/* Each thread's run: from the start of its request or the end of a wait, to the next wait or
   the end of the request. Reading the thread's CPU clock is a syscall (some 0.5 µs), so it is
   read only in runs that follow one that was long on the wall clock. */
static __thread int my_enrolled;
static __thread unsigned long long my_ticket;  /* the ticket this thread took, 0 if none */
static __thread int my_heavy;  /* the last runs in a row that used much CPU, up to HEAVY_RUNS */
static __thread int my_timed;  /* the last run was long on the wall clock: time this one's CPU */
static __thread int my_penalty;  /* runs left without turns, after the turn was taken from it */
static __thread long long my_run_started;  /* monotonic, 0 outside a run */
static __thread long long my_run_cpu;  /* the thread's CPU clock then, if timed */

static long long clock_ns(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void turn_cond_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
#if defined(CLOCK_MONOTONIC) && !defined(__APPLE__)
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0)
        turn_clock = CLOCK_MONOTONIC;
#endif
    pthread_cond_init(&turn_cond, &attr);
    pthread_condattr_destroy(&attr);
}

/* In a child process: the threads that held or waited for the turn are gone, and the mutex or
   the condition variable may have been in use by one of them when fork() copied it. */
static void turn_after_fork(void)
{
    pthread_mutex_init(&turn_mutex, NULL);
    turn_cond_init();
    turn_holder = 0;
    turn_waiters = 0;
    my_ticket = 0;
}

static void turn_init(void)
{
    turn_cond_init();
    pthread_atfork(NULL, NULL, turn_after_fork);
}

void fs_turn_enroll(int enrolled, long patience_us)
{
    pthread_once(&turn_once, turn_init);
    if (!enrolled)
        fs_turn_give();
    my_enrolled = enrolled;
    my_heavy = my_timed = my_penalty = 0;
    my_run_started = 0;
    if (patience_us > 0)
        fs_store_long(&turn_patience_us, patience_us);
}

int fs_turn_wanted(void)
{
    return my_enrolled && my_heavy >= HEAVY_RUNS && !my_ticket && !my_penalty;
}

static void run_begins(void)
{
    my_run_started = clock_ns(CLOCK_MONOTONIC);
    if (my_timed)
        my_run_cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static void run_ends(void)
{
    if (!my_run_started)
        return;
    if (my_penalty)
        my_penalty--;
    if (my_timed && clock_ns(CLOCK_THREAD_CPUTIME_ID) - my_run_cpu > HEAVY_RUN_NS)
        my_heavy = my_heavy < HEAVY_RUNS ? my_heavy + 1 : HEAVY_RUNS;
    else
        my_heavy = 0;
    my_timed = clock_ns(CLOCK_MONOTONIC) - my_run_started > HEAVY_RUN_NS;
    my_run_started = 0;
}

void fs_turn_give(void)
{
    run_ends();
    if (!my_ticket)
        return;
    pthread_mutex_lock(&turn_mutex);
    if (turn_holder == my_ticket) {
        turn_holder = 0;
        if (turn_waiters)
            pthread_cond_signal(&turn_cond);
    } else if (turn_overdue == my_ticket) {
        my_penalty = STOLEN_PENALTY_RUNS;  /* it kept the turn past the patience */
    }
    pthread_mutex_unlock(&turn_mutex);
    my_ticket = 0;
}

static void timespec_of(struct timespec *at, long long ns)
{
    at->tv_sec = ns / 1000000000LL;
    at->tv_nsec = ns % 1000000000LL;
}

void fs_turn_take(void)
{
    struct timespec at;
    long long patience_ns, started, now, until;
    if (!my_enrolled)
        return;
    if (fs_turn_wanted()) {
        pthread_mutex_lock(&turn_mutex);
        if (turn_holder) {
            /* Threads that come out of their own waits take a free turn before a signalled
               waiter wakes, so this one may wait through several turns. It takes the turn
               anyway once it has waited the patience in all (no thread waits longer than one
               switch interval), and the holder is penalized only if it kept the turn itself
               that long (blocked elsewhere). */
            patience_ns = fs_load_long(&turn_patience_us) * 1000LL;
            started = clock_ns(turn_clock);
            turn_counts.waited++;
            turn_waiters++;
            while (turn_holder) {
                now = clock_ns(turn_clock);
                if (now - turn_since >= patience_ns) {
                    turn_overdue = turn_holder;
                    turn_counts.stolen++;
                    break;
                }
                if (now - started >= patience_ns) {
                    turn_counts.stolen++;
                    break;
                }
                until = turn_since < started ? turn_since + patience_ns : started + patience_ns;
                timespec_of(&at, until);
                pthread_cond_timedwait(&turn_cond, &turn_mutex, &at);
            }
            turn_waiters--;
        }
        turn_counts.taken++;
        my_ticket = turn_holder = ++turn_tickets;
        turn_since = clock_ns(turn_clock);
        pthread_mutex_unlock(&turn_mutex);
    }
    run_begins();
}

void fs_turn_counts(struct fs_turn_stats *stats)
{
    pthread_mutex_lock(&turn_mutex);
    *stats = turn_counts;
    pthread_mutex_unlock(&turn_mutex);
}
