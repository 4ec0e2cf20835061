"""The PROXY protocol header parser in pure Python: the reference for ``_proxy.pyx``.

Both parsers take the same input to the same result, field for field, and fail with the same
``ProxyError`` message; ``tests/test_proxy.py`` holds them to it. ``ProxyError`` and
``ProxyHeader`` are defined here once and the compiled parser uses them, so one ``except`` clause
and one ``isinstance`` check serve either implementation. The rules follow HAProxy's
specification of the protocol (proxy-protocol.txt, versions 1 and 2); ``fastserver.proxy``
documents them for callers.
"""

import operator
import socket
from dataclasses import dataclass
from os import fsdecode

__all__ = ["ProxyError", "ProxyHeader", "parse", "MAX_LENGTH", "MAX_V1_LENGTH",
           "DEFAULT_MAX_LENGTH"]

MAX_V1_LENGTH = 107
"""The longest version 1 line, CRLF included (the specification's worst case)."""
MAX_LENGTH = 16 + 0xFFFF
"""The longest version 2 header: 16 fixed bytes and a 16-bit block length."""
DEFAULT_MAX_LENGTH = 4096
"""The cap ``parse`` and ``read_header`` put on a header unless told otherwise: far above what
proxies send (addresses and a few TLVs: HAProxy, cloud load balancers stay well under 1 KiB),
far below the 64 KiB a version 2 length field can announce."""
MIN_MAX_LENGTH = 16
"""The smallest ``max_length`` accepted: the fixed part of a version 2 header."""

# Type bytes of the version 2 TLVs the specification registers.
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "

# Family/protocol bytes a version 2 header may carry -> (family, protocol, address block size).
_V2_FAMILIES = {
    0x00: (socket.AF_UNSPEC, 0, 0),
    0x11: (socket.AF_INET, socket.SOCK_STREAM, 12),
    0x12: (socket.AF_INET, socket.SOCK_DGRAM, 12),
    0x21: (socket.AF_INET6, socket.SOCK_STREAM, 36),
    0x22: (socket.AF_INET6, socket.SOCK_DGRAM, 36),
    0x31: (socket.AF_UNIX, socket.SOCK_STREAM, 216),
    0x32: (socket.AF_UNIX, socket.SOCK_DGRAM, 216),
}
_UNIX_PATH = 108  # each AF_UNIX address in a version 2 block

_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_V1_CHARS = {4: frozenset(b"0123456789. "), 6: frozenset(b"0123456789abcdefABCDEF:. ")}

E_NOT_PROXY = "not a PROXY protocol header"
E_V1_CR_LF = "PROXY v1 line has a CR or LF outside its CRLF end"
E_V1_PROTOCOL = "invalid PROXY v1 protocol (TCP4, TCP6 or UNKNOWN expected)"
E_V1_CHARACTER = "invalid character in PROXY v1 line"
E_V1_FIELDS = ("PROXY v1 line must have exactly 4 fields after the protocol, each after a "
               "single space")
E_V1_PORT = "invalid port in PROXY v1 line"
E_V2_CRC_LENGTH = "PROXY v2 CRC32C TLV must be 4 bytes long"
E_V2_CRC_TWICE = "PROXY v2 header has more than one CRC32C TLV"
E_V2_CRC = "PROXY v2 header fails its CRC32C checksum"


class ProxyError(ValueError):
    """A malformed, unsupported or oversized PROXY protocol header, or none at all."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    ``version``: 1 (text) or 2 (binary). ``command``: "PROXY" (relayed on behalf of a client) or
    "LOCAL" (the proxy's own connection, e.g. a health check; version 2 only). ``family``:
    ``socket.AF_INET``, ``AF_INET6``, ``AF_UNIX`` or ``AF_UNSPEC`` (v1 "UNKNOWN", v2 UNSPEC and
    every LOCAL header). ``protocol``: ``socket.SOCK_STREAM``, ``SOCK_DGRAM`` or 0 (unspecified).
    ``source``/``destination``: the client's and the proxy's addresses as the socket module
    writes them (``('192.0.2.1', 5678)``, ``('2001:db8::1', 443, 0, 0)``, an AF_UNIX path, or
    bytes for a Linux abstract name), or None when the header carries none: then the real peer
    address stands. ``length``: the header's size in bytes; the payload starts there. ``tlvs``:
    version 2's (type, value) pairs in order, () otherwise.
    """

    version: int
    command: str
    family: int
    protocol: int
    source: object
    destination: object
    length: int
    tlvs: tuple = ()

    def tlv(self, kind, default=None):
        """The value of the first TLV of type ``kind``, or ``default``."""
        for tlv_kind, value in self.tlvs:
            if tlv_kind == kind:
                return value
        return default


def _check_max_length(max_length):
    max_length = operator.index(max_length)
    if not MIN_MAX_LENGTH <= max_length <= MAX_LENGTH:
        raise ValueError(f"max_length must be between {MIN_MAX_LENGTH} and {MAX_LENGTH}, "
                         f"not {max_length}")
    return max_length


def parse(data, max_length=DEFAULT_MAX_LENGTH):
    """Parse the PROXY protocol header at the start of ``data`` (any contiguous bytes-like).

    Returns a ``ProxyHeader`` once ``data`` holds a whole valid header (bytes after it, the
    payload, are ignored), None while ``data`` is a prefix that may still become one, and raises
    ``ProxyError`` as soon as it cannot, or when the header would be longer than ``max_length``
    bytes (16 to ``MAX_LENGTH``; a v1 line never exceeds 107).
    """
    max_length = _check_max_length(max_length)
    with memoryview(data) as view:
        if not view.c_contiguous:
            raise TypeError("parse() needs a contiguous bytes-like object")
        with view.cast("B") as octets:
            head = bytes(octets[:max_length])
    if not head:
        return None
    if head[0] == V2_SIGNATURE[0]:
        return _parse_v2(head, max_length)
    if head[0] == V1_PREFIX[0]:
        return _parse_v1(head, min(MAX_V1_LENGTH, max_length))
    raise ProxyError(E_NOT_PROXY)


# Version 1 ---------------------------------------------------------------------------------------

def _parse_v1(data, limit):
    n = len(data)
    if data[:6] != V1_PREFIX[:n]:
        raise ProxyError(E_NOT_PROXY)
    end = min(n, limit)
    cr = data.find(b"\r", 6, end)
    lf = data.find(b"\n", 6, end)
    t = cr if lf < 0 else lf if cr < 0 else min(cr, lf)
    if t < 0:
        if n >= limit:
            raise ProxyError(f"PROXY v1 line has no CRLF within its first {limit} bytes")
        complete = False
        avail = n
    else:
        if data[t] == 0x0A:
            raise ProxyError(E_V1_CR_LF)
        if t + 1 >= limit:
            raise ProxyError(f"PROXY v1 line has no CRLF within its first {limit} bytes")
        if t + 1 >= n:
            complete = False
        elif data[t + 1] != 0x0A:
            raise ProxyError(E_V1_CR_LF)
        else:
            complete = True
        avail = t
    content = data[6:avail]
    if content[:4] == b"TCP4":
        bits = 4
    elif content[:4] == b"TCP6":
        bits = 6
    elif content[:7] == b"UNKNOWN":
        rest = content[7:]
        if rest and rest[0] != 0x20:
            raise ProxyError(E_V1_PROTOCOL)
        if not complete:
            return None
        return ProxyHeader(1, "PROXY", socket.AF_UNSPEC, 0, None, None, avail + 2, ())
    else:
        if not complete and (b"TCP4".startswith(content) or b"TCP6".startswith(content)
                             or b"UNKNOWN".startswith(content)):
            return None
        raise ProxyError(E_V1_PROTOCOL)
    rest = content[4:]
    if not rest:
        if complete:
            raise ProxyError(E_V1_FIELDS)
        return None
    if rest[0] != 0x20:
        raise ProxyError(E_V1_PROTOCOL)
    allowed = _V1_CHARS[bits]
    if any(c not in allowed for c in rest):
        raise ProxyError(E_V1_CHARACTER)
    if not complete:
        return None
    fields = rest[1:].split(b" ")
    if len(fields) != 4 or not all(fields):
        raise ProxyError(E_V1_FIELDS)
    if bits == 4:
        family, packer, name = socket.AF_INET, _parse_ipv4, "IPv4"
    else:
        family, packer, name = socket.AF_INET6, _parse_ipv6, "IPv6"
    packed_source = packer(fields[0])
    packed_destination = packer(fields[1]) if packed_source is not None else None
    if packed_destination is None:
        raise ProxyError(f"invalid {name} address in PROXY v1 line")
    source_port = _parse_port(fields[2])
    destination_port = _parse_port(fields[3]) if source_port >= 0 else -1
    if destination_port < 0:
        raise ProxyError(E_V1_PORT)
    source = _inet_address(family, packed_source, source_port)
    destination = _inet_address(family, packed_destination, destination_port)
    return ProxyHeader(1, "PROXY", family, socket.SOCK_STREAM, source, destination, avail + 2,
                       ())


def _parse_ipv4(text):
    """4 bytes for a dotted quad of decimal 0-255 without leading zeros; None if it is not one."""
    parts = text.split(b".")
    if len(parts) != 4:
        return None
    out = bytearray(4)
    for i, part in enumerate(parts):
        if not 1 <= len(part) <= 3 or any(c not in _DIGITS for c in part):
            return None
        if len(part) > 1 and part[0] == 0x30:
            return None
        value = int(part)
        if value > 255:
            return None
        out[i] = value
    return bytes(out)


def _parse_ipv6(text):
    """16 bytes for an IPv6 literal as inet_pton reads it (one "::" at most, an optional dotted
    quad at the end, 1-4 hex digits a group); None if it is not one."""
    n = len(text)
    if n < 2:
        return None
    groups = []
    gap = -1
    i = 0
    if text[0] == 0x3A:
        if text[1] != 0x3A:
            return None
        gap = 0
        i = 2
    while i < n:
        j = i
        while j < n and text[j] in _HEX:
            j += 1
        if j < n and text[j] == 0x2E:
            if len(groups) > 6:
                return None
            quad = _parse_ipv4(text[i:])
            if quad is None:
                return None
            groups.append(quad[0] << 8 | quad[1])
            groups.append(quad[2] << 8 | quad[3])
            break
        if j == i or j - i > 4 or len(groups) == 8:
            return None
        groups.append(int(text[i:j], 16))
        i = j
        if i == n:
            break
        if text[i] != 0x3A:
            return None
        if i + 1 < n and text[i + 1] == 0x3A:
            if gap >= 0:
                return None
            gap = len(groups)
            i += 2
        else:
            i += 1
            if i == n:
                return None
    if gap < 0:
        if len(groups) != 8:
            return None
    elif len(groups) > 7:
        return None
    else:
        groups[gap:gap] = [0] * (8 - len(groups))
    return b"".join(group.to_bytes(2, "big") for group in groups)


def _parse_port(text):
    """0-65535 in decimal without sign or leading zeros; -1 if it is not one."""
    if not 1 <= len(text) <= 5 or any(c not in _DIGITS for c in text):
        return -1
    if len(text) > 1 and text[0] == 0x30:
        return -1
    value = int(text)
    return value if value <= 0xFFFF else -1


def _inet_address(family, packed, port):
    host = socket.inet_ntop(family, packed)
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


# Version 2 ---------------------------------------------------------------------------------------

def _parse_v2(data, max_length):
    n = len(data)
    if data[:12] != V2_SIGNATURE[:n]:
        raise ProxyError(E_NOT_PROXY)
    if n < 13:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyError(f"unsupported PROXY v2 version {version}")
    if command > 1:
        raise ProxyError(f"invalid PROXY v2 command {command}")
    if n < 14:
        return None
    try:
        family, protocol, size = _V2_FAMILIES[data[13]]
    except KeyError:
        raise ProxyError(f"invalid PROXY v2 family and protocol byte 0x{data[13]:02x}") from None
    if n < 16:
        return None
    block = data[14] << 8 | data[15]
    total = 16 + block
    if total > max_length:
        raise ProxyError(f"PROXY v2 header of {total} bytes exceeds the limit of {max_length}")
    if command == 1 and block < size:
        raise ProxyError(f"PROXY v2 address block of {block} bytes is too short for its "
                         f"family ({size} bytes)")
    if n < total:
        return None
    if command == 0:
        return ProxyHeader(2, "LOCAL", socket.AF_UNSPEC, 0, None, None, total, ())
    if size == 0:
        return ProxyHeader(2, "PROXY", socket.AF_UNSPEC, 0, None, None, total, ())
    if family == socket.AF_UNIX:
        source = _unix_address(data[16:16 + _UNIX_PATH])
        destination = _unix_address(data[16 + _UNIX_PATH:16 + 2 * _UNIX_PATH])
    else:
        width = 4 if family == socket.AF_INET else 16
        ports = 16 + 2 * width
        source = _inet_address(family, data[16:16 + width],
                               data[ports] << 8 | data[ports + 1])
        destination = _inet_address(family, data[16 + width:ports],
                                    data[ports + 2] << 8 | data[ports + 3])
    tlvs = _parse_tlvs(data, 16 + size, total)
    return ProxyHeader(2, "PROXY", family, protocol, source, destination, total, tlvs)


def _unix_address(field):
    """An AF_UNIX address as the socket module gives it: the path up to its NUL (str), bytes for
    a Linux abstract name (leading NUL; trailing NULs stripped), '' for none."""
    field = field.rstrip(b"\x00")
    if not field:
        return ""
    if field[0] == 0:
        return field
    return fsdecode(field.split(b"\x00", 1)[0])


def _parse_tlvs(data, offset, total):
    tlvs = []
    crc_at = -1
    while offset < total:
        if total - offset < 3:
            raise ProxyError(f"PROXY v2 TLV at byte {offset} overruns the header")
        kind = data[offset]
        length = data[offset + 1] << 8 | data[offset + 2]
        if length > total - offset - 3:
            raise ProxyError(f"PROXY v2 TLV at byte {offset} overruns the header")
        if kind == PP2_TYPE_CRC32C:
            if length != 4:
                raise ProxyError(E_V2_CRC_LENGTH)
            if crc_at >= 0:
                raise ProxyError(E_V2_CRC_TWICE)
            crc_at = offset + 3
        tlvs.append((kind, data[offset + 3:offset + 3 + length]))
        offset += 3 + length
    if crc_at >= 0:
        expected = int.from_bytes(data[crc_at:crc_at + 4], "big")
        if _crc32c(data[:crc_at] + b"\x00\x00\x00\x00" + data[crc_at + 4:total]) != expected:
            raise ProxyError(E_V2_CRC)
    return tuple(tlvs)


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def _crc32c(data):
    """CRC-32C (Castagnoli), as RFC 4960 appendix B computes it."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
