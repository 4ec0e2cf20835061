/* Platform switches for the C core, in one place (no Cython IF/DEF). */
#ifndef FASTSERVER_COMPAT_H
#define FASTSERVER_COMPAT_H

#if defined(__linux__)
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

#if defined(FS_HAVE_EPOLL)
#  define FS_POLLER_NAME "epoll"
#elif defined(FS_HAVE_KQUEUE)
#  define FS_POLLER_NAME "kqueue"
#else
#  define FS_POLLER_NAME "poll"
#endif

#endif
