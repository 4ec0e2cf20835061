"""Which core runs the loops: the compiled one where it was built, else the pure one.

``FASTSERVER_NO_EXTENSIONS=1`` (any value but "" and "0") selects the pure core at import.
"""

import os

from . import _pure

try:
    from . import _core as _compiled
except ImportError:  # not built (no compiler, or FASTSERVER_NO_EXTENSIONS at build time)
    _compiled = None

CORES = {"python": _pure}
if _compiled is not None:
    CORES["cython"] = _compiled

try:
    from . import _stream
except ImportError:
    _stream = None

core = _pure
stream_files = _pure.stream_files  # StreamRequestHandler's (rfile, wfile) maker
implementation = ""


def use(name):
    """Make the core called ``name`` ("cython" or "python") run every loop from now on."""
    global core, implementation, stream_files
    try:
        core = CORES[name]
    except KeyError:
        raise ValueError(f"no {name!r} core here; available: {sorted(CORES)}") from None
    compiled_streams = core is not _pure and _stream is not None
    stream_files = _stream.stream_files if compiled_streams else _pure.stream_files
    implementation = f"{name}-{core.POLLER}"
    return implementation


def turns():
    """What request threads take turns with (the compiled stream module: enroll(),
    begin_request(), end_request()), or None where the pure stream files run: only the compiled
    ones' waits give the turn up."""
    return _stream if stream_files is not _pure.stream_files else None


use("python" if os.environ.get("FASTSERVER_NO_EXTENSIONS", "") not in ("", "0")
    or _compiled is None else "cython")
