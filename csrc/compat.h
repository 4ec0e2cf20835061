/* Platform switches for the C core, in one place (no Cython IF/DEF). */
#ifndef FASTSERVER_COMPAT_H
#define FASTSERVER_COMPAT_H

/* accept4() and friends: before the first system header, so every C file includes this first. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#  define _GNU_SOURCE 1
#endif

/* FS_PORTABLE (setup.py defines it for FASTSERVER_POLLER=poll) leaves out every platform's own
   mechanism and builds what remains: poll(2), the pipe wakeup, accept() then fcntl(), and the
   loop handing connections to request threads. On Linux that compiles and tests the paths macOS
   and the BSDs run, all but kqueue. */
#if defined(FS_PORTABLE)
   /* nothing platform-specific */
#elif defined(__linux__)
#  define FS_HAVE_EPOLL 1
#  define FS_HAVE_EVENTFD 1
#  define FS_HAVE_ACCEPT4 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
      defined(__NetBSD__) || defined(__DragonFly__)
#  define FS_HAVE_KQUEUE 1
#  if defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || defined(__DragonFly__)
#    define FS_HAVE_ACCEPT4 1
#  endif
#endif

/* Request threads that accept for themselves (fastserver._acceptors) need an epoll instance per
   thread with EPOLLEXCLUSIVE (Linux 4.5; older kernels ignore the flag and wake every waiter,
   which costs wakeups but stays correct) and an eventfd to stop them. */
#if defined(FS_HAVE_EPOLL) && defined(FS_HAVE_EVENTFD)
#  define FS_HAVE_ACCEPTORS 1
#endif

/* Flags for every send(): no SIGPIPE where the platform can say so per call (Python ignores
   SIGPIPE anyway, but an embedding application may not). */
#include <sys/socket.h>
#if defined(MSG_NOSIGNAL)
#  define FS_SEND_FLAGS MSG_NOSIGNAL
#else
#  define FS_SEND_FLAGS 0
#endif

/* A pause in a spin-wait loop. */
#if defined(__x86_64__) || defined(__i386__)
#  define FS_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#  define FS_CPU_RELAX() __asm__ __volatile__("yield")
#else
#  define FS_CPU_RELAX() ((void)0)
#endif

#if defined(FS_HAVE_EPOLL)
#  define FS_POLLER_NAME "epoll"
#elif defined(FS_HAVE_KQUEUE)
#  define FS_POLLER_NAME "kqueue"
#else
#  define FS_POLLER_NAME "poll"
#endif

/* A flag or count that one thread writes and others read without a lock: a free-threaded
   build has no GIL to order such accesses, and a plain int would be a data race. Relaxed
   atomics compile to the plain loads and stores on x86 and ARM: nothing changes on GIL builds. */
static inline int fs_load_int(const int *flag)
{
    return __atomic_load_n(flag, __ATOMIC_RELAXED);
}

static inline void fs_store_int(int *flag, int value)
{
    __atomic_store_n(flag, value, __ATOMIC_RELAXED);
}

static inline long fs_load_long(const long *value)
{
    return __atomic_load_n(value, __ATOMIC_RELAXED);
}

static inline void fs_store_long(long *target, long value)
{
    __atomic_store_n(target, value, __ATOMIC_RELAXED);
}

#endif
