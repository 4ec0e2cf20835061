"""Stub for the compiled PROXY protocol parser (``_proxy.pyx``); ``_proxy_py`` is its twin."""

from typing_extensions import Buffer

from fastserver._proxy_py import DEFAULT_MAX_LENGTH as DEFAULT_MAX_LENGTH
from fastserver._proxy_py import MAX_LENGTH as MAX_LENGTH
from fastserver._proxy_py import ProxyError as ProxyError
from fastserver._proxy_py import ProxyHeader as ProxyHeader

__all__ = ["ProxyError", "ProxyHeader", "parse", "DEFAULT_MAX_LENGTH", "MAX_LENGTH"]

def parse(data: Buffer, max_length: int = ...) -> ProxyHeader | None:
    """The header at the start of ``data``; None while incomplete; ProxyError if malformed."""

def _crc32c(data: bytes) -> int: ...
