"""The peers' server subprocess: a socket load's work on an event loop: asyncio, uvloop or gevent.

The bench runs this file's source as ``python -c <source> KIND IMPL`` (see
``servers.start_server``); it imports nothing of fastserver's, and importing it runs nothing. KIND
is a socket load's server kind, IMPL one of ``loads.PEERS``: ``asyncio-streams``,
``asyncio-protocol``, ``uvloop-streams``, ``uvloop-protocol``, ``gevent``. It speaks the protocol of
server_script.py (a hello line, then ``cpu`` answered from ``getrusage``, ``quit`` or EOF ends it);
where uvloop (or gevent) cannot be imported its hello line is ``{"missing": why}`` and it exits.

The handlers do the work of the socketserver handlers of loads 1-4, written as asyncio's users
write them: with streams (``asyncio.start_server``), or with a ``Protocol`` when speed matters;
the uvloop columns run the same code on uvloop's loop (``uvloop.run``). gevent's is written as
its users write it: a ``gevent.server.StreamServer`` whose handler gets a socket in a greenlet of
its own and uses blocking calls (``recv``, ``sendall``, ``makefile().readline``), which gevent
makes wait in its hub. An event loop has one thread: ``threading-oneshot`` (load 1) and
``single-oneshot`` (load 4) are the same server here, and ``idle-echo`` (load 10: many mostly
idle connections) is ``threading-echo`` with a larger listen backlog.

- a connection per request (``*-oneshot``): read once, up to 1024 bytes (``recv(1024)``), write it
  back, close;
- echo (``threading-echo``): write back every line as it arrives, and what is left at EOF (a last
  line without its newline), then close.
"""

import asyncio
import json
import os
import resource
import sys
import threading

HOST = "127.0.0.1"
BACKLOG = 1024  # as the socketserver servers' request_queue_size
BIG_BACKLOG = 4096  # the paced loads' (idle-echo): thousands of connections ramp up
KINDS = ("threading-oneshot", "single-oneshot", "threading-echo", "idle-echo")
ONESHOT_SIZE = 1024  # the socketserver handler's recv(1024)


async def reply_once(reader, writer):
    """Streams, a connection per request."""
    data = await reader.read(ONESHOT_SIZE)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def echo_lines(reader, writer):
    """Streams, echo: readline() also returns a last line that has no newline, then b""."""
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


class ReplyOnce(asyncio.Protocol):
    """Protocol, a connection per request."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data[:ONESHOT_SIZE])
        self.transport.close()  # once what is written is sent

    # eof_received() returns None: the transport closes (EOF before any data: no reply)


class EchoLines(asyncio.Protocol):
    """Protocol, echo: the complete lines of each chunk at once, a partial line kept for later."""

    def connection_made(self, transport):
        self.transport = transport
        self.partial = b""

    def data_received(self, data):
        if self.partial:
            data = self.partial + data
        end = data.rfind(b"\n") + 1
        if end:
            self.transport.write(data[:end])
        self.partial = data[end:]

    def eof_received(self):
        if self.partial:
            self.transport.write(self.partial)
        # returns None: the transport closes once what is written is sent


def gevent_reply_once(sock, address):
    """gevent, a connection per request (the server closes the socket when this returns)."""
    sock.sendall(sock.recv(ONESHOT_SIZE))


def gevent_echo_lines(sock, address):
    """gevent, echo: the lines of a buffered reader, each written back as it comes."""
    with sock.makefile("rb") as rfile:
        for line in rfile:
            sock.sendall(line)


def usage_error():
    print(f"usage: peer_script KIND IMPL; KIND: {', '.join(KINDS)}; IMPL: "
          "{asyncio,uvloop}-{streams,protocol} or gevent", file=sys.stderr)
    sys.exit(2)


def raise_nofile():
    """The soft limit on descriptors up to the hard one: the paced loads open thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def commands(lines):
    """Answer the bench's lines (``cpu``) until "quit" or the end of ``lines``."""
    for line in lines:
        if line.strip() == "cpu":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(f"{usage.ru_utime!r} {usage.ru_stime!r} {usage.ru_nvcsw} {usage.ru_nivcsw}",
                  flush=True)
        elif line.strip() == "quit":
            break


def answer(loop, stopped):
    """Answer the bench on stdin until "quit" or EOF; then stop the loop's server."""
    commands(sys.stdin)
    loop.call_soon_threadsafe(stopped.set)


def gevent_stdin_lines():
    """The lines of stdin, read in gevent's thread pool (a plain read would stop the hub)."""
    import gevent.os

    pending = b""
    while True:
        chunk = gevent.os.tp_read(sys.stdin.fileno(), 4096)
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line.decode() for line in lines)


def serve_gevent(kind):
    try:
        import gevent
        from gevent.server import StreamServer
    except ImportError as exc:
        print(json.dumps({"missing": f"gevent cannot be imported here ({exc}); "
                                     f"pip install gevent"}), flush=True)
        return
    handle = gevent_reply_once if kind.endswith("oneshot") else gevent_echo_lines
    server = StreamServer((HOST, 0), handle,
                          backlog=BIG_BACKLOG if kind == "idle-echo" else BACKLOG)
    server.start()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps({"port": server.address[1],
                      "implementation": f"gevent {gevent.__version__}, StreamServer",
                      "streams": None, "gil_enabled": gil}), flush=True)
    commands(gevent_stdin_lines())
    server.stop(timeout=1)


async def serve(kind, style, loop_name):
    loop = asyncio.get_running_loop()
    oneshot = kind.endswith("oneshot")
    backlog = BIG_BACKLOG if kind == "idle-echo" else BACKLOG
    if style == "streams":
        server = await asyncio.start_server(reply_once if oneshot else echo_lines, HOST, 0,
                                            backlog=backlog)
    else:
        server = await loop.create_server(ReplyOnce if oneshot else EchoLines, HOST, 0,
                                          backlog=backlog)
    loop_type = type(loop)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps({"port": server.sockets[0].getsockname()[1],
                      "implementation": f"{loop_name}, {loop_type.__module__}.{loop_type.__name__}",
                      "streams": None, "gil_enabled": gil}), flush=True)
    stopped = asyncio.Event()
    threading.Thread(target=answer, args=(loop, stopped), daemon=True).start()
    async with server:
        await stopped.wait()


def main(kind, impl):
    loop_kind, _, style = impl.partition("-")
    if kind not in KINDS or not (impl == "gevent" or (
            loop_kind in ("asyncio", "uvloop") and style in ("streams", "protocol"))):
        usage_error()
    raise_nofile()
    if impl == "gevent":
        serve_gevent(kind)
    elif loop_kind == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            print(json.dumps({"missing": f"uvloop cannot be imported here ({exc}); "
                                         f"pip install uvloop"}), flush=True)
            return
        uvloop.run(serve(kind, style, f"uvloop {uvloop.__version__}"))
    else:
        asyncio.run(serve(kind, style, f"asyncio {sys.version.split()[0]}"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a connection left open must not hold the exit up


if __name__ == "__main__":
    if len(sys.argv) != 3:
        usage_error()
    main(*sys.argv[1:3])
