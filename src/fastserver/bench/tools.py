"""The bench's C tools: the load generator (``_loadgen.c``), the paced client (``_paced.c``) and
the floor's servers (``_floor.c``).

All are shipped as sources in this package and compiled on first use with the machine's C
compiler (``cc -O2``) into a cache directory, keyed by a hash of the source, the compiler command
and the machine.
"""

import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from importlib import resources

from .loads import BenchError


def cache_dir():
    """Where the compiled tools are kept: $FASTSERVER_BENCH_CACHE, else the user's cache."""
    explicit = os.environ.get("FASTSERVER_BENCH_CACHE")
    if explicit:
        candidates = [explicit]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [os.path.join(base, "fastserver"),
                      os.path.join(tempfile.gettempdir(), f"fastserver-{os.getuid()}")]
    for path in candidates:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise BenchError(f"no writable cache directory among {candidates}")


def compiler():
    """The C compiler command (a list): $CC, else cc, gcc or clang; None if there is none."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def build_loadgen(directory=None):
    """Compile the load generator once (cached by source and compiler) and return its path."""
    return _build("loadgen", [], "the load generator", directory)


def build_paced(directory=None):
    """Compile the paced client (_paced.c: many mostly idle connections; Linux) once, as
    build_loadgen(); its path."""
    return _build("paced", [], "the paced client", directory)


def build_floor(directory=None):
    """Compile the C reference servers (_floor.c) once, as build_loadgen(); their path."""
    return _build("floor", ["-pthread"], "the C reference servers", directory)


def _build(name, flags, what, directory):
    """Compile this package's ``_<name>.c`` into ``<name>-<hash>`` in ``directory``."""
    source = resources.files(__package__).joinpath(f"_{name}.c").read_bytes()
    cc = compiler()
    if cc is None:
        raise BenchError(f"no C compiler (set CC, or install cc) to build {what}")
    key = hashlib.sha256(source + " ".join(cc + flags).encode() + platform.machine().encode())
    directory = directory or cache_dir()
    exe = os.path.join(directory, f"{name}-{key.hexdigest()[:16]}")
    if os.path.exists(exe):
        return exe
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        src = os.path.join(tmp, f"{name}.c")
        with open(src, "wb") as f:
            f.write(source)
        out = os.path.join(tmp, name)
        done = subprocess.run([*cc, "-O2", *flags, "-o", out, src], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"compiling {what} failed:\n{done.stderr}")
        os.replace(out, exe)
    return exe
