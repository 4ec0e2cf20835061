# Types of fastserver: the standard library's socketserver names, and fastserver's own.
import sys

from .handlers import BaseRequestHandler as BaseRequestHandler
from .handlers import DatagramRequestHandler as DatagramRequestHandler
from .handlers import StreamRequestHandler as StreamRequestHandler
from .mixins import ThreadingMixIn as ThreadingMixIn
from .servers import BaseServer as BaseServer
from .servers import TCPServer as TCPServer
from .servers import UDPServer as UDPServer

if sys.platform != "win32":
    from .mixins import ForkingMixIn as ForkingMixIn
    from .servers import UnixDatagramServer as UnixDatagramServer
    from .servers import UnixStreamServer as UnixStreamServer

__all__ = ["BaseServer", "TCPServer", "UDPServer",
           "ThreadingUDPServer", "ThreadingTCPServer",
           "BaseRequestHandler", "StreamRequestHandler",
           "DatagramRequestHandler", "ThreadingMixIn"]
if sys.platform != "win32":
    __all__ += ["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"]
    __all__ += ["UnixStreamServer", "UnixDatagramServer",
                "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer"]
    __all__ += ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"]

IMPLEMENTATION: str
VERSION: str

def install() -> None: ...

class ThreadingUDPServer(ThreadingMixIn, UDPServer): ...
class ThreadingTCPServer(ThreadingMixIn, TCPServer): ...

if sys.platform != "win32":
    class ForkingUDPServer(ForkingMixIn, UDPServer): ...
    class ForkingTCPServer(ForkingMixIn, TCPServer): ...
    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer): ...
    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer): ...
    class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer): ...
    class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer): ...
