"""The PROXY protocol parser (compiled and pure, held to the same results) and read_header.

Every parser test runs on both implementations (the ``impl`` fixture); the agreement tests and
the hypothesis fuzz tests run both on the same input and compare results, error messages
included. The expectations follow HAProxy's proxy-protocol.txt (versions 1 and 2).
"""

import itertools
import os
import platform
import socket
import struct
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastserver import _proxy_py, proxy
from fastserver._proxy_py import ProxyError, ProxyHeader

try:
    from fastserver import _proxy as _compiled
except ImportError:  # not built
    _compiled = None

NO_EXTENSIONS = os.environ.get("FASTSERVER_NO_EXTENSIONS", "") not in ("", "0")
TIMEOUT = 5.0

AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6,
                                         socket.AF_UNIX)
STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _require_compiled():
    if _compiled is None:
        if NO_EXTENSIONS:
            pytest.skip("FASTSERVER_NO_EXTENSIONS is set: no compiled parser")
        pytest.fail("fastserver._proxy is missing (a broken build?): set "
                    "FASTSERVER_NO_EXTENSIONS=1 to test without the extension")
    return _compiled


@pytest.fixture(params=["cython", "python"])
def impl(request):
    """The parser module under test."""
    return _require_compiled() if request.param == "cython" else _proxy_py


@pytest.fixture
def both():
    """(compiled, pure), for the tests that compare them."""
    return _require_compiled(), _proxy_py


# --- building headers -----------------------------------------------------------------------

def crc32c(data):
    """Bit by bit, independent of the parsers' table-driven CRC-32C."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def tlv(kind, value):
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def v2(block=b"", command=1, fam=0x11, version=2, length=None):
    """A version 2 header around ``block`` (its length field ``length`` if given)."""
    size = len(block) if length is None else length
    return SIG + bytes([version << 4 | command, fam]) + size.to_bytes(2, "big") + block


def with_crc(header, tlvs_before=b""):
    """``header`` with ``tlvs_before`` and a valid CRC32C TLV appended, length fixed up."""
    body = header[16:] + tlvs_before + tlv(0x03, b"\x00" * 4)
    whole = header[:14] + len(body).to_bytes(2, "big") + body
    return whole[:-4] + crc32c(whole).to_bytes(4, "big")


def inet4(src, dst, sport, dport):
    return (socket.inet_pton(AF_INET, src) + socket.inet_pton(AF_INET, dst)
            + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))


def inet6(src, dst, sport, dport):
    return (socket.inet_pton(AF_INET6, src) + socket.inet_pton(AF_INET6, dst)
            + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))


def unix(src, dst):
    return src.ljust(108, b"\x00") + dst.ljust(108, b"\x00")


def H(version, command, family, protocol, source, destination, length, tlvs=()):  # noqa: N802
    return ProxyHeader(version, command, family, protocol, source, destination, length, tlvs)


def line(text):
    return text.encode("ascii") + b"\r\n"


WORST_V1 = line("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535")
LONGEST_TCP6 = line("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535")
TLVS = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x04, b"") + tlv(0xE0, b"\x00" * 300)
CRC_HEADER = with_crc(v2(inet4("1.2.3.4", "5.6.7.8", 1, 2)), tlv(0x05, b"x" * 128))

# (header bytes, what it parses to)
VALID = [
    (line("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443"),
     H(1, "PROXY", AF_INET, STREAM, ("192.168.0.1", 56324), ("192.168.0.11", 443), 47)),
    (line("PROXY TCP4 255.255.255.255 0.0.0.0 65535 0"),
     H(1, "PROXY", AF_INET, STREAM, ("255.255.255.255", 65535), ("0.0.0.0", 0), 44)),
    (line("PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1 2"),
     H(1, "PROXY", AF_INET6, STREAM, ("2001:db8::1", 1, 0, 0), ("::1", 2, 0, 0), 41)),
    (line("PROXY TCP6 :: 0001:0002:0003:0004:0005:0006:0007:0008 80 8080"),
     H(1, "PROXY", AF_INET6, STREAM, ("::", 80, 0, 0), ("1:2:3:4:5:6:7:8", 8080, 0, 0), 63)),
    (line("PROXY TCP6 ::ffff:192.0.2.1 1:2:3:4:5:6:1.2.3.4 10 20"),
     H(1, "PROXY", AF_INET6, STREAM, ("::ffff:192.0.2.1", 10, 0, 0),
       ("1:2:3:4:5:6:102:304", 20, 0, 0), 55)),
    (line("PROXY TCP6 1:: 1:2:3:4:5:6:7:: 1 1"),
     H(1, "PROXY", AF_INET6, STREAM, ("1::", 1, 0, 0), ("1:2:3:4:5:6:7:0", 1, 0, 0), 36)),
    (LONGEST_TCP6,
     H(1, "PROXY", AF_INET6, STREAM, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 0, 0),
       ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, 0, 0), 104)),
    (line("PROXY UNKNOWN"), H(1, "PROXY", AF_UNSPEC, 0, None, None, 15)),
    (line("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2"), H(1, "PROXY", AF_UNSPEC, 0, None, None, 35)),
    (b"PROXY UNKNOWN anything\x00\xff goes\r\n", H(1, "PROXY", AF_UNSPEC, 0, None, None, 31)),
    (WORST_V1, H(1, "PROXY", AF_UNSPEC, 0, None, None, 107)),
    (v2(inet4("1.2.3.4", "5.6.7.8", 80, 443)),
     H(2, "PROXY", AF_INET, STREAM, ("1.2.3.4", 80), ("5.6.7.8", 443), 28)),
    (v2(inet4("10.0.0.1", "10.0.0.2", 65535, 0), fam=0x12),
     H(2, "PROXY", AF_INET, DGRAM, ("10.0.0.1", 65535), ("10.0.0.2", 0), 28)),
    (v2(inet6("2001:db8::1", "::ffff:1.2.3.4", 1234, 80), fam=0x21),
     H(2, "PROXY", AF_INET6, STREAM, ("2001:db8::1", 1234, 0, 0),
       ("::ffff:1.2.3.4", 80, 0, 0), 52)),
    (v2(inet6("::", "fe80::1", 0, 53), fam=0x22),
     H(2, "PROXY", AF_INET6, DGRAM, ("::", 0, 0, 0), ("fe80::1", 53, 0, 0), 52)),
    (v2(unix(b"/run/client.sock", b"/run/server.sock"), fam=0x31),
     H(2, "PROXY", AF_UNIX, STREAM, "/run/client.sock", "/run/server.sock", 232)),
    (v2(unix(b"\x00abstract", b""), fam=0x32),
     H(2, "PROXY", AF_UNIX, DGRAM, b"\x00abstract", "", 232)),
    (v2(unix(b"caf\xc3\xa9\x00junk", b"\xff\xfe"), fam=0x31),
     H(2, "PROXY", AF_UNIX, STREAM, "caf\xe9", os.fsdecode(b"\xff\xfe"), 232)),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + TLVS),
     H(2, "PROXY", AF_INET, STREAM, ("1.2.3.4", 1), ("5.6.7.8", 2), 28 + len(TLVS),
       ((1, b"h2"), (2, b"example.com"), (4, b""), (0xE0, b"\x00" * 300)))),
    (CRC_HEADER,
     H(2, "PROXY", AF_INET, STREAM, ("1.2.3.4", 1), ("5.6.7.8", 2), len(CRC_HEADER),
       ((5, b"x" * 128), (3, CRC_HEADER[-4:])))),
    (v2(b"", command=0, fam=0x00), H(2, "LOCAL", AF_UNSPEC, 0, None, None, 16)),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\xff\xff", command=0, fam=0x11),
     H(2, "LOCAL", AF_UNSPEC, 0, None, None, 30)),
    (v2(b"", command=0, fam=0x21), H(2, "LOCAL", AF_UNSPEC, 0, None, None, 16)),
    (v2(b"opaque", command=1, fam=0x00), H(2, "PROXY", AF_UNSPEC, 0, None, None, 22)),
]
VALID_IDS = [f"{i}-{data[:20]!r}" for i, (data, _) in enumerate(VALID)]


def _v1_bad(text):
    return line(text) if isinstance(text, str) else text


# (input, a fragment of the ProxyError message)
MALFORMED = [
    (b"GET / HTTP/1.1\r\n", "not a PROXY"),
    (b"\x16\x03\x01\x02\x00", "not a PROXY"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY"),
    (b"PROXZ", "not a PROXY"),
    (b"PROXYTCP4", "not a PROXY"),
    (b"\x00", "not a PROXY"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CR or LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR or LF"),
    (b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", "CR or LF"),
    (b"PROXY UNKNOWN\n", "CR or LF"),
    (b"PROXY UNKNOWN\r\r\n", "CR or LF"),
    (b"PROXY \r\n", "protocol"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    (b"PROXY TCP41.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    (b"PROXY UNKNOWNX\r\n", "protocol"),
    (b"PROXY UNKNOW\r\n", "protocol"),
    (b"PROXY TCP\r\n", "protocol"),
    (b"PROXY TCP4\r\n", "exactly 4 fields"),
    (b"PROXY TCP4 \r\n", "exactly 4 fields"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "exactly 4 fields"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "exactly 4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "exactly 4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "exactly 4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "exactly 4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "exactly 4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\t\r\n", "invalid character"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "invalid character"),
    (b"PROXY TCP4 1.2.3.4/8 5.6.7.8 1 2\r\n", "invalid character"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "invalid character"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "invalid character"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n", "invalid character"),
    (b"PROXY TCP6 ::1%eth0 ::1 1 2\r\n", "invalid character"),
    (b"PROXY TCP6 [::1] ::1 1 2\r\n", "invalid character"),
    (b"PROXY TCP6 g:: ::1 1 2\r\n", "invalid character"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n", "invalid character"),
    (b"PROXY UNKNOWN " + b"x" * 93 + b"\r\n", "no CRLF within its first 107 bytes"),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\r\n", "no CRLF within its first 107 bytes"),
    (b"PROXY UNKNOWN " + b"x" * 500, "no CRLF within its first 107 bytes"),
    (b"PROXY TCP6 " + b"1" * 96, "no CRLF within its first 107 bytes"),
    (b"\r\n\r\n\x00\r\nQUIx", "not a PROXY"),
    (b"\r\n\r\n\x01", "not a PROXY"),
    (b"\r\r", "not a PROXY"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2), version=1), "version 1"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2), version=3), "version 3"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2), version=0, command=0), "version 0"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2), command=2), "command 2"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2), command=15), "command 15"),
    (v2(b"", command=0, fam=0x01), "byte 0x01"),
    (v2(b"", fam=0x10), "byte 0x10"),
    (v2(b"", fam=0x13), "byte 0x13"),
    (v2(b"", fam=0x30), "byte 0x30"),
    (v2(b"", fam=0x41), "byte 0x41"),
    (v2(b"", fam=0xFF), "byte 0xff"),
    (v2(b"", fam=0x11), "too short"),
    (v2(b"\x00" * 11, fam=0x11), "11 bytes is too short"),
    (v2(b"\x00" * 35, fam=0x21), "35 bytes is too short"),
    (v2(b"\x00" * 215, fam=0x31), "215 bytes is too short"),
    (v2(b"", length=0xFFFF), "65551 bytes exceeds the limit of 4096"),
    (v2(b"", length=4081), "4097 bytes exceeds the limit of 4096"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01"), "TLV at byte 28 overruns"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00"), "TLV at byte 28 overruns"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00\x01"), "TLV at byte 28 overruns"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(1, b"ab") + b"\x02\x01\x00" + b"x" * 255),
     "TLV at byte 33 overruns"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(3, b"abc")), "CRC32C TLV must be 4 bytes"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(3, b"abcd") + tlv(3, b"abcd")),
     "more than one CRC32C"),
    (v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(3, b"abcd")), "CRC32C checksum"),
]
for _text, _fragment in [
    ("PROXY TCP4 256.1.1.1 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 01.2.3.4 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3.4 5.6.7.08 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3.4 5.6.7.00 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1..2.3 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 .1.2.3 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3.4. 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3.1000 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1234 5.6.7.8 1 2", "invalid IPv4 address"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2", "invalid IPv4 address"),
    ("PROXY TCP6 1.2.3.4 ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 ::: ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 1:::2 ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 1::2::3 ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 12345:: ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 :1:: ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 1::2: ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 : ::1 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 ::1 ::ffff:1.2.3.256 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 ::1 ::ffff:01.2.3.4 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 ::1 1:2:3:4:5:6:7:1.2.3.4 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 ::1 ::1.2.3.4:5 1 2", "invalid IPv6 address"),
    ("PROXY TCP6 ::1 ::a1.2.3.4 1 2", "invalid IPv6 address"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2", "invalid port"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999", "invalid port"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8 100000 2", "invalid port"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8 01 2", "invalid port"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8 1 00", "invalid port"),
    ("PROXY TCP6 ::1 ::1 1a 2", "invalid port"),
    ("PROXY TCP6 ::1 ::1 1 2.", "invalid port"),
    ("PROXY TCP4 1.2.3.4 5.6.7.8 1 .", "invalid port"),
]:
    MALFORMED.append((line(_text), _fragment))
MALFORMED_IDS = [f"{i}-{fragment}" for i, (_, fragment) in enumerate(MALFORMED)]


def outcome(module, data, max_length=proxy.DEFAULT_MAX_LENGTH):
    """("ok", header or None) or ("error", message): what ``module.parse`` makes of ``data``."""
    try:
        return ("ok", module.parse(data, max_length))
    except ProxyError as exc:
        assert type(exc) is ProxyError
        return ("error", str(exc))


# --- valid headers --------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "expected"), VALID, ids=VALID_IDS)
def test_valid_header(impl, data, expected):
    header = impl.parse(data)
    assert header == expected
    assert header.length == len(data)
    assert type(header.version) is int and type(header.length) is int
    assert all(type(kind) is int and type(value) is bytes for kind, value in header.tlvs)
    # Whatever follows (the payload) is not the parser's business.
    assert impl.parse(data + b"GET / HTTP/1.1\r\n\r\n" + b"\x00" * 100) == expected
    assert impl.parse(data + data) == expected


@pytest.mark.parametrize(("data", "expected"), VALID, ids=VALID_IDS)
def test_every_prefix_of_a_valid_header_is_incomplete(impl, data, expected):
    for cut in range(len(data)):
        assert impl.parse(data[:cut]) is None, (cut, data[:cut])


def test_fields_of_v1_tcp4(impl):
    header = impl.parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 8080\r\npayload")
    assert header.version == 1
    assert header.command == "PROXY"
    assert header.family == socket.AF_INET and isinstance(header.family, socket.AddressFamily)
    assert header.protocol == socket.SOCK_STREAM
    assert header.source == ("192.0.2.7", 40000)
    assert header.destination == ("198.51.100.1", 8080)
    assert header.length == 46
    assert header.tlvs == ()
    assert header.tlv(1) is None and header.tlv(1, b"") == b""


def test_fields_of_v2_with_tlvs(impl):
    data = v2(inet6("2001:db8::7", "2001:db8::8", 5, 6) + tlv(2, b"host") + tlv(2, b"again"),
              fam=0x21)
    header = impl.parse(data)
    assert (header.version, header.command, header.family, header.protocol) == (
        2, "PROXY", AF_INET6, STREAM)
    assert header.source == ("2001:db8::7", 5, 0, 0)
    assert header.destination == ("2001:db8::8", 6, 0, 0)
    assert header.length == 16 + 36 + 7 + 8
    assert header.tlvs == ((2, b"host"), (2, b"again"))
    assert header.tlv(2) == b"host"
    assert header.tlv(proxy.PP2_TYPE_ALPN) is None


def test_v2_crc32c(impl):
    data = with_crc(v2(inet4("192.0.2.1", "192.0.2.2", 1000, 2000)), tlv(1, b"http/1.1"))
    header = impl.parse(data)
    assert header.source == ("192.0.2.1", 1000)
    assert header.tlv(proxy.PP2_TYPE_CRC32C) == data[-4:]
    # A corrupted address, TLV value or checksum is caught (a corrupted TLV type or length
    # may turn the header into another valid or malformed one: the fuzz tests cover those).
    values = [*range(16, 28), *range(31, 39), *range(42, 46)]  # not the CRC TLV type at 39
    for i in values:
        broken = bytearray(data)
        broken[i] ^= 0x40
        with pytest.raises(ProxyError):
            impl.parse(bytes(broken))


def test_crc32c_check_value(impl):
    assert impl._crc32c(b"123456789") == 0xE3069283 == crc32c(b"123456789")
    assert impl._crc32c(b"") == 0


def test_local_ignores_the_block(impl):
    """LOCAL: the receiver must accept it and ignore the addresses, whatever the family."""
    for fam in (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32):
        for block in (b"", b"\x00" * 3, b"\xff" * 300):
            header = impl.parse(v2(block, command=0, fam=fam))
            assert header == H(2, "LOCAL", AF_UNSPEC, 0, None, None, 16 + len(block))


def test_unix_addresses(impl):
    full = b"/" + b"p" * 107
    header = impl.parse(v2(full + b"\x00abc".ljust(108, b"\x00"), fam=0x31))
    assert header.source == os.fsdecode(full)
    assert header.destination == b"\x00abc"
    header = impl.parse(v2(unix(b"", b"/tmp/x") + tlv(0xEE, b"v"), fam=0x31))
    assert header.source == "" and header.destination == "/tmp/x"
    assert header.tlvs == ((0xEE, b"v"),)


def test_v1_length_limits(impl):
    assert impl.parse(WORST_V1).length == 107
    # The CRLF must be within the first 107 bytes: a CR at the 107th byte is too late.
    late = b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n"
    assert len(late) == 108
    with pytest.raises(ProxyError, match="107"):
        impl.parse(late)
    with pytest.raises(ProxyError, match="107"):
        impl.parse(late[:107])
    assert impl.parse(late[:106]) is None


def test_max_length(impl):
    big = v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE1, b"z" * 5000))
    with pytest.raises(ProxyError, match="exceeds the limit of 4096"):
        impl.parse(big)
    with pytest.raises(ProxyError, match="exceeds the limit of 4096"):
        impl.parse(big[:16])  # known from the fixed part: no need to wait for the rest
    assert impl.parse(big, max_length=len(big)).length == len(big)
    assert impl.parse(big, proxy.MAX_LENGTH).tlv(0xE1) == b"z" * 5000
    with pytest.raises(ProxyError, match=f"exceeds the limit of {len(big) - 1}"):
        impl.parse(big, max_length=len(big) - 1)
    # The largest header there is.
    largest = v2(b"", fam=0x00, length=0xFFFF) + b"\x00" * 0xFFFF
    assert impl.parse(largest, proxy.MAX_LENGTH).length == proxy.MAX_LENGTH
    # max_length caps v1 lines too.
    tcp4 = line("PROXY TCP4 1.2.3.4 5.6.7.8 1 2")
    assert impl.parse(tcp4, max_length=len(tcp4)).length == len(tcp4)
    with pytest.raises(ProxyError, match=f"first {len(tcp4) - 1} bytes"):
        impl.parse(tcp4, max_length=len(tcp4) - 1)
    assert impl.parse(line("PROXY UNKNOWN"), max_length=16).length == 15
    assert impl.parse(v2(b"", command=0, fam=0), max_length=16).length == 16


@pytest.mark.parametrize("bad", [0, 15, proxy.MAX_LENGTH + 1, -1, 1 << 80])
def test_max_length_out_of_range(impl, bad):
    with pytest.raises(ValueError, match="max_length") as info:
        impl.parse(b"PROXY ", bad)
    assert not isinstance(info.value, ProxyError)


def test_max_length_must_be_an_integer(impl):
    with pytest.raises(TypeError):
        impl.parse(b"PROXY ", 100.0)


def test_bytes_like_input(impl):
    data = v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(1, b"h2"))
    expected = impl.parse(data)
    assert impl.parse(bytearray(data)) == expected
    assert impl.parse(memoryview(data)) == expected
    assert impl.parse(memoryview(b"xx" + data)[2:]) == expected
    import array
    assert impl.parse(array.array("B", data)) == expected
    assert impl.parse(b"") is None
    assert impl.parse(bytearray()) is None


@pytest.mark.parametrize("bad", ["PROXY UNKNOWN\r\n", 7, None,
                                 memoryview(b"PPRROOXXYY  ")[::2]])
def test_rejects_what_is_not_contiguous_bytes(impl, bad):
    with pytest.raises(TypeError):
        impl.parse(bad)


def test_one_error_class_and_one_header_class(both):
    compiled, pure = both
    assert compiled.ProxyError is pure.ProxyError is proxy.ProxyError
    assert compiled.ProxyHeader is pure.ProxyHeader is proxy.ProxyHeader
    assert issubclass(ProxyError, ValueError)


def test_header_is_immutable(impl):
    header = impl.parse(line("PROXY UNKNOWN"))
    with pytest.raises(AttributeError):
        header.source = ("1.2.3.4", 5)
    assert hash(header) == hash(impl.parse(line("PROXY UNKNOWN")))


def test_public_module_picks_an_implementation():
    expected = "python" if NO_EXTENSIONS or _compiled is None else "cython"
    assert proxy.IMPLEMENTATION == expected
    assert set(proxy.__all__) >= {"ProxyError", "ProxyHeader", "parse", "read_header"}


@pytest.mark.parametrize("core", ["cython", "python"])
def test_switching_the_core_switches_the_parser(core):
    import fastserver

    parser = _require_compiled() if core == "cython" else _proxy_py
    previous = fastserver.IMPLEMENTATION.split("-")[0]
    fastserver._use_core(core)
    try:
        assert proxy.IMPLEMENTATION == core
        assert fastserver._cores.active.parse_proxy is parser.parse
        assert proxy.parse(line("PROXY TCP4 1.2.3.4 5.6.7.8 9 10")).source == ("1.2.3.4", 9)
    finally:
        fastserver._use_core(previous)


# --- malformed headers ----------------------------------------------------------------------

@pytest.mark.parametrize(("data", "fragment"), MALFORMED, ids=MALFORMED_IDS)
def test_malformed(impl, data, fragment):
    with pytest.raises(ProxyError) as info:
        impl.parse(data)
    assert fragment in str(info.value)


def test_fails_as_soon_as_the_bytes_cannot_be_a_header(impl):
    for early in [b"G", b"P\r", b"PROXY X", b"PROXY TCP4 1.2.3.4 a", b"PROXY TCP6 ::1 g",
                  b"PROXY TCP4 1\n", b"PROXY UNKNOWN\n", b"PROXY UNKNOWNN", b"\r\n\r\n\x00\x00",
                  SIG + b"\x31", SIG + b"\x23", SIG + b"\x21\x14", SIG + b"\x21\x11\x00\x0b",
                  b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r"]:
        with pytest.raises(ProxyError):
            impl.parse(early)


def test_single_bytes(impl):
    for value in range(256):
        data = bytes([value])
        if data in (b"P", b"\r"):
            assert impl.parse(data) is None
        else:
            with pytest.raises(ProxyError, match="not a PROXY"):
                impl.parse(data)


def test_signature_checked_byte_by_byte(impl):
    good = v2(inet4("1.2.3.4", "5.6.7.8", 1, 2))
    for i in range(12):
        broken = bytearray(good)
        broken[i] ^= 0x01
        for cut in range(i + 1, len(good) + 1):
            with pytest.raises(ProxyError, match="not a PROXY"):
                impl.parse(bytes(broken[:cut]))


# --- both implementations agree --------------------------------------------------------------

def _agree(data, max_length=proxy.DEFAULT_MAX_LENGTH):
    """Both parsers' outcome on ``data``, checked equal and self-consistent (the pure parser's
    alone where the extension is deliberately absent)."""
    pure = outcome(_proxy_py, data, max_length)
    if _compiled is not None or not NO_EXTENSIONS:
        assert outcome(_require_compiled(), data, max_length) == pure, data
    kind, header = pure
    if kind == "ok" and header is not None:
        assert 0 < header.length <= min(len(data), max_length)
        assert _proxy_py.parse(data[:header.length], max_length) == header
        assert _proxy_py.parse(data[:header.length - 1], max_length) is None
    return pure


def test_agree_on_the_corpus(both):
    corpus = [data for data, _ in VALID] + [data for data, _ in MALFORMED]
    for data in corpus:
        for cut in range(len(data) + 1):
            _agree(data[:cut])
            _agree(data[:cut], 16)
            _agree(data[:cut], 40)
        _agree(data + b"\r\n\x00")


# Bounded, so that the suite stays fast (a few seconds for all of them); no example database in
# the source tree.
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# --- the address parsers against the C library (glibc's inet_pton) ------------------------

glibc_only = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's inet_pton is the oracle")


def _pton(family, text):
    try:
        return socket.inet_pton(family, text)
    except OSError:
        return None


@glibc_only
@FUZZ
@given(text=st.text(alphabet="0123456789.", min_size=1, max_size=20))
def test_ipv4_like_inet_pton(text):
    expected = _pton(AF_INET, text)
    assert _proxy_py._parse_ipv4(text.encode()) == expected
    data = line(f"PROXY TCP4 {text} 1.2.3.4 1 2")
    result = outcome(_proxy_py, data)
    if expected is None:
        assert result[0] == "error"
    else:
        assert result[1].source == (socket.inet_ntop(AF_INET, expected), 1)
    if _compiled is not None:
        assert outcome(_compiled, data) == result


@glibc_only
@FUZZ
@given(text=st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF:.", min_size=1, max_size=45),
    st.lists(st.text(alphabet="0f", max_size=5), min_size=1, max_size=10).map(":".join),
    st.ip_addresses(v=6).map(lambda a: a.exploded if int(a) & 1 else str(a)),
))
def test_ipv6_like_inet_pton(text):
    expected = _pton(AF_INET6, text)
    assert _proxy_py._parse_ipv6(text.encode()) == expected
    data = line(f"PROXY TCP6 ::1 {text} 1 2")
    result = outcome(_proxy_py, data)
    if expected is None:
        assert result[0] == "error"
    else:
        assert result[1].destination == (socket.inet_ntop(AF_INET6, expected), 2, 0, 0)
    if _compiled is not None:
        assert outcome(_compiled, data) == result


# --- fuzz: random input, mutated headers, generated headers ----------------------------------

PREFIXES = [b"", b"P", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", SIG,
            SIG + b"\x21", SIG + b"\x21\x11", SIG + b"\x20\x00", SIG + b"\x21\x21\x00"]
max_lengths = st.one_of(st.just(proxy.DEFAULT_MAX_LENGTH), st.integers(16, 400),
                        st.just(proxy.MAX_LENGTH))


@FUZZ
@given(prefix=st.sampled_from(PREFIXES),
       tail=st.one_of(st.binary(max_size=300),
                      st.text(alphabet="0123456789abcdefABCDEF:. \r\nTCPUNKOW", max_size=120)
                      .map(str.encode)),
       max_length=max_lengths)
def test_fuzz_random_input(prefix, tail, max_length):
    _agree(prefix + tail, max_length)


mutation = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "cut", "dup"]),
                     st.integers(0, 400), st.integers(0, 255))


def _mutate(data, steps):
    data = bytearray(data)
    for op, at, value in steps:
        at = at % (len(data) + 1)
        if op == "flip" and at < len(data):
            data[at] ^= 1 << (value % 8)
        elif op == "set" and at < len(data):
            data[at] = value
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "delete":
            del data[at:at + 1 + value % 3]
        elif op == "cut":
            del data[at:]
        elif op == "dup":
            data[at:at] = data[at:at + value % 16]
    return bytes(data)


@FUZZ
@given(base=st.sampled_from([data for data, _ in VALID]),
       steps=st.lists(mutation, min_size=1, max_size=4), max_length=max_lengths,
       payload=st.binary(max_size=20))
def test_fuzz_mutated_headers(base, steps, max_length, payload):
    _agree(_mutate(base, steps) + payload, max_length)


ports = st.integers(0, 65535)


def ntop(address):
    """The socket module's text for an ipaddress address (which writes mapped ones otherwise)."""
    return socket.inet_ntop(AF_INET if address.version == 4 else AF_INET6, address.packed)


@FUZZ
@given(v6=st.booleans(), a=st.ip_addresses(v=4), b=st.ip_addresses(v=4), c=st.ip_addresses(v=6),
       d=st.ip_addresses(v=6), sport=ports, dport=ports, explode=st.booleans())
def test_fuzz_generated_v1(v6, a, b, c, d, sport, dport, explode):
    src, dst = (c, d) if v6 else (a, b)

    def text(address):
        """The address as a proxy writes it, the same on every Python: not ipaddress's text,
        which from 3.13 writes IPv4-mapped addresses with a dotted quad (exploded, 45
        characters: the line would pass v1's 107 bytes)."""
        if explode and address.version == 6:  # eight groups of four hex digits
            return ":".join(address.packed[i:i + 2].hex() for i in range(0, 16, 2))
        return ntop(address)

    data = line(f"PROXY TCP{6 if v6 else 4} {text(src)} {text(dst)} {sport} {dport}")
    header = _agree(data)[1]
    if v6:
        expected = ((ntop(c), sport, 0, 0), (ntop(d), dport, 0, 0))
    else:
        expected = ((ntop(a), sport), (ntop(b), dport))
    assert (header.source, header.destination) == expected
    assert header.length == len(data)


tlv_lists = st.lists(st.tuples(st.integers(0, 255).filter(lambda k: k != 3),
                               st.binary(max_size=40)), max_size=5)


@FUZZ
@given(fam=st.sampled_from([0x11, 0x12, 0x21, 0x22, 0x31, 0x32]), data=st.data(),
       tlvs=tlv_lists, crc=st.booleans())
def test_fuzz_generated_v2(fam, data, tlvs, crc):
    family = {1: AF_INET, 2: AF_INET6, 3: AF_UNIX}[fam >> 4]
    protocol = STREAM if fam & 0x0F == 1 else DGRAM
    if family == AF_UNIX:
        paths = st.binary(min_size=1, max_size=107).map(lambda p: b"/" + p.replace(b"\0", b""))
        src, dst = data.draw(paths), data.draw(paths)
        block = unix(src[:108], dst[:108])
        expected = (os.fsdecode(src[:108]), os.fsdecode(dst[:108]))
    else:
        version = 4 if family == AF_INET else 6
        a, b = (data.draw(st.ip_addresses(v=version)) for _ in range(2))
        sport, dport = data.draw(ports), data.draw(ports)
        block = (a.packed + b.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))
        tail = (0, 0) if version == 6 else ()
        expected = ((ntop(a), sport, *tail), (ntop(b), dport, *tail))
    extra = b"".join(tlv(kind, value) for kind, value in tlvs)
    header_bytes = v2(block + extra, fam=fam)
    if crc:
        header_bytes = with_crc(header_bytes)
    header = _agree(header_bytes + b"payload", proxy.MAX_LENGTH)[1]
    assert (header.family, header.protocol) == (family, protocol)
    assert (header.source, header.destination) == expected
    assert header.length == len(header_bytes)
    assert header.tlvs[:len(tlvs)] == tuple(tlvs)
    assert len(header.tlvs) == len(tlvs) + crc


# --- read_header ----------------------------------------------------------------------------

@pytest.fixture
def reader(impl, monkeypatch):
    """proxy.read_header running on the parser under test."""
    monkeypatch.setattr(proxy, "parse", impl.parse)
    return proxy.read_header


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    client.settimeout(TIMEOUT)
    yield server, client
    server.close()
    client.close()


def _sender(sock, pieces, pause=0.01, close=False):
    def run():
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
            if close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


HEADERS = [VALID[0][0], VALID[2][0], VALID[7][0], WORST_V1, VALID[11][0], VALID[15][0],
           VALID[18][0], VALID[19][0], v2(b"", command=0, fam=0)]


@pytest.mark.parametrize("data", HEADERS, ids=range(len(HEADERS)))
def test_read_header_leaves_the_payload(reader, pair, data):
    server, client = pair
    payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256))
    client.sendall(data + payload)
    header = reader(server)
    assert header == _proxy_py.parse(data)
    server.settimeout(TIMEOUT)
    received = b""
    while len(received) < len(payload):
        received += server.recv(4096)
    assert received == payload


@pytest.mark.parametrize("data", HEADERS, ids=range(len(HEADERS)))
def test_read_header_split_across_sends(reader, pair, data):
    server, client = pair
    cuts = sorted({cut for cut in (0, 1, 5, 13, 17, len(data) - 1) if cut < len(data)})
    cuts.append(len(data))
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)] + [b"NEXT"]
    thread = _sender(client, pieces)
    header = reader(server, timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert header.length == len(data)
    server.settimeout(TIMEOUT)
    assert server.recv(100) == b"NEXT"


def test_read_header_byte_by_byte(reader, pair):
    server, client = pair
    data = VALID[0][0]
    thread = _sender(client, [data[i:i + 1] for i in range(len(data))] + [b"!"], pause=0.002)
    assert reader(server).source == ("192.168.0.1", 56324)
    thread.join(TIMEOUT)
    server.settimeout(TIMEOUT)
    assert server.recv(10) == b"!"


def test_read_header_over_tcp(reader):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as client:
            connection, _ = listener.accept()
            with connection:
                client.sendall(VALID[11][0] + b"hello")
                client.shutdown(socket.SHUT_WR)
                header = reader(connection)
                assert header.source == ("1.2.3.4", 80)
                assert connection.recv(100) == b"hello"
                assert connection.recv(100) == b""


def test_read_header_keeps_the_socket_mode(reader, pair):
    server, client = pair
    client.sendall(VALID[0][0] * 2)
    assert server.gettimeout() is None
    reader(server)
    assert server.gettimeout() is None and server.getblocking()
    server.settimeout(7.0)
    reader(server)
    assert server.gettimeout() == 7.0


def test_read_header_timeout(reader, pair):
    server, client = pair
    client.sendall(VALID[0][0][:10])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader(server, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2.0


def test_read_header_timeout_is_for_the_whole_header(reader, pair):
    """A peer trickling one byte at a time does not get a fresh timeout for each."""
    server, client = pair
    _sender(client, [bytes([c]) for c in b"PROXY UNKNOWN"], pause=0.08)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader(server, timeout=0.3)
    assert time.monotonic() - started < 0.6


def test_read_header_timeout_on_a_socket_with_its_own_timeout(reader, pair):
    server, client = pair
    server.settimeout(30.0)
    client.sendall(b"PROXY ")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader(server, timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert server.gettimeout() == 30.0


def test_read_header_zero_timeout(reader, pair):
    server, client = pair
    with pytest.raises(TimeoutError):
        reader(server, timeout=0)
    client.sendall(VALID[7][0])
    time.sleep(0.05)
    assert reader(server, timeout=0).family == AF_UNSPEC


@pytest.mark.parametrize("sent", [b"", b"PROXY TCP4 1.2.3", SIG + b"\x21\x11\x00\x0c\x01"])
def test_read_header_early_close(reader, pair, sent):
    server, client = pair
    client.sendall(sent)
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(ProxyError, match="connection closed before the PROXY header"):
        reader(server)


def test_read_header_malformed(reader, pair):
    server, client = pair
    _sender(client, [b"GET / HTTP/1.0\r\n\r\n"])  # and the peer keeps the connection open
    started = time.monotonic()
    with pytest.raises(ProxyError, match="not a PROXY"):
        reader(server)
    assert time.monotonic() - started < 1.0


def test_read_header_oversized(reader, pair):
    server, client = pair
    client.sendall(v2(b"", length=5000))  # only the fixed part: the length is enough to refuse
    with pytest.raises(ProxyError, match="exceeds the limit of 4096"):
        reader(server)
    server2, client2 = socket.socketpair()
    with server2, client2:
        big = v2(inet4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE0, b"v" * 20000))
        _sender(client2, [big[:3000], big[3000:] + b"after"])
        header = reader(server2, max_length=proxy.MAX_LENGTH)
        assert header.tlv(0xE0) == b"v" * 20000
        server2.settimeout(TIMEOUT)
        assert server2.recv(100) == b"after"


def test_read_header_v1_without_crlf(reader, pair):
    server, client = pair
    client.sendall(b"PROXY UNKNOWN " + b"x" * 200)
    with pytest.raises(ProxyError, match="107"):
        reader(server)


def test_read_header_reset(reader):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        connection, _ = listener.accept()
        with connection:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sendall(b"PROXY TCP4 ")
            client.close()  # linger 0: a reset
            with pytest.raises((ConnectionError, ProxyError)):
                reader(connection)


def test_read_header_bad_max_length(reader, pair):
    server, client = pair
    client.sendall(VALID[0][0])
    with pytest.raises(ValueError, match="max_length"):
        reader(server, max_length=8)
    assert reader(server).length == len(VALID[0][0])  # nothing was read
