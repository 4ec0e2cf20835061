# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""The PROXY protocol header parser, compiled; ``_proxy_py`` is its pure-Python twin and spec.

The input is untrusted bytes off the network, read through the buffer protocol (the export also
keeps a bytearray from being resized under the parser). No byte is read without a check against
the input's length first: ``n``, the bytes available, and, for a version 2 header, ``total`` once
``n >= total`` has been checked. The parser keeps no state between calls.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint32_t
from libc.string cimport memcmp

from fastserver.includes.system cimport AF_INET, AF_INET6, inet_ntop

import socket as _socket
from os import fsdecode as _fsdecode

from fastserver._proxy_py import (
    _V2_FAMILIES,
    DEFAULT_MAX_LENGTH,
    E_NOT_PROXY,
    E_V1_CHARACTER,
    E_V1_CR_LF,
    E_V1_FIELDS,
    E_V1_PORT,
    E_V1_PROTOCOL,
    E_V2_CRC,
    E_V2_CRC_LENGTH,
    E_V2_CRC_TWICE,
    MAX_LENGTH,
    MAX_V1_LENGTH,
    ProxyError,
    ProxyHeader,
    _check_max_length,
)

__all__ = ["ProxyError", "ProxyHeader", "parse", "DEFAULT_MAX_LENGTH", "MAX_LENGTH"]

cdef const char *V1_PREFIX = b"PROXY "
cdef const char *V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
cdef unsigned char ZEROS[4]  # static storage: all zero
cdef Py_ssize_t UNIX_PATH = 108
cdef Py_ssize_t V1_LIMIT = MAX_V1_LENGTH
cdef int TLV_CRC32C = 0x03

cdef object PY_AF_UNSPEC = _socket.AF_UNSPEC
cdef object PY_AF_INET = _socket.AF_INET
cdef object PY_AF_INET6 = _socket.AF_INET6
cdef object PY_AF_UNIX = _socket.AF_UNIX
cdef object PY_SOCK_STREAM = _socket.SOCK_STREAM

cdef uint32_t CRC32C_TABLE[256]


cdef void crc32c_init() noexcept:
    cdef uint32_t crc
    cdef int byte, _bit
    for byte in range(256):
        crc = <uint32_t>byte
        for _bit in range(8):
            crc = (crc >> 1) ^ <uint32_t>0x82F63B78 if crc & 1 else crc >> 1
        CRC32C_TABLE[byte] = crc


crc32c_init()


cdef uint32_t crc32c_update(uint32_t crc, const unsigned char *data, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        crc = CRC32C_TABLE[(crc ^ data[i]) & 0xFF] ^ (crc >> 8)
    return crc


def _crc32c(data):
    """CRC-32C (Castagnoli) of ``data`` (bytes), as RFC 4960 appendix B computes it."""
    cdef Py_buffer view
    cdef uint32_t crc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        crc = crc32c_update(<uint32_t>0xFFFFFFFF, <const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return crc ^ <uint32_t>0xFFFFFFFF


def parse(data, max_length=DEFAULT_MAX_LENGTH):
    """Parse the PROXY protocol header at the start of ``data`` (any contiguous bytes-like).

    Returns a ``ProxyHeader`` once ``data`` holds a whole valid header (bytes after it, the
    payload, are ignored), None while ``data`` is a prefix that may still become one, and raises
    ``ProxyError`` as soon as it cannot, or when the header would be longer than ``max_length``
    bytes (16 to ``MAX_LENGTH``; a v1 line never exceeds 107).
    """
    cdef Py_ssize_t cap = _check_max_length(max_length)
    cdef Py_buffer view
    cdef const unsigned char *p
    cdef Py_ssize_t n
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:
        raise TypeError("parse() needs a contiguous bytes-like object") from None
    try:
        n = view.len if view.len < cap else cap
        if n <= 0:
            return None
        p = <const unsigned char *>view.buf
        if p[0] == <unsigned char>V2_SIGNATURE[0]:
            return parse_v2(p, n, cap)
        if p[0] == <unsigned char>V1_PREFIX[0]:
            return parse_v1(p, n, V1_LIMIT if V1_LIMIT < cap else cap)
        raise ProxyError(E_NOT_PROXY)
    finally:
        PyBuffer_Release(&view)


# Version 1 ---------------------------------------------------------------------------------------

cdef object parse_v1(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit):
    cdef Py_ssize_t i, t = -1, avail, end, clen, rlen, start, count = 0
    cdef Py_ssize_t starts[4]
    cdef Py_ssize_t lengths[4]
    cdef bint complete, ok
    cdef const unsigned char *c
    cdef const unsigned char *rest
    cdef unsigned char source[16]
    cdef unsigned char destination[16]
    cdef long source_port, destination_port
    cdef int bits, family
    if memcmp(p, V1_PREFIX, n if n < 6 else 6) != 0:
        raise ProxyError(E_NOT_PROXY)
    end = n if n < limit else limit
    for i in range(6, end):
        if p[i] == 13 or p[i] == 10:
            t = i
            break
    if t < 0:
        if n >= limit:
            raise ProxyError(f"PROXY v1 line has no CRLF within its first {limit} bytes")
        complete = False
        avail = n
    else:
        if p[t] == 10:
            raise ProxyError(E_V1_CR_LF)
        if t + 1 >= limit:
            raise ProxyError(f"PROXY v1 line has no CRLF within its first {limit} bytes")
        if t + 1 >= n:
            complete = False
        elif p[t + 1] != 10:
            raise ProxyError(E_V1_CR_LF)
        else:
            complete = True
        avail = t
    c = p + 6
    clen = avail - 6 if avail > 6 else 0
    if clen >= 4 and memcmp(c, b"TCP4", 4) == 0:
        bits = 4
    elif clen >= 4 and memcmp(c, b"TCP6", 4) == 0:
        bits = 6
    elif clen >= 7 and memcmp(c, b"UNKNOWN", 7) == 0:
        if clen > 7 and c[7] != 32:
            raise ProxyError(E_V1_PROTOCOL)
        if not complete:
            return None
        return ProxyHeader(1, "PROXY", PY_AF_UNSPEC, 0, None, None, avail + 2, ())
    else:
        if not complete and (
                (clen <= 4 and (memcmp(c, b"TCP4", clen) == 0 or memcmp(c, b"TCP6", clen) == 0))
                or (clen <= 7 and memcmp(c, b"UNKNOWN", clen) == 0)):
            return None
        raise ProxyError(E_V1_PROTOCOL)
    rest = c + 4
    rlen = clen - 4
    if rlen == 0:
        if complete:
            raise ProxyError(E_V1_FIELDS)
        return None
    if rest[0] != 32:
        raise ProxyError(E_V1_PROTOCOL)
    for i in range(rlen):
        if not v1_char_ok(rest[i], bits):
            raise ProxyError(E_V1_CHARACTER)
    if not complete:
        return None
    start = 1
    for i in range(1, rlen + 1):
        if i == rlen or rest[i] == 32:
            if count == 4 or i == start:
                raise ProxyError(E_V1_FIELDS)
            starts[count] = start
            lengths[count] = i - start
            count += 1
            start = i + 1
    if count != 4:
        raise ProxyError(E_V1_FIELDS)
    if bits == 4:
        family = AF_INET
        ok = (parse_ipv4(rest + starts[0], lengths[0], source)
              and parse_ipv4(rest + starts[1], lengths[1], destination))
    else:
        family = AF_INET6
        ok = (parse_ipv6(rest + starts[0], lengths[0], source)
              and parse_ipv6(rest + starts[1], lengths[1], destination))
    if not ok:
        raise ProxyError(f"invalid IPv{bits} address in PROXY v1 line")
    source_port = parse_port(rest + starts[2], lengths[2])
    destination_port = parse_port(rest + starts[3], lengths[3]) if source_port >= 0 else -1
    if destination_port < 0:
        raise ProxyError(E_V1_PORT)
    return ProxyHeader(1, "PROXY", PY_AF_INET if bits == 4 else PY_AF_INET6, PY_SOCK_STREAM,
                       inet_address(family, source, source_port),
                       inet_address(family, destination, destination_port), avail + 2, ())


cdef inline bint v1_char_ok(unsigned char c, int bits) noexcept:
    if 48 <= c <= 57 or c == 46 or c == 32:
        return True
    return bits == 6 and (c == 58 or 97 <= c <= 102 or 65 <= c <= 70)


cdef inline int hex_value(unsigned char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef bint parse_ipv4(const unsigned char *s, Py_ssize_t n, unsigned char *out) noexcept:
    """A dotted quad of decimal 0-255 without leading zeros into out[0:4]."""
    cdef Py_ssize_t i = 0, j
    cdef int parts = 0, value
    while True:
        j = i
        value = 0
        while j < n and 48 <= s[j] <= 57:
            if j - i == 3:
                return False
            value = value * 10 + (s[j] - 48)
            j += 1
        if j == i or (j - i > 1 and s[i] == 48) or value > 255:
            return False
        out[parts] = <unsigned char>value
        parts += 1
        if j == n:
            return parts == 4
        if s[j] != 46 or parts == 4:
            return False
        i = j + 1


cdef bint parse_ipv6(const unsigned char *s, Py_ssize_t n, unsigned char *out) noexcept:
    """An IPv6 literal as inet_pton reads it into out[0:16]: 1-4 hex digits a group, one "::"
    at most, an optional dotted quad at the end."""
    cdef unsigned int groups[8]
    cdef unsigned char quad[4]
    cdef int count = 0, gap = -1, k, tail
    cdef Py_ssize_t i = 0, j
    cdef unsigned int value
    if n < 2:
        return False
    if s[0] == 58:
        if s[1] != 58:
            return False
        gap = 0
        i = 2
    while i < n:
        j = i
        while j < n and hex_value(s[j]) >= 0:
            j += 1
        if j < n and s[j] == 46:
            if count > 6 or not parse_ipv4(s + i, n - i, quad):
                return False
            groups[count] = <unsigned int>quad[0] << 8 | quad[1]
            groups[count + 1] = <unsigned int>quad[2] << 8 | quad[3]
            count += 2
            break
        if j == i or j - i > 4 or count == 8:
            return False
        value = 0
        for k in range(j - i):
            value = value * 16 + <unsigned int>hex_value(s[i + k])
        groups[count] = value
        count += 1
        i = j
        if i == n:
            break
        if s[i] != 58:
            return False
        if i + 1 < n and s[i + 1] == 58:
            if gap >= 0:
                return False
            gap = count
            i += 2
        else:
            i += 1
            if i == n:
                return False
    if gap < 0:
        if count != 8:
            return False
        gap = 8
    elif count > 7:
        return False
    for k in range(16):
        out[k] = 0
    for k in range(gap):
        out[2 * k] = <unsigned char>(groups[k] >> 8)
        out[2 * k + 1] = <unsigned char>(groups[k] & 0xFF)
    tail = count - gap
    for k in range(tail):
        out[2 * (8 - tail + k)] = <unsigned char>(groups[gap + k] >> 8)
        out[2 * (8 - tail + k) + 1] = <unsigned char>(groups[gap + k] & 0xFF)
    return True


cdef long parse_port(const unsigned char *s, Py_ssize_t n) noexcept:
    """0-65535 in decimal without sign or leading zeros; -1 if it is not one."""
    cdef Py_ssize_t i
    cdef long value = 0
    if n < 1 or n > 5 or (n > 1 and s[0] == 48):
        return -1
    for i in range(n):
        if not 48 <= s[i] <= 57:
            return -1
        value = value * 10 + (s[i] - 48)
    return value if value <= 0xFFFF else -1


cdef object inet_address(int family, const unsigned char *packed, long port):
    cdef char host[64]
    if inet_ntop(family, packed, host, sizeof(host)) == NULL:
        raise ProxyError("unprintable address")  # cannot happen for AF_INET/AF_INET6
    if family == AF_INET:
        return (host.decode("ascii"), port)
    return (host.decode("ascii"), port, 0, 0)


# Version 2 ---------------------------------------------------------------------------------------

cdef object parse_v2(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_length):
    cdef int version, command, byte
    cdef Py_ssize_t size, block, total, width, ports
    if memcmp(p, V2_SIGNATURE, n if n < 12 else 12) != 0:
        raise ProxyError(E_NOT_PROXY)
    if n < 13:
        return None
    version = p[12] >> 4
    command = p[12] & 0x0F
    if version != 2:
        raise ProxyError(f"unsupported PROXY v2 version {version}")
    if command > 1:
        raise ProxyError(f"invalid PROXY v2 command {command}")
    if n < 14:
        return None
    byte = p[13]
    entry = _V2_FAMILIES.get(byte)
    if entry is None:
        raise ProxyError(f"invalid PROXY v2 family and protocol byte 0x{byte:02x}")
    family, protocol, size = entry
    if n < 16:
        return None
    block = <Py_ssize_t>p[14] << 8 | p[15]
    total = 16 + block
    if total > max_length:
        raise ProxyError(f"PROXY v2 header of {total} bytes exceeds the limit of {max_length}")
    if command == 1 and block < size:
        raise ProxyError(f"PROXY v2 address block of {block} bytes is too short for its "
                         f"family ({size} bytes)")
    if n < total:
        return None
    # From here on 16 + size <= total <= n: every address byte is in the input.
    if command == 0:
        return ProxyHeader(2, "LOCAL", PY_AF_UNSPEC, 0, None, None, total, ())
    if size == 0:
        return ProxyHeader(2, "PROXY", PY_AF_UNSPEC, 0, None, None, total, ())
    if family is PY_AF_UNIX:
        source = unix_address(p + 16)
        destination = unix_address(p + 16 + UNIX_PATH)
    else:
        width = 4 if family is PY_AF_INET else 16
        ports = 16 + 2 * width
        source = inet_address(AF_INET if width == 4 else AF_INET6, p + 16,
                              <long>p[ports] << 8 | p[ports + 1])
        destination = inet_address(AF_INET if width == 4 else AF_INET6, p + 16 + width,
                                   <long>p[ports + 2] << 8 | p[ports + 3])
    tlvs = parse_tlvs(p, 16 + size, total)
    return ProxyHeader(2, "PROXY", family, protocol, source, destination, total, tlvs)


cdef object unix_address(const unsigned char *field):
    """The 108 bytes at ``field`` as the socket module gives an AF_UNIX address: the path up to
    its NUL (str), bytes for a Linux abstract name (leading NUL; trailing NULs stripped), ''."""
    cdef Py_ssize_t end = UNIX_PATH, k = 0
    while end > 0 and field[end - 1] == 0:
        end -= 1
    if end == 0:
        return ""
    if field[0] == 0:
        return (<const char *>field)[:end]
    while k < end and field[k] != 0:
        k += 1
    return _fsdecode((<const char *>field)[:k])


cdef tuple parse_tlvs(const unsigned char *p, Py_ssize_t offset, Py_ssize_t total):
    """The TLVs in p[offset:total] (the caller checked total <= the input's length)."""
    cdef list tlvs = []
    cdef Py_ssize_t length, crc_at = -1
    cdef int kind
    cdef uint32_t expected, crc
    while offset < total:
        if total - offset < 3:
            raise ProxyError(f"PROXY v2 TLV at byte {offset} overruns the header")
        kind = p[offset]
        length = <Py_ssize_t>p[offset + 1] << 8 | p[offset + 2]
        if length > total - offset - 3:
            raise ProxyError(f"PROXY v2 TLV at byte {offset} overruns the header")
        if kind == TLV_CRC32C:
            if length != 4:
                raise ProxyError(E_V2_CRC_LENGTH)
            if crc_at >= 0:
                raise ProxyError(E_V2_CRC_TWICE)
            crc_at = offset + 3
        tlvs.append((kind, (<const char *>p)[offset + 3:offset + 3 + length]))
        offset += 3 + length
    if crc_at >= 0:
        expected = (<uint32_t>p[crc_at] << 24 | <uint32_t>p[crc_at + 1] << 16
                    | <uint32_t>p[crc_at + 2] << 8 | <uint32_t>p[crc_at + 3])
        crc = crc32c_update(<uint32_t>0xFFFFFFFF, p, crc_at)
        crc = crc32c_update(crc, ZEROS, 4)
        crc = crc32c_update(crc, p + crc_at + 4, total - crc_at - 4)
        if crc ^ <uint32_t>0xFFFFFFFF != expected:
            raise ProxyError(E_V2_CRC)
    return tuple(tlvs)
