"""TLS on the stream servers (``ssl_context``): each connection's handshake, never in the loop.

The listening socket stays a plain socket, so the loop accepts as it always does; each accepted
connection is wrapped server-side (``do_handshake_on_connect=False``) where it is processed, and
its handshake runs there:

- under ThreadingMixIn in the request's own thread, and under ForkingMixIn in the child, each
  bounded by ``tls_handshake_timeout`` (:func:`handshake`);
- on a server that processes requests in its loop (TCPServer, UnixStreamServer), without ever
  waiting in the loop: the loop holds the connection until its first bytes arrive (as
  ``first_data_timeout`` holds silent connections), then each step of the handshake runs as far
  as the bytes that have arrived allow (:func:`step`) and the connection is held again until more
  come.

A handshake that fails (garbage, plain HTTP, a missing client certificate...) or takes longer
than ``tls_handshake_timeout`` closes the connection (``shutdown_request()``) without a handler
running, and without ``handle_error()``: as in the standard library, where a listener wrapped by
hand (Python 3.14's ``HTTPSServer``) fails the handshake inside ``accept()`` and the loop ignores
the OSError. Nothing here imports ``ssl`` until a server uses TLS.
"""

import socket
import sys

#: step() results: the handshake is complete, or waits for the client's next bytes.
DONE = "done"
WAITING = "waiting"


def listener_context(sock):
    """The SSLContext of a listening socket wrapped by hand (``context.wrap_socket(listener,
    server_side=True)``, as Python 3.14's HTTPSServer does), else None. Without ``ssl`` imported
    there can be no SSLSocket."""
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        return sock.context
    return None


def check_context(context):
    """``ssl_context`` must be None or a server-side ssl.SSLContext; returned."""
    if context is None:
        return None
    import ssl

    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, "
                        f"not {type(context).__name__}")
    if context.protocol == ssl.PROTOCOL_TLS_CLIENT:
        raise ValueError("ssl_context must be a server-side context (ssl.PROTOCOL_TLS_SERVER, "
                         "or ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)), "
                         "not a PROTOCOL_TLS_CLIENT one")
    return context


def accept_plain(listener):
    """accept() on a listener wrapped by hand, without the handshake that SSLSocket.accept()
    runs: (plain socket, address)."""
    return socket.socket.accept(listener)


def wrap(context, sock, listener):
    """``sock`` wrapped server-side, the handshake not begun: the SSLSocket, which now owns the
    connection's descriptor (``sock`` is detached); None when wrapping fails (``sock`` is then
    closed already, or left for shutdown_request() to close). A listener wrapped by hand says
    how ragged EOFs are taken."""
    try:
        return context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False,
            suppress_ragged_eofs=getattr(listener, "suppress_ragged_eofs", True))
    except (OSError, ValueError):
        return None


def handshake(tls, timeout):
    """Complete ``tls``'s handshake within ``timeout`` seconds in all, however the client splits
    or delays its messages; its blocking mode and timeout are left as they were. Raises
    TimeoutError when it takes longer, ssl.SSLError or OSError when it fails."""
    previous = tls.gettimeout()
    # The ssl module runs the whole handshake in C, the GIL released around each step, and
    # bounds it all by the socket's timeout (a deadline, not a timeout per read).
    tls.settimeout(timeout)
    try:
        tls.do_handshake()
    except TimeoutError:
        raise TimeoutError("timed out in the TLS handshake") from None
    finally:
        tls.settimeout(previous)


def step(tls):
    """Run ``tls``'s handshake (a non-blocking SSLSocket) as far as it goes without waiting:
    DONE, or WAITING for the client's next bytes. Raises ssl.SSLError or OSError when it fails,
    and BlockingIOError when it could only go on once the client reads what was sent (its
    receive window is full: the loop never waits on one client)."""
    import ssl

    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        return WAITING
    except ssl.SSLWantWriteError:
        raise BlockingIOError("the TLS client does not read the handshake") from None
    return DONE
