"""fastserver: the standard library's socketserver on a Cython + C core.

Every name of ``socketserver.__all__`` is here with the same behaviour; ``import fastserver as
socketserver`` switches a program, and :func:`install` switches the standard library's own servers
(``http.server``, ``xmlrpc.server``, ``wsgiref.simple_server``) too.

``VERSION`` is fastserver's own version. ``IMPLEMENTATION`` says which core runs the loops and
over which poller: ``"cython-epoll"``, ``"cython-kqueue"``, ``"cython-poll"``, or
``"python-<selector>"`` for the pure core (selected by ``FASTSERVER_NO_EXTENSIONS=1`` or where the
extension was not built).
"""

import os
import socket
import sys
import warnings

from . import _cores
from .handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from .mixins import ThreadingMixIn
from .servers import BaseServer, TCPServer, UDPServer

__all__ = ["BaseServer", "TCPServer", "UDPServer",
           "ThreadingUDPServer", "ThreadingTCPServer",
           "BaseRequestHandler", "StreamRequestHandler",
           "DatagramRequestHandler", "ThreadingMixIn"]

IMPLEMENTATION = _cores.active.implementation


def _version():
    """fastserver's own version: the installed distribution's ("0+unknown" uninstalled)."""
    from importlib import metadata

    try:
        return metadata.version("fastserver")
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        return "0+unknown"


#: fastserver's version. ``__version__`` is not fastserver's: it is the running Python's
#: ``socketserver.__version__`` (see ``__getattr__`` below), since ``fastserver.install()`` puts
#: this module where ``socketserver`` was.
VERSION = _version()


def __getattr__(name):
    """``__version__``: the running Python's ``socketserver.__version__``, read as the stdlib's
    is, warnings included (3.15 deprecates it: reading it warns, pointing at the reader's line),
    and gone where the stdlib's is gone."""
    if name == "__version__":
        from . import _stdlib

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(_stdlib.module, name)
        for warning in caught:  # again, from here: the filters apply, and the line is the reader's
            warnings.warn(warning.message, warning.category, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    pass


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    pass


if hasattr(os, "fork"):
    from .mixins import ForkingMixIn

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        pass

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        pass

    __all__ += ["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"]

if hasattr(socket, "AF_UNIX"):
    from .servers import UnixDatagramServer, UnixStreamServer

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        pass

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        pass

    __all__ += ["UnixStreamServer", "UnixDatagramServer",
                "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer"]

    if hasattr(os, "fork"):

        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            pass

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            pass

        __all__ += ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"]


def _name_classes(module_name):
    """Say that the public classes live in ``module_name`` (repr, pickle, introspection)."""
    for name in __all__:
        globals()[name].__module__ = module_name


_name_classes(__name__)


def install():
    """Put fastserver in place of ``socketserver`` in ``sys.modules``.

    Call it before importing ``http.server``, ``xmlrpc.server``, ``wsgiref.simple_server`` or any
    other module that does ``import socketserver``: from then on they subclass fastserver's classes
    and run on its core, unchanged. A module that imported the standard library's socketserver
    earlier keeps it; install() warns (RuntimeWarning) naming such modules. The public classes
    then say ``socketserver`` as their ``__module__``, the name under which they are now imported.
    Calling it again does nothing.
    """
    this = sys.modules[__name__]
    stdlib = sys.modules.get("socketserver")
    if stdlib is this:
        return
    if stdlib is not None:
        bound = sorted(name for name, module in list(sys.modules.items())
                       if name != "socketserver"
                       and getattr(module, "socketserver", None) is stdlib)
        if bound:
            warnings.warn(f"fastserver.install(): already imported with the standard "
                          f"socketserver, left unchanged: {', '.join(bound)}",
                          RuntimeWarning, stacklevel=2)
    sys.modules["socketserver"] = this
    _name_classes("socketserver")


def _use_core(name):
    """Run everything on the core ``name`` ("cython" or "python") from now on: its loops, its
    streams, its PROXY parser. For tests and benchmarks; returns the new IMPLEMENTATION."""
    global IMPLEMENTATION
    IMPLEMENTATION = _cores.use(name).implementation
    return IMPLEMENTATION
