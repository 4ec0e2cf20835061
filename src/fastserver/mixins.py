"""ThreadingMixIn and ForkingMixIn: a thread or a child process per request, as in the stdlib."""

import os
import threading

from . import _cores, _pipeline
from ._pool import ThreadPool

__all__ = ["ThreadingMixIn"]
if hasattr(os, "fork"):
    __all__ += ["ForkingMixIn"]


_pool_made = threading.Lock()  # one ThreadPool per server, however many threads ask at once


class _NoThreads:
    """What ``_threads`` is before the first request: nothing to join."""

    def join(self):
        pass

    def close(self):
        pass

    def stop_accepting(self):
        pass

    def __len__(self):
        return 0


class ThreadingMixIn:
    """Mix-in class to handle each request in a new thread.

    As in the standard library there is one thread per concurrent request, but threads are reused:
    one that finishes a request takes the next instead of exiting (see ``fastserver._pool``).

    Class variables that may be overridden:

    - daemon_threads: request threads do not keep the interpreter alive (default False)
    - block_on_close: server_close() waits for the running requests (default True)
    - max_threads: at most this many requests run at once (default None: no limit); while all
      are busy the loop stops accepting and new connections wait in the kernel's backlog
    - request_turns: request threads whose handlers run long stretches of Python take turns
      (compiled core): one runs until it waits for its connection, instead of all of them
      trading the GIL at every syscall (default True; see the README)
    """

    daemon_threads = False
    block_on_close = True
    max_threads = None
    request_turns = True
    _threads = _NoThreads()

    def process_request_thread(self, request, client_address):
        """Same as in BaseServer but as a thread.

        In addition, exception handling is done here. With TLS (fastserver's ssl_context) the
        handshake runs here, after the PROXY header, and the handler gets the SSLSocket; a
        failed or timed-out handshake closes the connection without a handler. Between two
        requests of a keep-alive connection the thread may be freed (fastserver._pipeline).
        """
        _pipeline.serve(self, request, client_address)

    def _thread_pool(self):
        """The ThreadPool (``_threads``), made at its first use (by one thread only, should
        two ask at once: handle_request() in several threads, a server_close() meanwhile)."""
        pool = self._threads
        if type(pool) is not ThreadPool:
            with _pool_made:
                pool = self._threads
                if type(pool) is not ThreadPool:
                    # No turns over TLS: the ssl module's reads wait without giving a turn up.
                    turns = (_cores.active.turns
                             if self.request_turns and self._tls_context() is None else None)
                    pool = self._threads = ThreadPool(self.max_threads, self._wake_loop, turns)
        return pool

    def process_request(self, request, client_address):
        """Run the request on a free thread (an idle one, else a new one)."""
        pool = self._thread_pool()
        pool.submit(self.process_request_thread, (request, client_address), self.daemon_threads)

    def _accepting(self):
        """False while max_threads requests run: the loop then leaves connections queued."""
        return not self._threads.full() if type(self._threads) is ThreadPool else True

    def server_close(self):
        # Request threads that accept for themselves stop before the listener closes: none may
        # accept() or epoll_ctl() on its descriptor number once another file can have it (this
        # matters when server_close() races a running serve_forever(), which stops them too).
        self._threads.stop_accepting()
        super().server_close()
        if self.block_on_close:
            self._threads.join()
        else:
            self._threads.close()


if hasattr(os, "fork"):

    class ForkingMixIn:
        """Mix-in class to handle each request in a new process.

        Class variables that may be overridden:

        - timeout: seconds handle_request() waits before reaping children (default 300)
        - max_children: more children than this make the server wait for one to exit (40)
        - block_on_close: server_close() waits for every child (default True)

        Instance variables:

        - active_children: the pids of the running children (None before the first)
        """

        timeout = 300
        active_children = None
        max_children = 40
        block_on_close = True

        def collect_children(self, *, blocking=False):
            """Reap the children that have exited; wait while there are max_children or more."""
            if self.active_children is None:
                return
            # Over the limit: wait for any child to exit, one at a time, as the stdlib does.
            while len(self.active_children) >= self.max_children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    self.active_children.discard(pid)
                except ChildProcessError:
                    self.active_children.clear()  # none of ours is left
                except OSError:
                    break
            # Then reap those that have finished, waiting only when told to. Waiting on each pid
            # of ours (not -1) leaves any other child of the process to its owner.
            for pid in self.active_children.copy():
                try:
                    flags = 0 if blocking else os.WNOHANG
                    done, _ = os.waitpid(pid, flags)
                    self.active_children.discard(done)
                except ChildProcessError:
                    self.active_children.discard(pid)  # already reaped elsewhere
                except OSError:
                    pass

        def handle_timeout(self):
            """Wait for zombies after self.timeout seconds of inactivity."""
            self.collect_children()

        def service_actions(self):
            """Collect the zombie child processes regularly in the ForkingMixIn."""
            self.collect_children()

        def process_request(self, request, client_address):
            """Fork a new subprocess to process the request."""
            pid = os.fork()
            if pid:
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                self.close_request(request)
                return
            # The child: handle the request and exit without returning into the loop.
            status = 1
            try:
                if _pipeline.serve(self, request, client_address):
                    status = 0
            finally:
                os._exit(status)

        def server_close(self):
            super().server_close()
            self.collect_children(blocking=self.block_on_close)
