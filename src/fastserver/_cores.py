"""The two cores and which one runs: the one place that reads ``FASTSERVER_NO_EXTENSIONS``.

A core is a set of twins, picked together: its loop module (``_core`` or ``_core_py``: Loop,
handle_request, POLLER), StreamRequestHandler's files (``_stream`` / ``_stream_py``), the PROXY
header parser (``_proxy`` / ``_proxy_py``) and, compiled only, the turns request threads take
(``_turns``). The compiled core runs where the extension was built, unless
``FASTSERVER_NO_EXTENSIONS=1`` (any value but "" and "0") asks for the pure one; tests and the
benchmark switch with :func:`use`.
"""

import os
from dataclasses import dataclass
from types import ModuleType

from . import _core_py, _proxy_py, _stream_py

NO_EXTENSIONS = os.environ.get("FASTSERVER_NO_EXTENSIONS", "") not in ("", "0")


@dataclass(frozen=True)
class Core:
    """One core: what runs the loops, the streams and the PROXY parser."""

    name: str  #: "cython" or "python"
    loops: ModuleType  #: Loop, handle_request(), POLLER
    stream_files: object  #: (sock, rbufsize, wbufsize) -> (rfile, wfile)
    parse_proxy: object  #: fastserver.proxy's parser: bytes -> (ProxyHeader, length) or None
    turns: ModuleType | None  #: enroll(), begin_request(), end_request(); None: no turns
    wait_readable: object  #: (fd, seconds) -> bool: a request thread's wait for its next request

    @property
    def implementation(self):
        """What fastserver.IMPLEMENTATION says: the core's name and its poller."""
        return f"{self.name}-{self.loops.POLLER}"


PURE = Core("python", _core_py, _stream_py.stream_files, _proxy_py.parse, None,
            _stream_py.wait_readable)
try:
    from . import _core, _proxy, _stream, _turns
except ImportError:  # not built: no compiler, or FASTSERVER_NO_EXTENSIONS at build time
    COMPILED = None
else:
    COMPILED = Core("cython", _core, _stream.stream_files, _proxy.parse, _turns,
                    _stream.wait_readable)
CORES = {core.name: core for core in (COMPILED, PURE) if core is not None}

#: The core every loop runs on from now on.
active = PURE if NO_EXTENSIONS or COMPILED is None else COMPILED


def use(name):
    """Make the core called ``name`` ("cython" or "python") run everything from now on; it is
    returned."""
    global active
    try:
        active = CORES[name]
    except KeyError:
        raise ValueError(f"no {name!r} core here; available: {sorted(CORES)}") from None
    return active
