"""Stub for ``_dispatch.pyx``: how a compiled loop hands a connection on."""

from typing import Any

from fastserver._seam import Hooks

class Dispatcher:
    """Internal: one server's hooks and listening socket, as a loop dispatches to them."""

    def __new__(cls, server: Any, hooks: Hooks) -> Dispatcher: ...
