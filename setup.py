"""Build the compiled core; fall back to the pure core where it cannot be built.

FASTSERVER_NO_EXTENSIONS=1 skips the extension; FASTSERVER_REQUIRE_EXTENSIONS=1 turns a failed build
into an error (CI sets it so that a broken build cannot pass as the pure core).
FASTSERVER_POLLER=poll builds the portable paths (poll(2), the pipe wakeup, no request-thread
acceptors: what macOS and the BSDs run, less kqueue) instead of the platform's own; unset, the
platform's own (epoll on Linux, kqueue on macOS and the BSDs).

Every build writes what it did to fastserver/_build.json beside the modules (which were built,
which failed and why, with which compiler and poller): ``python -m fastserver`` reads it to say
why the compiled core is missing.
"""

import json
import os
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

BUILD_RECORD = "_build.json"
POLLERS = {"": [], "poll": [("FS_PORTABLE", "1")]}  # FASTSERVER_POLLER -> C macros (compat.h)


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _poller():
    """FASTSERVER_POLLER, checked: a bad value fails the build here, whatever else is set."""
    poller = os.environ.get("FASTSERVER_POLLER", "")
    if poller not in POLLERS:
        raise SystemExit(
            f"fastserver: FASTSERVER_POLLER={poller!r} is not a poller this build knows: set it "
            f"to 'poll' (poll(2) and the portable paths) or leave it unset (the platform's own: "
            f"epoll on Linux, kqueue on macOS and the BSDs)")
    return poller


def _first_line(exc):
    """What went wrong, in a line: the command that failed (the compiler's own message went to
    the build's output), else the error's first line."""
    cause = exc
    while cause is not None and not isinstance(cause, subprocess.CalledProcessError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and isinstance(cause.cmd, (list, tuple)) and cause.cmd:
        args = list(cause.cmd)
        source = args[args.index("-c") + 1] if "-c" in args[:-1] else None
        what = f" compiling {source}" if source else ""
        return f"{args[0]!r} exited with status {cause.returncode}{what}"
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _write_record(directory, record):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, BUILD_RECORD), "w") as out:
        json.dump(record, out, indent=1, sort_keys=True)
        out.write("\n")


class OptionalBuildExt(build_ext):
    """build_ext that records each module's outcome and, unless FASTSERVER_REQUIRE_EXTENSIONS,
    lets a module that fails to build leave the pure core in its place."""

    def run(self):
        self.built, self.failed = [], {}
        self._rebuild_if_options_changed()
        try:
            super().run()
        except Exception as exc:
            for ext in self.extensions:
                if ext.name not in self.built:
                    self.failed.setdefault(ext.name, _first_line(exc))
            self._give_up(exc)
        finally:
            self._record()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.failed[ext.name] = _first_line(exc)
            self._give_up(exc)
        else:
            self.built.append(ext.name)

    def _give_up(self, exc):
        if _flag("FASTSERVER_REQUIRE_EXTENSIONS"):
            raise exc
        print(f"fastserver: compiled core not built ({exc}); the pure core will run",
              file=sys.stderr)

    def _options(self):
        return json.dumps([(ext.name, ext.define_macros, ext.extra_compile_args,
                            ext.extra_link_args) for ext in self.extensions])

    def _rebuild_if_options_changed(self):
        # Sources older than the modules are not enough to skip a build: the same sources with
        # another FASTSERVER_POLLER (or debug, or sanitizer) make another module.
        self._stamp = os.path.join(self.build_temp, "fastserver-options.json")
        try:
            with open(self._stamp) as stamp:
                if stamp.read() == self._options():
                    return
        except OSError:
            pass
        self.force = True

    def _record(self):
        compiler = getattr(self.compiler, "compiler_so", None)
        record = {
            "built": sorted(self.built),
            "failed": self.failed,
            "compiler": compiler[0] if compiler else os.environ.get("CC", "unknown"),
            "poller": _poller() or "platform",
            "python": sys.version.split()[0],
            "python_headers": os.path.isfile(
                os.path.join(sysconfig.get_paths()["include"], "Python.h")),
        }
        if self.inplace or getattr(self, "editable_mode", False):  # the modules go to src/
            directory = self.get_finalized_command("build_py").get_package_dir("fastserver")
        else:
            directory = os.path.join(self.build_lib, "fastserver")
        _write_record(directory, record)
        if not self.failed:
            os.makedirs(self.build_temp, exist_ok=True)
            with open(self._stamp, "w") as stamp:
                stamp.write(self._options())


class RecordingBuildPy(build_py):
    """build_py that records a build without extensions (build_ext does not run then)."""

    def run(self):
        super().run()
        if not self.distribution.has_ext_modules():
            if getattr(self, "editable_mode", False):
                directory = self.get_package_dir("fastserver")
            else:
                directory = os.path.join(self.build_lib, "fastserver")
            _write_record(directory, {"skipped": "FASTSERVER_NO_EXTENSIONS was set at build time"})


def extensions():
    macros = POLLERS[_poller()]
    if _flag("FASTSERVER_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = _flag("FASTSERVER_DEBUG")
    cflags = ["-O0", "-g", "-fno-omit-frame-pointer"] if debug else ["-O2"]
    sanitize = os.environ.get("FASTSERVER_SANITIZE", "")
    ldflags = []
    if sanitize:
        cflags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
        ldflags += [f"-fsanitize={sanitize}"]
    common = dict(include_dirs=["csrc"], define_macros=macros, extra_compile_args=cflags,
                  extra_link_args=ldflags)
    modules = [
        Extension("fastserver._dispatch", ["src/fastserver/_dispatch.pyx"],
                  depends=["csrc/sockets.h", "csrc/compat.h"], **common),
        Extension("fastserver._core", ["src/fastserver/_core.pyx", "csrc/poller.c"],
                  depends=["csrc/poller.h", "csrc/sockets.h", "csrc/compat.h"], **common),
        Extension("fastserver._acceptors", ["src/fastserver/_acceptors.pyx", "csrc/acceptor.c"],
                  depends=["csrc/acceptor.h", "csrc/sockets.h", "csrc/compat.h"], **common),
        Extension("fastserver._turns", ["src/fastserver/_turns.pyx", "csrc/turn.c"],
                  depends=["csrc/turn.h", "csrc/compat.h"], **common),
        Extension("fastserver._stream", ["src/fastserver/_stream.pyx"],
                  depends=["csrc/compat.h"], **common),
        Extension("fastserver._proxy", ["src/fastserver/_proxy.pyx"], **common),
    ]
    return cythonize(modules, compiler_directives={"language_level": 3, "embedsignature": True})


setup(ext_modules=extensions(),
      cmdclass={"build_ext": OptionalBuildExt, "build_py": RecordingBuildPy})
