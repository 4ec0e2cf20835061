"""The seam between the standard library's API (servers.py, mixins.py) and the cores.

A core sees a server through exactly two objects, both made by the API layer:

- :class:`LoopState`, which the server owns for its whole life: whether a shutdown was asked
  for, the loop running now (to wake it), the connections it parks, and the last accept
  error. Whoever stops a loop (``shutdown()``, a worker's signal handler, a freed request
  thread) goes through it; nobody reaches into ``BaseServer``'s private names.
- :class:`Hooks`, found once per ``serve_forever()``/``handle_request()`` by
  ``servers.find_hooks()``: which of the server's methods a subclass overrides (those the core
  calls, where the stdlib calls them) and which are fastserver's own (those it runs itself).

This module imports nothing of fastserver's, so that any layer may import it.
"""


class LoopState:
    """What a server's loops share with the threads that stop or wake them.

    Ownership (no lock is needed: each field is one reference, written whole):

    - ``shutdown_request``: set by any thread (``shutdown()``, a signal handler), cleared by the
      thread running ``serve_forever()`` when its loop ends; the loop reads it after every wait.
    - ``loop``: the running loop (its ``wake()`` ends the current wait), or None; written only by
      the thread running ``serve_forever()``, read by any.
    - ``parking``: the loop's Parking (``fastserver._parking``) while it runs one, else None;
      written by the loop's thread. ``_handle_request_noblock()`` holds new connections there
      (``first_data_timeout``, the pure core), a TLS server's ``process_request()`` parks a
      connection while its handshake waits for the client (both cores), and request threads park
      keep-alive connections between requests (any thread: Parking.park() is thread-safe).
    - ``keep_alive``: the running loop's KeepAlive (``fastserver._pipeline``), or None; written
      by the thread running ``serve_forever()``, read by request threads.
    - ``accept_error``: the errno of the last failed ``get_request()`` (0 after a success),
      written by ``_handle_request_noblock()`` and read by the pure loop, in the loop's thread.
    - ``finish_until``: None, or in a worker process that stops gracefully the monotonic() time
      until which a loop that ends serves the new connections it holds as they speak
      (instead of closing them); set by the worker's stop signal handler, read when the loop
      ends.
    """

    __slots__ = ("shutdown_request", "loop", "parking", "keep_alive", "accept_error",
                 "finish_until")

    def __init__(self):
        self.shutdown_request = False
        self.loop = None
        self.parking = None
        self.keep_alive = None
        self.accept_error = 0
        self.finish_until = None

    def wake(self):
        """End the running loop's current wait, if a loop runs (it then looks at its state)."""
        loop = self.loop
        if loop is not None:
            loop.wake()

    def request_shutdown(self):
        """Ask the running loop (or the next one to start) to stop, and wake it."""
        self.shutdown_request = True
        self.wake()


class Hooks:
    """Which of a server's hooks a core must call in Python, decided once per loop.

    Each hook attribute is None where the core runs fastserver's default itself, else the bound
    method to call:

    - ``get_request``, ``handle_noblock`` (``_handle_request_noblock``), ``verify_request``,
      ``process_request``, ``finish_request``, ``service_actions``;
    - ``shutdown_request`` and ``close_request``, which may also be :data:`SHUTDOWN_TCP` /
      :data:`CLOSE_SOCKET`: TCPServer's defaults, run by the core.

    And what the core may do on its own:

    - ``accept``: the core may accept connections itself (a stream socket of the plain
      ``socket.socket`` type, and the default get_request);
    - ``accepting``: where set, whether the server can take a request now (ThreadingMixIn with
      max_threads); while it says no, the loop leaves connections in the backlog;
    - ``threads_accept``: ThreadingMixIn's own request path on a socket the core accepts on
      (nothing between accept and process_request_thread overridden, no first_data_timeout):
      its request threads may accept for themselves;
    - ``thread_pool``: with ``threads_accept``, a function returning the server's ThreadPool,
      which adopts those threads (server_close() joins them);
    - ``first_data_timeout``: the server's, where the loop holds connections until they are
      readable, else None;
    - ``keep_alive``: a ``fastserver._pipeline.KeepAlive`` where request threads park
      keep-alive connections in the loop between requests, else None;
    - ``nodelay``: TCP_NODELAY to set on each TCP connection the core accepts itself (0 or 1),
      or -1 where it inherits the value wanted from the listener.

    A loop runs a Parking (``fastserver._parking``) where ``first_data_timeout`` or
    ``keep_alive`` is set, and only there.
    """

    __slots__ = ("accept", "accepting", "threads_accept", "thread_pool", "first_data_timeout",
                 "keep_alive", "nodelay",
                 "get_request", "handle_noblock", "verify_request", "process_request",
                 "finish_request", "shutdown_request", "close_request", "service_actions")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, None)
        self.accept = self.threads_accept = False
        self.nodelay = -1


#: ``Hooks.shutdown_request``: TCPServer's (shutdown(SHUT_WR), then close_request()).
SHUTDOWN_TCP = "shutdown+close"
#: ``Hooks.close_request``: TCPServer's (close the socket).
CLOSE_SOCKET = "close"
