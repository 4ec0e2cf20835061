"""Build the compiled core; fall back to the pure core where it cannot be built.

FASTSERVER_NO_EXTENSIONS=1 skips the extension; FASTSERVER_REQUIRE_EXTENSIONS=1 turns a failed build
into an error (CI sets it so that a broken build cannot pass as the pure core).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._give_up(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc):
        if _flag("FASTSERVER_REQUIRE_EXTENSIONS"):
            raise exc
        print(f"fastserver: compiled core not built ({exc}); the pure core will run",
              file=sys.stderr)


def extensions():
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
    common = dict(include_dirs=["csrc"], extra_compile_args=cflags, extra_link_args=ldflags)
    modules = [
        Extension("fastserver._core", ["src/fastserver/_core.pyx", "csrc/poller.c"],
                  depends=["csrc/poller.h", "csrc/compat.h"], **common),
        Extension("fastserver._acceptors",
                  ["src/fastserver/_acceptors.pyx", "csrc/acceptor.c", "csrc/poller.c"],
                  depends=["csrc/acceptor.h", "csrc/poller.h", "csrc/compat.h"], **common),
        Extension("fastserver._turns", ["src/fastserver/_turns.pyx", "csrc/turn.c"],
                  depends=["csrc/turn.h", "csrc/compat.h"], **common),
        Extension("fastserver._stream", ["src/fastserver/_stream.pyx"],
                  depends=["csrc/compat.h"], **common),
        Extension("fastserver._proxy", ["src/fastserver/_proxy.pyx"], **common),
    ]
    return cythonize(modules, compiler_directives={"language_level": 3, "embedsignature": True})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
