"""The running Python's own ``socketserver``, where fastserver reads what it must follow.

fastserver is a drop-in for the socketserver of the interpreter that runs it, whichever version
that is: the class attributes' defaults (3.15 raised ``request_queue_size`` from 5 to
``socket.SOMAXCONN``) and the module's ``__version__`` (3.15 deprecates reading it) are read from
that module, never copied from one version.

``module`` is the standard library's socketserver: the one in ``sys.modules`` when it is there
(the stdlib's, not fastserver after :func:`fastserver.install`), else a private copy loaded from
its source and never entered in ``sys.modules``, so that importing fastserver imports no
``socketserver`` as a side effect.
"""

import importlib.machinery
import importlib.util
import sys


def _load():
    imported = sys.modules.get("socketserver")
    if imported is not None and imported.__name__ == "socketserver":
        return imported
    # Not imported yet, or fastserver.install() put fastserver in its place: the stdlib's source,
    # found where `import socketserver` would find it without sys.modules.
    spec = importlib.machinery.PathFinder.find_spec("socketserver")
    if spec is None:
        raise ImportError("the standard library's socketserver is not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


module = _load()


def default(class_name, attribute):
    """The standard library's ``socketserver.<class_name>.<attribute>`` on this Python."""
    return getattr(getattr(module, class_name), attribute)
