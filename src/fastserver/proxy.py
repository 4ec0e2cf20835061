"""The PROXY protocol (HAProxy's, versions 1 and 2): the client's address behind a proxy.

A proxy or load balancer that speaks it (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB,
nginx ``proxy_protocol on``, stunnel...) opens each connection with a header naming the client it
relays. ``read_header(sock)`` reads exactly that header off a freshly accepted connection, and
nothing after it; ``parse(data)`` parses one from bytes. ``parse`` runs on the active core (see
``fastserver._cores``): compiled (``_proxy``) where the extension is built, pure (``_proxy_py``)
otherwise or under ``FASTSERVER_NO_EXTENSIONS=1``; both take the same input to the same result
(``IMPLEMENTATION`` says which one runs).

What is accepted, following the specification:

- v1: ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` with single spaces, addresses of the
  announced family (IPv4 as exactly four decimal numbers without leading zeros; IPv6 as inet_pton
  reads it, no zone), ports 0-65535 in decimal without sign or leading zeros, at most 107 bytes;
  ``PROXY UNKNOWN\\r\\n``, or ``PROXY UNKNOWN`` and a space then anything (ignored) up to the
  CRLF. A lone CR or LF is an error.
- v2: the 12-byte signature, version 2, command LOCAL or PROXY, one of the family/protocol bytes
  0x00 (UNSPEC), 0x11/0x12 (TCP/UDP over IPv4), 0x21/0x22 (IPv6), 0x31/0x32 (AF_UNIX), an
  address block at least as long as the family's addresses, then TLVs that exactly fill the
  rest. A CRC32C TLV, if present, must be 4 bytes, single, and match the header's checksum.
  LOCAL headers (health checks) and UNSPEC ones carry no addresses (``source`` is None) and
  their block is skipped unread.
- Size: at most ``max_length`` bytes, by default ``DEFAULT_MAX_LENGTH`` (4096); ``MAX_LENGTH``
  (65551) is the protocol's own limit. An oversized v2 header fails on its first 16 bytes.
- Incremental: ``parse`` returns None for every proper prefix of a valid header (retry with
  more bytes), and fails early on what cannot become one: a wrong signature, keyword, character,
  v2 version, command or family byte, an oversized length. v1 addresses and ports are checked
  once the CRLF is in.

With TLS (a server's ``ssl_context``), the header is read off the raw connection first and the
handshake follows it: a proxy in TCP mode (HAProxy ``mode tcp`` with ``send-proxy-v2``) passes
the client's TLS through untouched after the header.

Trust: only accept the header from proxies you trust, on a listener configured for it: whoever
can connect to such a listener can claim any client address.
"""

import select
import socket
from time import monotonic

from . import _cores
from ._proxy_py import (
    DEFAULT_MAX_LENGTH,
    MAX_LENGTH,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    ProxyError,
    ProxyHeader,
)

__all__ = ["ProxyError", "ProxyHeader", "parse", "read_header", "DEFAULT_MAX_LENGTH",
           "MAX_LENGTH", "PP2_TYPE_ALPN", "PP2_TYPE_AUTHORITY", "PP2_TYPE_CRC32C",
           "PP2_TYPE_NOOP", "PP2_TYPE_UNIQUE_ID", "PP2_TYPE_SSL", "PP2_TYPE_NETNS"]



def parse(data, max_length=DEFAULT_MAX_LENGTH):
    """Parse the PROXY protocol header at the start of ``data`` (any contiguous bytes-like).

    Returns a ``ProxyHeader`` once ``data`` holds a whole valid header (bytes after it, the
    payload, are ignored), None while ``data`` is a prefix that may still become one, and raises
    ``ProxyError`` as soon as it cannot, or when the header would be longer than ``max_length``
    bytes (16 to ``MAX_LENGTH``; a v1 line never exceeds 107). Runs on the active core.
    """
    return _cores.active.parse_proxy(data, max_length)


def __getattr__(name):
    if name == "IMPLEMENTATION":  # the core's, which tests and benchmarks may switch
        return _cores.active.name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)
_CLOSED = "connection closed before the PROXY header"


def read_header(sock, timeout=5.0, max_length=DEFAULT_MAX_LENGTH):
    """Read the PROXY protocol header (v1 or v2) that starts the connection ``sock``.

    ``sock``: a connected stream socket, blocking or with a timeout, nothing read from it yet.
    Returns the ``ProxyHeader``; afterwards exactly ``header.length`` bytes have been consumed, so
    the next ``recv`` (or the handler's ``rfile``) starts at the first payload byte. The socket's
    own blocking mode and timeout are left as they were.

    ``timeout``: seconds for the whole header, however it is split (None: no limit).
    ``max_length``: the longest header accepted, 16 to ``MAX_LENGTH`` (v1 lines stop at 107).

    Raises ``ProxyError`` (a ValueError) for a malformed or oversized header, for anything not a
    PROXY header at all, and when the peer closes before the header is complete; TimeoutError
    when it does not arrive in time; OSError (ConnectionResetError...) from the socket. After any
    of these the connection is unusable: close it. Use the header as: ``header.source`` is the
    client's address (None for LOCAL and UNKNOWN: keep the socket's own peer address).
    """
    parse(b"", max_length)  # a bad max_length fails here, before any read
    deadline = None if timeout is None else monotonic() + timeout
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
    else:  # pragma: no cover (Windows)
        poller = None
    consumed = b""  # header bytes already taken off the socket
    while True:
        if not _wait_readable(sock, poller, deadline):
            raise TimeoutError("timed out waiting for the PROXY header")
        try:
            chunk = sock.recv(max_length - len(consumed), _PEEK)
        except BlockingIOError:  # woken up for nothing
            continue
        if not chunk:
            raise ProxyError(_CLOSED)
        header = parse(consumed + chunk if consumed else chunk, max_length)
        if header is None:
            # An incomplete header: every byte seen so far belongs to it, so take them off.
            consumed += _recv_exactly(sock, len(chunk))
        else:
            _recv_exactly(sock, header.length - len(consumed))
            return header


def _wait_readable(sock, poller, deadline):
    remaining = None if deadline is None else max(0.0, deadline - monotonic())
    if poller is None:  # pragma: no cover (Windows)
        return bool(select.select([sock], [], [], remaining)[0])
    return bool(poller.poll(None if remaining is None else remaining * 1000.0))  # rounds up


def _recv_exactly(sock, count):
    """``count`` bytes already peeked at, hence in the socket's buffer: no wait."""
    parts = []
    while count > 0:
        data = sock.recv(count)
        if not data:
            raise ProxyError(_CLOSED)
        parts.append(data)
        count -= len(data)
    return b"".join(parts)
